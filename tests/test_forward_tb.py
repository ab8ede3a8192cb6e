"""The unmodified Forward `tb` (PyPI `tinybird` 5.x, in a venv of its own) against a real `evtrack
serve` on loopback: build with fixtures, appends (NDJSON and CSV), reads, deploy, test run.

Expected values are counted by hand over the four fixture events below; the CLI's own lines
(`✓ ... created`, `✓ N/N passed`, ...) are the ones its source prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import ROOT
from .served import Served, clean_env

TB_SPEC = "tinybird>=5,<6"
UNREACHABLE = ("No matching distribution", "Could not find a version", "NewConnectionError", "Temporary failure in name "
               "resolution", "Network is unreachable", "Max retries exceeded")
STEP_TIMEOUT = 120

EVENTS = """\
{"event_id":"a1","event_type":"click","user_id":"u1","session_id":"s1","timestamp":"2024-03-01 10:00:00","platform":"web"}
{"event_id":"a2","event_type":"click","user_id":"u2","session_id":"s2","timestamp":"2024-03-01 11:00:00","platform":"mobile"}
{"event_id":"a3","event_type":"purchase","user_id":"u1","session_id":"s1","timestamp":"2024-03-02 09:30:00","platform":"web"}
{"event_id":"a4","event_type":"click","user_id":"u1","session_id":"s3","timestamp":"2024-03-03 08:00:00","platform":"web"}
"""
# By hand: clicks a1, a2, a4 (users u1, u2; sessions s1, s2, s3), one purchase a3.
ALL = ('{"event_type":"click","event_count":3,"unique_users":2,"session_count":3,'
       '"first_seen":"2024-03-01 10:00:00","last_seen":"2024-03-03 08:00:00"}\n'
       '{"event_type":"purchase","event_count":1,"unique_users":1,"session_count":1,'
       '"first_seen":"2024-03-02 09:30:00","last_seen":"2024-03-02 09:30:00"}\n')
MOBILE = ('{"event_type":"click","event_count":1,"unique_users":1,"session_count":1,'
          '"first_seen":"2024-03-01 11:00:00","last_seen":"2024-03-01 11:00:00"}\n')
TESTS = f"""\
- name: everything
  description: Both event types of the fixture
  parameters: ''
  expected_result: |
{''.join('    ' + line + chr(10) for line in ALL.splitlines())}\
- name: mobile_only
  description: The one mobile click
  parameters: platform=mobile
  expected_result: |
{''.join('    ' + line + chr(10) for line in MOBILE.splitlines())}\
- name: bad_date
  description: A start date that is no date
  parameters: start_date=yesterday
  expected_result: 'Template Syntax Error: Error validating ''yesterday'' to type DateTime'
  expected_http_status: 400
"""
# Two more events, as CSV with a header, in another column order, a column left out.
MORE_CSV = """\
timestamp,event_type,user_id,event_id
2024-03-04 12:00:00,purchase,u2,b1
2024-03-04 13:00:00,click,u3,b2
"""


@pytest.fixture(scope="session")
def tb_forward() -> Path:
    """`tb` from PyPI in a venv of its own: `tinybird` and the tinybird-cli evtrack uses install the same
    package. The venv is kept between runs, as pip keeps its downloads, in ~/.cache/evtrack-tests (or
    $XDG_CACHE_HOME's): remove it to take the newest release of TB_SPEC."""
    venv = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evtrack-tests" / (
        "tb-forward-" + "".join(c if c.isalnum() else "_" for c in TB_SPEC))
    tb = venv / "bin" / "tb"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".lock", "w") as lock:  # one worker makes it; another waits and takes it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / "installed").exists() and tb.exists():
            return tb
        shutil.rmtree(venv, ignore_errors=True)  # an install that did not finish
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", TB_SPEC],
                             capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            if any(marker in pip.stdout + pip.stderr for marker in UNREACHABLE):
                pytest.skip(f"PyPI cannot be reached to install {TB_SPEC}: "
                            f"{(pip.stderr or pip.stdout).strip().splitlines()[-1]}")
            raise AssertionError(pip.stdout + pip.stderr)
        (venv / "installed").write_text(TB_SPEC)
    return tb


@pytest.fixture
def forward_project(tmp_path) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(ROOT / "datasources", folder / "datasources")
    shutil.copytree(ROOT / "pipes", folder / "pipes")
    (folder / "fixtures").mkdir()
    (folder / "fixtures" / "events.ndjson").write_text(EVENTS)
    (folder / "tests").mkdir()
    (folder / "tests" / "event_stats.yaml").write_text(TESTS)
    (folder / "more.csv").write_text(MORE_CSV)
    (folder / ".env").write_text("SOME_SECRET=abc\n")
    return folder


def _env(server: Served, home: Path) -> dict[str, str]:
    return clean_env(TB_LOCAL_PORT=server.url.rsplit(":", 1)[1].rstrip("/"), CI="1", HOME=str(home))


def _forward_workspace(server: Served) -> str:
    """The token of the one workspace the tool created (beside the default one)."""
    listed = httpx.get(f"{server.url}/v1/user/workspaces", params={"token": server.admin}).json()["workspaces"]
    (created,) = [w for w in listed if w["id"] != listed[0]["id"]]
    return created["token"]


def _runner(tb: Path, server: Served, project: Path, home: Path):
    env = _env(server, home)

    def run(*args: str) -> str:
        done = subprocess.run([str(tb), *args], cwd=project, env=env, capture_output=True, text=True,
                              timeout=STEP_TIMEOUT)
        assert done.returncode == 0, f"tb {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    return run


def test_forward_tb_builds_appends_reads_deploys_and_tests(tb_forward, forward_project, tmp_path):
    server = Served(tmp_path / "store")
    try:
        tb = _runner(tb_forward, server, forward_project, tmp_path)
        built = tb("build").splitlines()
        for line in ("✓ datasources/events.datasource created", "✓ datasources/events_by_user.datasource created",
                     "✓ pipes/event_stats.pipe created", "✓ pipes/events_by_user_mv.pipe created"):
            assert line in built
        assert "No changes. Build skipped." in tb("build").splitlines()
        assert [line.strip() for line in tb("sql", "SELECT count() AS n FROM events").splitlines()[-1:]] == ["4"]

        tb("datasource", "append", "events", "--file", "more.csv")
        assert tb("sql", "SELECT count() AS n FROM events").splitlines()[-1].strip() == "6"
        jobs = tb("job", "ls").splitlines()  # the fixture's append, then the CSV's
        assert [line for line in jobs if line.startswith(("kind: ", "status: "))] == [
            "kind: import", "status: done", "kind: import", "status: done"]
        by_user = tb("sql", "SELECT count() AS n FROM events_by_user WHERE user_id = 'u3'").splitlines()[-1].strip()
        assert by_user == "1"  # the materialized view took the CSV rows too

        data = json.loads(tb("endpoint", "data", "event_stats", "--platform", "mobile", "--format", "json"))
        assert data["data"] == [json.loads(MOBILE)]
        for _ in range(30):  # the server writes the calls it keeps each second
            logged = _cells(tb("logs", "--source", "tinybird.pipe_stats_rt").splitlines())[1:]
            if logged:
                break
        assert [(row[1], row[2], row[3], row[4]) for row in logged] == [
            ("tinybird.pipe_stats_rt", "GET", "event_stats", "200")]
        listed = tb("endpoint", "ls")
        port = server.url.rsplit(":", 1)[1].rstrip("/")
        assert f"url: http://localhost:{port}/v0/pipes/event_stats.json?token=" in listed  # the CLI's host
        assert tb("local", "version").strip() == "✓ Tinybird Local version: evtrack 0.1.0"

        (forward_project / "pipes" / "event_timeseries.pipe").unlink()
        deployed = tb("deploy").splitlines()
        assert "✓ Deployment promoted" in deployed and "| deleted | event_timeseries | pipe |      |" in deployed
        statuses = [line.split("|")[2].strip() for line in tb("deployment", "ls").splitlines() if line.startswith("| ")]
        assert statuses == ["Status", "Live"]  # the builds before it were replaced: deleted, not listed

        tested = tb("test", "run").splitlines()
        for line in ("✓ everything passed", "✓ mobile_only passed", "✓ bad_date passed", "✓ 1/1 passed"):
            assert line in tested

        fields = [line.split(": ", 1) for line in tb("datasource", "ls").splitlines() if line.startswith(("name: ", "row_count: "))]
        counts = {name[1]: int(count[1]) for name, count in zip(fields[::2], fields[1::2])}
        assert (counts["events"], counts["events_by_user"]) == (6, 6)
        assert [line for line in tb("token", "ls").splitlines() if line.startswith("name: ")] == [
            "name: admin token", "name: tracker", "name: dashboard", "name: metrics"]  # the datafiles' TOKEN lines
        # A plain `tb logs` (its default sources: the ops log, pipe_stats_rt and jobs_log) reads what was
        # done: the build's datasources created, the fixture's and the CSV's appends, their import jobs.
        time.sleep(1.5)  # the service log is written within a second
        logged = json.loads(tb("--output", "json", "logs"))
        assert logged["query"]["sources"] == ["tinybird.datasources_ops_log", "tinybird.pipe_stats_rt",
                                              "tinybird.jobs_log"]
        ops = [row["data"] for row in logged["data"] if row["source"] == "tinybird.datasources_ops_log"]  # parsed by tb
        assert {(op["event_type"], op["datasource_name"]) for op in ops} >= {
            ("create", "events"), ("create", "events_by_user"), ("append", "events")}, ops
        appended = sorted(op["rows"] for op in ops if op["event_type"] == "append")
        assert appended[-2:] == [2, 4], ops  # the CSV's two events; the fixture's four
        assert any(row["source"] == "tinybird.jobs_log" for row in logged["data"]), logged["data"]
        assert "No logs found" not in tb("logs")
        (forward_project / "one.ndjson").write_text(EVENTS.splitlines()[1] + "\n")  # a2, the mobile click
        replaced = tb("datasource", "replace", "events", "one.ndjson").splitlines()
        assert "** Data replaced in Data Source 'events' successfully!" in replaced
        assert tb("sql", "SELECT count() AS n FROM events_by_user").splitlines()[-1].strip() == "1"  # refilled
        data = json.loads(tb("endpoint", "data", "event_stats", "--format", "json"))
        assert data["data"] == [json.loads(MOBILE)]
    finally:
        assert server.stop() == 0


OUR_TESTS = ("event_stats", "get_events", "user_activity")


def test_forward_tb_test_run_passes_our_own_tests_unchanged_and_update_rewrites_them_identically(tb_forward, tmp_path):
    """tests/*.yaml (written by tests/make_pipe_tests.py from tests/reference.py) are what `tb test run`
    compares exactly, and byte for byte what `tb test update` writes from evtrack's answers."""
    project = tmp_path / "ours"
    shutil.copytree(ROOT / "datasources", project / "datasources")
    shutil.copytree(ROOT / "pipes", project / "pipes")
    (project / "fixtures").mkdir()
    shutil.copy(ROOT / "fixtures" / "events.ndjson", project / "fixtures" / "events.ndjson")
    (project / "tests").mkdir()
    for pipe in OUR_TESTS:
        shutil.copy(ROOT / "tests" / f"{pipe}.yaml", project / "tests" / f"{pipe}.yaml")
    names = [case["name"] for pipe in OUR_TESTS
             for case in yaml.safe_load((ROOT / "tests" / f"{pipe}.yaml").read_text())]
    assert len(names) == 11
    server = Served(tmp_path / "store")
    try:
        tb = _runner(tb_forward, server, project, tmp_path)
        tested = tb("test", "run").splitlines()
        assert sorted(line for line in tested if line.startswith("✓ ") and line.endswith(" passed")) == sorted(
            [*(f"✓ {name} passed" for name in names), "✓ 3/3 passed"])  # files in the tool's own order
        for pipe in OUR_TESTS:
            tb("test", "update", pipe)
            assert (project / "tests" / f"{pipe}.yaml").read_bytes() == (ROOT / "tests" / f"{pipe}.yaml").read_bytes()
    finally:
        assert server.stop() == 0


CLICKS_PIPE = """\
DESCRIPTION >
    Clicks per platform.

TOKEN "dashboard" READ

NODE clicks
SQL >
    SELECT platform, count() AS clicks FROM events WHERE event_type = 'click' GROUP BY platform ORDER BY platform

TYPE endpoint
"""


def _cells(lines: list[str]) -> list[list[str]]:
    """The rows of the tables the tool prints, each as its stripped cells."""
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines if line.startswith("| ")]


def test_forward_tb_stages_a_deployment_and_promotes_or_discards_it(tb_forward, forward_project, tmp_path):
    """`tb deployment create` keeps the deployment staged while the live one serves; `promote` makes it
    live and removes the old one; `discard` drops a staged one; one staged deployment at a time."""
    server = Served(tmp_path / "store")
    try:
        tb = _runner(tb_forward, server, forward_project, tmp_path)
        assert "✓ Deployment #1 is live!" in tb("deploy").splitlines()
        tb("datasource", "append", "events", "--file", "fixtures/events.ndjson")

        (forward_project / "pipes" / "clicks.pipe").write_text(CLICKS_PIPE)
        created = tb("deployment", "create", "--wait").splitlines()
        assert ["new", "clicks", "endpoint", "pipes/clicks.pipe"] in _cells(created)
        assert "✓ Deployment is ready" in created

        def listed(*extra: str) -> list[tuple[str, str]]:
            return [(row[0], row[1]) for row in _cells(tb("deployment", "ls", *extra).splitlines())[1:]]  # newest first

        assert listed() == [("2", "Staging"), ("1", "Live")]
        workspace = _forward_workspace(server)
        staged_read = httpx.get(f"{server.url}/v0/pipes/clicks.json", params={"token": workspace})
        assert staged_read.status_code == 404  # the live deployment serves until the promotion

        again = subprocess.run([str(tb_forward), "deploy"], cwd=forward_project, capture_output=True, text=True,
                               env=_env(server, tmp_path), timeout=STEP_TIMEOUT)
        assert again.returncode == 1
        assert ("Deployment 2 is staged: promote it (`tb deployment promote`) or discard it "
                "(`tb deployment discard`) before creating another") in again.stdout

        promoted = tb("deployment", "promote", "--wait").splitlines()
        for line in ("✓ Deployment promoted", "✓ Old deployment removed", "✓ Deployment #2 is live!"):
            assert line in promoted
        assert listed() == [("2", "Live")]
        assert listed("--include-deleted") == [("2", "Live"), ("1", "Deleted")]
        data = json.loads(tb("endpoint", "data", "clicks", "--format", "json"))["data"]
        assert data == [{"platform": "mobile", "clicks": 1}, {"platform": "web", "clicks": 2}]  # a1, a4 web; a2

        (forward_project / "pipes" / "clicks.pipe").unlink()
        assert ["deleted", "clicks", "pipe", ""] in _cells(tb("deployment", "create", "--wait").splitlines())
        discarded = tb("deployment", "discard", "--wait").splitlines()
        assert "Removing deployment 3" in discarded and "Discard process successfully completed" in discarded
        assert listed("--include-deleted") == [("3", "Deleted"), ("2", "Live"), ("1", "Deleted")]
        assert httpx.get(f"{server.url}/v0/pipes/clicks.json", params={"token": workspace}).status_code == 200
    finally:
        assert server.stop() == 0


# Public Tinybird projects this was checked against; their files are not part of this repo. Each
# variable names the project's folder (the one with datasources/ and fixtures/):
# tinybirdco/web-analytics-starter-kit's tinybird/, and tinybirdco/logs-explorer-template's.
PUBLIC = {name: os.environ.get(variable) for name, variable in (
    ("web-analytics-starter-kit", "EVTRACK_WEB_ANALYTICS_KIT"), ("logs-explorer-template", "EVTRACK_LOGS_EXPLORER"))}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_forward_tb_builds_tests_and_deploys_a_public_project(name, tb_forward, tmp_path):
    if not PUBLIC[name]:
        pytest.skip(f"set the variable named above PUBLIC in {Path(__file__).name} to {name}'s folder")
    project = tmp_path / name
    shutil.copytree(PUBLIC[name], project)
    # Their fixtures keep the dates they were recorded with, and an ENGINE_TTL expires rows older than
    # its interval, here as on Tinybird: the copy drops the TTLs so the recorded answers still hold.
    for datafile in project.rglob("*.datasource"):
        datafile.write_text("".join(line for line in datafile.read_text().splitlines(keepends=True)
                                    if not line.startswith("ENGINE_TTL")))
    tests = sorted(project.glob("tests/**/*.y*ml"))
    server = Served(tmp_path / "store")
    try:
        tb = _runner(tb_forward, server, project, tmp_path)
        assert "✓ Build completed" in tb("build")
        tested = tb("test", "run").splitlines()
        assert (f"✓ {len(tests)}/{len(tests)} passed" if tests else "✓ No tests to run") in [t.strip() for t in tested]
        assert tb("deploy").splitlines()[-1] in ("△ Not deploying. No changes.", "✓ Deployment #1 is live!")
        pipes = {p.stem for p in project.rglob("*.pipe") if "TYPE endpoint" in p.read_text() or "TYPE ENDPOINT" in p.read_text()}
        listed = {line.removeprefix("name: ") for line in tb("endpoint", "ls").splitlines() if line.startswith("name: ")}
        assert listed == pipes
    finally:
        assert server.stop() == 0


# -- a project written from scratch with arrays, maps and nullable low-cardinality strings ----------
TYPED_FILES = {
    "datasources/pageviews.datasource": """\
DESCRIPTION >
    Page views with tags, attributes and a country that may be null

SCHEMA >
    `timestamp` DateTime `json:$.timestamp`,
    `session_id` String `json:$.session_id`,
    `pathname` String `json:$.pathname`,
    `tags` Array(String) `json:$.tags[:]`,
    `attrs` Map(String, String) `json:$.attrs`,
    `country` LowCardinality(Nullable(String)) `json:$.geo.country`,
    `duration` UInt32 `json:$.duration`,
    `items` Array(String) `json:$.items[:].name`

ENGINE MergeTree
ENGINE_SORTING_KEY timestamp
""",
    "datasources/daily.datasource": """\
DESCRIPTION >
    Views, sessions and the duration's 90th percentile per day and page

SCHEMA >
    `date` Date,
    `pathname` String,
    `views` AggregateFunction(count),
    `sessions` AggregateFunction(uniq, String),
    `p90` AggregateFunction(quantile(0.9), UInt32)

ENGINE AggregatingMergeTree
ENGINE_SORTING_KEY date, pathname
""",
    "pipes/daily_mv.pipe": """\
DESCRIPTION >
    Rolls page views up by day and page

NODE daily
SQL >
    SELECT toDate(timestamp) AS date, pathname, countState() AS views, uniqState(session_id) AS sessions,
        quantileState(0.9)(duration) AS p90
    FROM pageviews
    GROUP BY date, pathname

TYPE MATERIALIZED
DATASOURCE daily
""",
    "pipes/top_pages.pipe": """\
DESCRIPTION >
    Pages by views since a date, optionally only some pages

TOKEN "reader" READ

NODE endpoint
SQL >
    %
    SELECT pathname, countMerge(views) AS views, uniqMerge(sessions) AS sessions
    FROM daily
    WHERE date >= {{ Date(start_date, '2024-01-01') }}
    {% if defined(paths) %} AND pathname IN {{ Array(paths, 'String') }} {% end %}
    GROUP BY pathname
    ORDER BY views DESC, pathname

TYPE ENDPOINT
""",
    "fixtures/pageviews.ndjson": """\
{"timestamp":"2024-03-01 10:00:00","session_id":"s1","pathname":"home","tags":["a","b"],"attrs":{"ref":"google"},"geo":{"country":"ES"},"duration":10,"items":[{"name":"x"}]}
{"timestamp":"2024-03-01 11:00:00","session_id":"s2","pathname":"home","tags":["a"],"attrs":{},"geo":{"country":null},"duration":20,"items":[]}
{"timestamp":"2024-03-02 09:00:00","session_id":"s1","pathname":"docs","tags":[],"attrs":{"ref":"x"},"geo":{},"duration":30,"items":[{"name":"y"},{"name":"z"}]}
{"timestamp":"2024-03-02 10:00:00","session_id":"s3","pathname":"docs","tags":["b"],"attrs":{},"geo":{"country":"US"},"duration":40,"items":[]}
""",
    # By hand over the four fixture lines: "home" has s1 and s2, "docs" s1 and s3 (a tie: by name, docs first);
    # only "docs" on or after 03-02.
    "tests/top_pages.yaml": """\
- name: all_pages
  description: Both pages, two views and two sessions each
  parameters: ''
  expected_result: |
    {"pathname":"docs","views":2,"sessions":2}
    {"pathname":"home","views":2,"sessions":2}
- name: since_the_second
  description: Only docs has views from 2024-03-02
  parameters: start_date=2024-03-02
  expected_result: |
    {"pathname":"docs","views":2,"sessions":2}
- name: some_pages
  description: An Array parameter keeps the pages it names
  parameters: paths=docs
  expected_result: |
    {"pathname":"docs","views":2,"sessions":2}
""",
}


def test_forward_tb_builds_and_tests_a_project_with_arrays_maps_and_nullable_low_cardinality(tb_forward, tmp_path):
    project = tmp_path / "typed"
    for path, text in TYPED_FILES.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(text)
    server = Served(tmp_path / "store")
    try:
        tb = _runner(tb_forward, server, project, tmp_path)
        built = tb("build").splitlines()
        assert "✓ datasources/pageviews.datasource created" in built and "✓ pipes/top_pages.pipe created" in built
        query = ("SELECT count() AS n, countIf(country IS NULL) AS no_country, sum(length(tags)) AS tags, "
                 "sum(length(items)) AS items, countIf(attrs['ref'] != '') AS refs FROM pageviews FORMAT JSON")
        token = _forward_workspace(server)  # the one `tb build` made (`tb test run` makes more)
        answer = httpx.get(f"{server.url}/v0/sql", params={"q": query, "token": token}).json()
        assert answer["data"] == [{"n": 4, "no_country": 2, "tags": 4, "items": 3, "refs": 2}]
        tested = tb("test", "run").splitlines()
        for line in ("✓ all_pages passed", "✓ since_the_second passed", "✓ some_pages passed", "✓ 1/1 passed"):
            assert line in tested, tested
        (project / "pipes" / "top_pages.pipe").write_text(TYPED_FILES["pipes/top_pages.pipe"].replace(
            "ORDER BY views DESC, pathname", "ORDER BY pathname DESC"))
        assert "✓ Deployment promoted" in tb("deploy").splitlines()
        pages = httpx.get(f"{server.url}/v0/pipes/top_pages.json", params={"token": token})
        assert [row["pathname"] for row in pages.json()["data"]] == ["home", "docs"]  # the deployed order
    finally:
        assert server.stop() == 0
