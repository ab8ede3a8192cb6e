"""Writes tests/get_events.yaml, tests/user_activity.yaml and tests/event_stats.yaml: Tinybird's
`tb test` files for the three endpoints over fixtures/events.ndjson, with every expected row
computed by tests/reference.py (plain Python over the fixture), never by the SQL under test.

They are written byte for byte as Forward's `tb test update` writes them, since `tb test run`
compares `expected_result` with the response text exactly: each row as ClickHouse's compact
NDJSON (`{"a":1,"b":"x"}`, UTF-8, `/` escaped as `\\/`, the pipe's column order), a refused call
as its JSON `error` with `expected_http_status`; the YAML as `yaml.safe_dump(cases,
sort_keys=False)` with multi-line strings as `|` blocks, then a blank line before each
`- name:` (tinybird/tb/modules/test_common.py, `generate_test_file`).

    python tests/make_pipe_tests.py          # rewrite the files
    python tests/make_pipe_tests.py --check  # exit 1 if they differ from what the reference gives
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import urlencode

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests import reference  # noqa: E402

FIXTURE = HERE.parent / "fixtures" / "events.ndjson"
JULY = {"start_date": "2023-07-01 00:00:00", "end_date": "2023-07-31 23:59:59"}
YEAR = {"start_date": "2023-01-01 00:00:00", "end_date": "2023-12-31 23:59:59"}
JUNE = {"start_date": "2023-06-01 00:00:00", "end_date": "2023-06-30 23:59:59"}

# The order of the columns an endpoint's SELECT names, where the reference's rows have another.
COLUMNS = {"get_events": ("event_id", "event_type", "user_id", "session_id", "timestamp", "platform", "app_version",
                          "device_type", "os", "country", "properties")}

# (pipe, name, description, parameters, reference call or (HTTP status, error) for a refused call)
CASES = [
    ("get_events", "july_web_page_views", "The description's call: July page views on web, 50 newest",
     {"event_type": "page_view", "platform": "web", **JULY, "limit": 50},
     lambda rows: reference.get_events(rows, event_type="page_view", platform="web", **JULY, limit=50)),
    ("get_events", "user_abc_second_page", "One user's events, 5 per page, the second page",
     {"user_id": "user_abc", "limit": 5, "offset": 5},
     lambda rows: reference.get_events(rows, user_id="user_abc", limit=5, offset=5)),
    ("get_events", "unknown_event_type", "No event of that type: no rows",
     {"event_type": "no_such_type"}, lambda rows: []),
    ("get_events", "malformed_start_date", "A date without a time is refused",
     {"start_date": "2023-07-01"}, (400, "Template Syntax Error: Error validating '2023-07-01' to type DateTime")),
    ("user_activity", "user_abc_2023", "The description's call: one user over 2023",
     {"user_id": "user_abc", **YEAR}, lambda rows: reference.user_activity(rows, "user_abc", **YEAR)),
    ("user_activity", "user_abc_july", "One user over July",
     {"user_id": "user_abc", **JULY}, lambda rows: reference.user_activity(rows, "user_abc", **JULY)),
    ("user_activity", "unknown_user", "A user with no events: no rows",
     {"user_id": "nobody"}, lambda rows: []),
    ("user_activity", "user_id_required", "user_id is required",
     {}, (400, "user_id (String) query param is required")),  # the pipe's own error()
    ("event_stats", "june_mobile", "The description's call: June on mobile",
     {**JUNE, "platform": "mobile"}, lambda rows: reference.event_stats(rows, platform="mobile", **JUNE)),
    ("event_stats", "everything", "Every event type over the whole fixture",
     {}, lambda rows: reference.event_stats(rows)),
    ("event_stats", "purchases_in_july", "One event type over July",
     {"event_type": "purchase", **JULY}, lambda rows: reference.event_stats(rows, event_type="purchase", **JULY)),
]


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper, value: str):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return yaml.SafeDumper.represent_str(dumper, value)


_Dumper.add_representer(str, _text)


def ndjson_line(row: dict) -> str:
    """A row as ClickHouse's JSONEachRow writes it: no spaces, UTF-8, every `/` escaped."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/") + "\n"


def documents() -> dict[str, str]:
    rows = reference.load(FIXTURE)
    files: dict[str, list] = {}
    for pipe, name, description, params, expected in CASES:
        case = {"name": name, "description": description, "parameters": urlencode(params)}
        if isinstance(expected, tuple):
            case.update(expected_result=expected[1], expected_http_status=expected[0])
        else:
            order = COLUMNS.get(pipe)
            found = [{k: r[k] for k in order} if order else r for r in expected(rows)]
            case["expected_result"] = "".join(ndjson_line(r) for r in found)
        files.setdefault(pipe, []).append(case)
    return {pipe: yaml.dump(cases, Dumper=_Dumper, sort_keys=False).replace("- name:", "\n- name:")
            for pipe, cases in files.items()}


def main() -> int:
    stale = []
    for pipe, text in documents().items():
        path = HERE / f"{pipe}.yaml"
        if "--check" in sys.argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python tests/make_pipe_tests.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
