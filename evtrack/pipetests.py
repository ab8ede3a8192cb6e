"""Tinybird's pipe test files (``tests/<pipe>.yaml``, the format of ``tb test``), run locally.

Each file is a list of cases::

    - name: domains_tenant_1
      description: ...
      parameters: tenant_id=tenant_1          # a query string; an empty value is an empty string
      expected_result: |                       # NDJSON lines, or '' for no rows
        {"domain":"test.org","total_hits":200}
      expected_http_status: 200                # optional

A case calls ``/v0/pipes/<pipe>.ndjson?<parameters>``, the same path as any HTTP client, and
passes as in Tinybird's ``tb test run``: the status is the expected one and ``expected_result`` is
the response text exactly (ClickHouse's compact NDJSON, ``{"a":1,"b":"x"}``), or for an error the
JSON ``error`` field. ``loose`` compares rows instead: each line as JSON (so spacing, key order of
the text, ``\\/`` and ``/`` do not matter, row order does), and an error by its status only.

By default the cases run against a fresh temporary embedded store: the project is deployed into
it and ``fixtures/<datasource>.ndjson`` (or ``.csv``) is loaded into each datasource that has one,
through the same ingest as ``evtrack send``, so materialized pipes fill their targets.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadRequest

__all__ = ["Case", "Outcome", "load_cases", "run_cases", "embedded_caller", "host_caller", "update_file", "dump_cases"]


@dataclass
class Case:
    pipe: str
    name: str
    description: str
    parameters: str
    expected_result: str
    expected_http_status: int = 200
    raw: dict = field(default_factory=dict)


@dataclass
class Outcome:
    case: Case
    passed: bool
    status: int
    body: str
    diff: list[str] = field(default_factory=list)


def test_files(project: Path, pipes: tuple[str, ...] = ()) -> list[Path]:
    folder = Path(project) / "tests"
    if pipes:
        missing = [p for p in pipes if not (folder / f"{p}.yaml").exists()]
        if missing:
            raise BadRequest(f"no test file for {', '.join(missing)} (expected {folder}/<pipe>.yaml)")
        return [folder / f"{p}.yaml" for p in pipes]
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def load_cases(path: Path) -> list[Case]:
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except yaml.YAMLError as exc:
        raise BadRequest(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, list):
        raise BadRequest(f"{path}: expected a list of test cases")
    cases = []
    for i, item in enumerate(document):
        if not isinstance(item, dict) or not item.get("name"):
            raise BadRequest(f"{path}: case {i + 1} needs a 'name'")
        status = item.get("expected_http_status") or 200
        if not isinstance(status, int):
            raise BadRequest(f"{path}: case '{item['name']}': expected_http_status must be an integer")
        cases.append(Case(
            pipe=path.stem,
            name=str(item["name"]),
            description=str(item.get("description") or ""),
            parameters=str(item.get("parameters") or ""),
            expected_result=str(item.get("expected_result") or ""),
            expected_http_status=status,
            raw=item,
        ))
    return cases


def _rows(text: str) -> list:
    rows = []
    for line in text.splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                rows.append(line)  # compared as text: the diff shows it
    return rows


def _lines(rows: list) -> list[str]:
    return [json.dumps(r, ensure_ascii=False) if not isinstance(r, str) else r for r in rows]


def check(case: Case, status: int, body: str, loose: bool = False) -> Outcome:
    if status != case.expected_http_status:
        return Outcome(case, False, status, body,
                       [f"HTTP status {status}, expected {case.expected_http_status}", *body.strip().splitlines()[:5]])
    if loose:
        return _check_rows(case, status, body)
    actual = _error(body) if status >= 400 else body
    if actual == case.expected_result:
        return Outcome(case, True, status, body)
    diff = list(difflib.unified_diff(case.expected_result.splitlines(), actual.splitlines(), "expected", "actual",
                                     lineterm="", n=1))
    return Outcome(case, False, status, body, diff or [f"expected {case.expected_result!r}", f"actual   {actual!r}"])


def _error(body: str) -> str:
    """The ``error`` field of an error answer, which ``tb test run`` compares."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body


def _check_rows(case: Case, status: int, body: str) -> Outcome:
    if status != 200:
        return Outcome(case, True, status, body)
    expected, actual = _rows(case.expected_result), _rows(body)
    if expected == actual:
        return Outcome(case, True, status, body)
    diff = list(difflib.unified_diff(_lines(expected), _lines(actual), "expected", "actual", lineterm="", n=1))
    return Outcome(case, False, status, body, diff)


def run_cases(cases: list[Case], call, loose: bool = False) -> list[Outcome]:
    """``call(pipe, query_string)`` answers (status, body text) for ``/v0/pipes/<pipe>.ndjson``."""
    return [check(case, *call(case.pipe, case.parameters), loose=loose) for case in cases]


@contextlib.contextmanager
def embedded_caller(project: Path):
    """A fresh temporary store with the project deployed and its fixtures loaded; calls go through
    evtrack serve's own application (in process, no socket)."""
    import warnings

    with warnings.catch_warnings():  # starlette suggests another HTTP library for its test client; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from .engine import Engine
    from .project import load_project
    from .server.app import create_app

    loaded = load_project(project)
    with tempfile.TemporaryDirectory(prefix="evtrack-test-") as folder, Engine.open(Path(folder)) as engine:
        engine.deploy(loaded)
        for name in loaded.datasources:
            load_fixture(engine, Path(project) / "fixtures", name)
        auth = {"Authorization": f"Bearer {engine.tokens.admin.token}"}
        with TestClient(create_app(engine), raise_server_exceptions=False) as client:
            def call(pipe: str, query: str) -> tuple[int, str]:
                response = client.get(f"/v0/pipes/{pipe}.ndjson" + (f"?{query}" if query else ""), headers=auth)
                return response.status_code, response.text
            yield call


def load_fixture(engine, folder: Path, datasource: str) -> None:
    """``fixtures/<datasource>.ndjson`` or ``.csv``, through the datasource's ingest; every line must be stored."""
    ndjson, csv = folder / f"{datasource}.ndjson", folder / f"{datasource}.csv"
    if ndjson.exists():
        result = engine.append(datasource, ndjson)
    elif csv.exists():
        result = engine.append(datasource, csv)  # ClickHouse reads it, as any CSV append
    else:
        return
    if result.quarantined_rows:
        raise BadRequest(f"{ndjson if ndjson.exists() else csv}: {result.quarantined_rows} rows quarantined, "
                         f"first: {'; '.join(result.errors[:1])}")


@contextlib.contextmanager
def host_caller(host: str, token: str):
    """Cases against a host whose data is already loaded."""
    import httpx

    with httpx.Client(base_url=host.rstrip("/"), timeout=60.0, headers={"Authorization": f"Bearer {token}"}) as http:
        def call(pipe: str, query: str) -> tuple[int, str]:
            try:
                response = http.get(f"/v0/pipes/{pipe}.ndjson" + (f"?{query}" if query else ""))
            except httpx.HTTPError as exc:
                raise BadRequest(f"cannot reach {host}: {exc}") from None
            return response.status_code, response.text
        yield call


def update_file(path: Path, outcomes: list[Outcome]) -> None:
    """Rewrite the expected results (and statuses) of a test file with what the pipes answered, as
    Forward's ``tb test update`` writes them (``tinybird/tb/modules/test_common.py``): the response
    text, or an error's ``error`` with its status; ``yaml.safe_dump`` with multi-line strings as
    ``|`` blocks, a blank line before each case."""
    cases = []
    for outcome in outcomes:
        item = dict(outcome.case.raw)
        if outcome.status >= 400:
            item["expected_http_status"] = outcome.status
            item["expected_result"] = _error(outcome.body)
        else:
            item.pop("expected_http_status", None)
            item["expected_result"] = outcome.body
        cases.append(item)
    path.write_text(dump_cases(cases), encoding="utf-8")


def dump_cases(cases: list[dict]) -> str:
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _text(dumper, value: str):
        if "\n" in value:
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
        return yaml.SafeDumper.represent_str(dumper, value)

    _Dumper.add_representer(str, _text)
    return yaml.dump(cases, Dumper=_Dumper, sort_keys=False).replace("- name:", "\n- name:")
