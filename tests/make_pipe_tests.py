"""Writes tests/get_events.yaml, tests/user_activity.yaml and tests/event_stats.yaml: Tinybird's
`tb test` files for the three endpoints over fixtures/events.ndjson, with every expected row
computed by tests/reference.py (plain Python over the fixture), never by the SQL under test.

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

# (pipe, name, description, parameters, reference call or an HTTP status for a refused call)
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
     {"start_date": "2023-07-01"}, 400),
    ("user_activity", "user_abc_2023", "The description's call: one user over 2023",
     {"user_id": "user_abc", **YEAR}, lambda rows: reference.user_activity(rows, "user_abc", **YEAR)),
    ("user_activity", "user_abc_july", "One user over July",
     {"user_id": "user_abc", **JULY}, lambda rows: reference.user_activity(rows, "user_abc", **JULY)),
    ("user_activity", "unknown_user", "A user with no events: no rows",
     {"user_id": "nobody"}, lambda rows: []),
    ("user_activity", "user_id_required", "user_id is required",
     {}, 400),
    ("event_stats", "june_mobile", "The description's call: June on mobile",
     {**JUNE, "platform": "mobile"}, lambda rows: reference.event_stats(rows, platform="mobile", **JUNE)),
    ("event_stats", "everything", "Every event type over the whole fixture",
     {}, lambda rows: reference.event_stats(rows)),
    ("event_stats", "purchases_in_july", "One event type over July",
     {"event_type": "purchase", **JULY}, lambda rows: reference.event_stats(rows, event_type="purchase", **JULY)),
]


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None))


def documents() -> dict[str, str]:
    rows = reference.load(FIXTURE)
    files: dict[str, list] = {}
    for pipe, name, description, params, expected in CASES:
        case = {"name": name, "description": description, "parameters": urlencode(params)}
        if isinstance(expected, int):
            case.update(expected_result="", expected_http_status=expected)
        else:
            case["expected_result"] = "".join(json.dumps(r) + "\n" for r in expected(rows))
        files.setdefault(pipe, []).append(case)
    return {pipe: yaml.dump(cases, Dumper=_Dumper, sort_keys=False, width=1 << 16) for pipe, cases in files.items()}


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
