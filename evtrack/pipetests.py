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

Classic test files run too: ``tests/<name>.test`` holds one ``tb pipe data <pipe> --<param> <value>
... --format CSV`` line and ``tests/<name>.test.result`` what it prints, Tinybird's CSV with a header
(``CSVWithNames``), compared as Classic projects compare them (``diff -B``: blank lines aside).

By default the cases run against a fresh temporary embedded store: the project is deployed into
it and ``fixtures/<datasource>.ndjson`` (or ``.csv``; Classic projects: ``datasources/fixtures/``)
is loaded into each datasource that has one, through the same ingest as ``evtrack send``, so
materialized pipes fill their targets. A failing case whose rows are all there in another order
says so: only an ``ORDER BY`` defines the order.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

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
    format: str = "ndjson"  # "csv": a Classic .test file, compared as `diff -B` compares its output


@dataclass
class Outcome:
    case: Case
    passed: bool
    status: int
    body: str
    diff: list[str] = field(default_factory=list)


def test_files(project: Path, pipes: tuple[str, ...] = ()) -> list[Path]:
    """``tests/<pipe>.yaml`` (Forward's ``tb test``), then Classic ``tests/*.test`` files."""
    folder = Path(project) / "tests"
    if pipes:
        missing = [p for p in pipes if not (folder / f"{p}.yaml").exists()]
        if missing:
            raise BadRequest(f"no test file for {', '.join(missing)} (expected {folder}/<pipe>.yaml)")
        return [folder / f"{p}.yaml" for p in pipes]
    return [*sorted(folder.glob("*.yaml")), *sorted(folder.glob("*.test"))] if folder.is_dir() else []


_CLASSIC = "a `tb pipe data <pipe> --<param> <value> ... --format CSV` line"


def _classic_case(path: Path) -> Case:
    """A Classic test: one ``tb pipe data`` command, its expected output in ``<file>.result``."""
    line = path.read_text(encoding="utf-8").strip()
    try:
        words = shlex.split(line)
    except ValueError:
        words = []
    options = words[4:]
    if words[:3] != ["tb", "pipe", "data"] or len(words) < 4 or len(options) % 2:
        raise BadRequest(f"{path}: expected {_CLASSIC}")
    params = {options[i][2:]: options[i + 1] for i in range(0, len(options), 2) if options[i].startswith("--")}
    fmt = params.pop("format", "").lower()
    if fmt != "csv":
        raise BadRequest(f"{path}: expected {_CLASSIC}: only CSV output can be compared (JSON carries timings)")
    result = path.with_name(path.name + ".result")
    if not result.exists():
        raise BadRequest(f"{path}: no {result.name} beside it")
    return Case(pipe=words[3], name=path.stem, description=line, parameters=urlencode(params),
                expected_result=result.read_text(encoding="utf-8"), format="csv")


def load_cases(path: Path) -> list[Case]:
    import yaml

    if path.suffix == ".test":
        return [_classic_case(path)]
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except yaml.YAMLError as exc:
        raise BadRequest(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, list):
        raise BadRequest(f"{path}: expected a list of test cases")
    cases = []
    for i, item in enumerate(document):
        classic = _classic_query(item)
        if classic is not None:
            cases.append(Case(pipe=path.stem, name=classic[0], description="", parameters=classic[1], expected_result="",
                              raw=item, format="sql"))
            continue
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


def _classic_query(item) -> tuple[str, str] | None:
    """(name, SQL) of a Classic ``tb test`` case (``- name: {sql: ..., max_time: ...}``), which passes
    when its query over the pipes returns no rows; None for anything else."""
    if isinstance(item, dict) and len(item) == 1:
        (name, body), = item.items()
        if isinstance(body, dict) and isinstance(body.get("sql"), str):
            return str(name), body["sql"]
    return None


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
    expected = case.expected_result
    if case.format == "csv":  # the CLI prints the answer and a newline; `diff -B` skips blank lines
        expected, actual = _unblank(expected), _unblank(actual)
    if actual == expected:
        return Outcome(case, True, status, body)
    diff = list(difflib.unified_diff(expected.splitlines(), actual.splitlines(), "expected", "actual",
                                     lineterm="", n=1))
    if status < 400 and sorted(expected.splitlines()) == sorted(actual.splitlines()):
        diff.insert(0, "the same rows in another order: only an ORDER BY in the pipe's last node defines the order "
                       "(without one, ClickHouse returns rows in any order, and may differ between calls)")
    return Outcome(case, False, status, body, diff or [f"expected {case.expected_result!r}", f"actual   {actual!r}"])


def _unblank(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if line.strip())


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
    """``call(pipe, query_string, format)`` answers (status, body text) for ``/v0/pipes/<pipe>.<format>``."""
    return [check(case, *call(case.pipe, case.parameters, case.format), loose=loose) for case in cases]


def _request(pipe: str, query: str, fmt: str) -> tuple[str, dict | None]:
    """(path, params) of a case's call: the pipe's endpoint, or for a Classic query ``/v0/sql``."""
    if fmt == "sql":
        return "/v0/sql", {"q": f"{query.strip()}\nFORMAT JSONEachRow"}
    return f"/v0/pipes/{pipe}.{fmt}" + (f"?{query}" if query else ""), None  # the query string as written


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
        fixtures = Path(project) / "fixtures"
        if not fixtures.is_dir():
            fixtures = Path(project) / "datasources" / "fixtures"  # where Classic projects keep them
        for name in loaded.datasources:
            load_fixture(engine, fixtures, name)
        auth = {"Authorization": f"Bearer {engine.tokens.admin.token}"}
        with TestClient(create_app(engine), raise_server_exceptions=False) as client:
            def call(pipe: str, query: str, fmt: str = "ndjson") -> tuple[int, str]:
                path, params = _request(pipe, query, fmt)
                response = client.get(path, params=params, headers=auth)
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
    expired = _expired(engine, datasource, result.successful_rows)
    if expired:
        import click

        click.echo(f"note: {ndjson if ndjson.exists() else csv}: {expired} of {result.successful_rows} rows are past "
                   f"the datasource's ENGINE_TTL, so they expire as on Tinybird; cases that expect them will fail "
                   "(move the fixture's dates, or the TTL)", err=True)


def _expired(engine, datasource: str, stored: int) -> int:
    """How many of a fixture's rows the datasource's TTL has dropped or will drop now."""
    ttl = dict(engine.datasource(datasource).engine_settings).get("engine_ttl", "")
    expression = re.split(r"\s+(DELETE|TO\s+(DISK|VOLUME))\b", ttl, maxsplit=1, flags=re.IGNORECASE)[0].strip()
    if not expression or stored == 0:
        return 0
    table = f"`{engine.database}`.`{datasource}`"
    counted = engine.store.run(f"SELECT count(), countIf(({expression}) < now()) FROM {table}", "TSV").decode().split()
    return stored - int(counted[0]) + int(counted[1])


@contextlib.contextmanager
def host_caller(host: str, token: str):
    """Cases against a host whose data is already loaded."""
    import httpx

    with httpx.Client(base_url=host.rstrip("/"), timeout=60.0, headers={"Authorization": f"Bearer {token}"}) as http:
        def call(pipe: str, query: str, fmt: str = "ndjson") -> tuple[int, str]:
            try:
                path, params = _request(pipe, query, fmt)
                response = http.get(path, params=params)
            except httpx.HTTPError as exc:
                raise BadRequest(f"cannot reach {host}: {exc}") from None
            return response.status_code, response.text
        yield call


def update_file(path: Path, outcomes: list[Outcome]) -> None:
    """Rewrite the expected results (and statuses) of a test file with what the pipes answered, as
    Forward's ``tb test update`` writes them (``tinybird/tb/modules/test_common.py``): the response
    text, or an error's ``error`` with its status; ``yaml.safe_dump`` with multi-line strings as
    ``|`` blocks, a blank line before each case."""
    if path.suffix == ".test":  # a Classic test: its output, as the CLI prints it
        (outcome,) = outcomes
        path.with_name(path.name + ".result").write_text(_unblank(outcome.body), encoding="utf-8")
        return
    cases = []
    for outcome in outcomes:
        if outcome.case.format == "sql":  # a Classic query case: it has no expected result to write
            cases.append(outcome.case.raw)
            continue
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
