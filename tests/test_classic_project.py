"""A Classic project whose materialized pipe reads another pipe, with Classic `.test` files: the
unmodified tinybird-cli pushes it with its default checks (no `--no-check`), and its tests give
Tinybird's CSV, run by the CLI as Classic projects run them and by `evtrack test`.

The expected CSV is written by hand from ClickHouse's documented CSVWithNames output, which
Tinybird's `.csv` endpoints return: a header of quoted names, strings and dates in double quotes
(a double quote doubled), numbers bare, an array as its text `['a','b']` (single-quoted elements)
in double quotes.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .served import Served, clean_env, evtrack, tb

FILES = {
    "datasources/page_hits_raw.datasource": """\
DESCRIPTION >
    Page hits as the site sends them.

SCHEMA >
    `timestamp` DateTime `json:$.timestamp`,
    `session_id` String `json:$.session_id`,
    `path` String `json:$.path`,
    `referrer` String `json:$.referrer` DEFAULT ''

ENGINE "MergeTree"
ENGINE_SORTING_KEY "timestamp"
""",
    "pipes/page_hits.pipe": """\
DESCRIPTION >
    Hits with a path, and the host they came from.

NODE parsed
SQL >
    SELECT timestamp, session_id, path, domain(referrer) AS source FROM page_hits_raw WHERE path != ''
""",
    "datasources/sessions_mv.datasource": """\
DESCRIPTION >
    Hits and distinct paths per day and session.

SCHEMA >
    `date` Date,
    `session_id` String,
    `hits` AggregateFunction(count),
    `paths` AggregateFunction(groupUniqArray, String)

ENGINE "AggregatingMergeTree"
ENGINE_SORTING_KEY "date, session_id"
""",
    "pipes/sessions.pipe": """\
DESCRIPTION >
    Rolls the hits of page_hits (a pipe) up by day and session.

NODE by_session
SQL >
    SELECT toDate(timestamp) AS date, session_id, countState() AS hits, groupUniqArrayState(path) AS paths
    FROM page_hits
    GROUP BY date, session_id

TYPE MATERIALIZED
DATASOURCE sessions_mv
""",
    "pipes/daily.pipe": """\
DESCRIPTION >
    Sessions from a day on, with their hits and paths.

TOKEN "read" READ

NODE by_day
SQL >
    %
    SELECT date, session_id, countMerge(hits) AS hits, arraySort(groupUniqArrayMerge(paths)) AS paths
    FROM sessions_mv
    WHERE date >= {{ Date(date_from, '2024-01-01') }}
    GROUP BY date, session_id
    ORDER BY date, session_id

TYPE endpoint
""",
    "datasources/fixtures/page_hits_raw.ndjson": """\
{"timestamp":"2024-01-11 10:00:00","session_id":"s1","path":"/","referrer":"https://search.example/q"}
{"timestamp":"2024-01-11 10:01:00","session_id":"s1","path":"/pricing"}
{"timestamp":"2024-01-11 10:02:00","session_id":"s1","path":"/"}
{"timestamp":"2024-01-11 11:00:00","session_id":"s2","path":"/docs, \\"quoted\\""}
{"timestamp":"2024-01-12 09:00:00","session_id":"s1","path":""}
{"timestamp":"2024-01-12 09:30:00","session_id":"s3","path":"/"}
""",
    "tests/default.yaml": """\
- no_session_without_hits:
    max_bytes_read: null
    max_time: null
    sql: |
      SELECT * FROM daily
      WHERE hits = 0
- every_session_counted_once:
    max_bytes_read: null
    max_time: null
    sql: |
      SELECT date, session_id, count() AS n FROM daily
      GROUP BY date, session_id
      HAVING n > 1
""",
    "tests/daily_default.test": "tb pipe data daily --date_from 2024-01-11 --format CSV\n",
    # By hand: s1 on the 11th has 3 hits on / and /pricing; s2 one hit on a path with a comma and
    # quotes; the 12th's hit of s1 has no path (left out by page_hits); s3 one hit on /.
    "tests/daily_default.test.result": """\
"date","session_id","hits","paths"
"2024-01-11","s1",3,"['/','/pricing']"
"2024-01-11","s2",1,"['/docs, ""quoted""']"
"2024-01-12","s3",1,"['/']"
""",
    "tests/daily_from_12.test": "tb pipe data daily --date_from 2024-01-12 --format CSV\n",
    "tests/daily_from_12.test.result": """\
"date","session_id","hits","paths"
"2024-01-12","s3",1,"['/']"
""",
}


# A query that returns a row (s1's 3 hits on the 11th), so its case fails.
FAILING = """\
- no_busy_session:
    max_bytes_read: null
    max_time: null
    sql: |
      SELECT * FROM daily WHERE hits >= 3
"""


@pytest.fixture
def classic_project(tmp_path) -> Path:
    folder = tmp_path / "classic"
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _unblank(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_classic_tb_pushes_a_materialized_pipe_reading_a_pipe_with_its_checks_and_tests_give_tinybirds_csv(
        classic_project, tmp_path):
    server = Served(tmp_path / "store")
    try:
        assert tb("auth", "--host", server.url, "--token", server.admin, cwd=classic_project).returncode == 0
        pushed = tb("push", "--push-deps", cwd=classic_project)  # the CLI's default checks run
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        appended = tb("datasource", "append", "page_hits_raw", "datasources/fixtures/page_hits_raw.ndjson",
                      cwd=classic_project)
        assert appended.returncode == 0, appended.stdout + appended.stderr
        for test in sorted((classic_project / "tests").glob("*.test")):
            words = shlex.split(test.read_text())
            assert words[0] == "tb"
            ran = subprocess.run([sys.executable, "-m", "tinybird.tb_cli", *words[1:]], cwd=classic_project,
                                 env=clean_env(), capture_output=True, text=True, timeout=120)
            assert ran.returncode == 0, ran.stdout + ran.stderr
            expected = test.with_name(test.name + ".result").read_text()
            assert _unblank(ran.stdout) == _unblank(expected), test.name  # as `diff -B` compares them
        tested = tb("test", "run", cwd=classic_project)  # tests/default.yaml: queries that must return no rows
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert [line for line in tested.stdout.splitlines() if line.startswith(("test: ", "status: "))] == [
            "test: no_session_without_hits", "status: Pass", "test: every_session_counted_once", "status: Pass"]
        (classic_project / "tests" / "failing.yaml").write_text(FAILING)
        failing = tb("test", "run", "tests/failing.yaml", cwd=classic_project)
        assert failing.returncode == 1 and "Total Fail: 1" in failing.stdout.splitlines(), failing.stdout
        assert "** The data validation has failed" in failing.stderr
    finally:
        assert server.stop() == 0


def test_evtrack_test_runs_classic_test_files(classic_project):
    ran = evtrack("test", "--project", str(classic_project))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.splitlines() == [
        "PASS     default                      no_session_without_hits",
        "PASS     default                      every_session_counted_once",
        "PASS     daily                        daily_default",
        "PASS     daily                        daily_from_12",
        "4 passed, 0 failed",
    ]
    (classic_project / "tests" / "failing.yaml").write_text(FAILING)
    failing = evtrack("test", "--project", str(classic_project))
    assert failing.returncode == 1 and "FAIL     failing                      no_busy_session" in failing.stdout
    (classic_project / "tests" / "failing.yaml").unlink()
    result = classic_project / "tests" / "daily_default.test.result"
    result.write_text(result.read_text().replace('"s2",1', '"s2",2'))
    failed = evtrack("test", "--project", str(classic_project))
    assert failed.returncode == 1
    assert [line.strip() for line in failed.stdout.splitlines()[3:7]] == [
        "--- expected", "+++ actual", "@@ -2,3 +2,3 @@", "\"2024-01-11\",\"s1\",3,\"['/','/pricing']\""]
    lines = FILES["tests/daily_default.test.result"].splitlines(keepends=True)
    result.write_text("".join([lines[0], lines[2], lines[1], lines[3]]))  # s2 before s1
    swapped = evtrack("test", "--project", str(classic_project))
    assert swapped.returncode == 1 and (
        "the same rows in another order: only an ORDER BY in the pipe's last node defines the order (without one, "
        "ClickHouse returns rows in any order, and may differ between calls)") in swapped.stdout
    assert evtrack("test", "--update", "--project", str(classic_project)).returncode == 0
    assert result.read_text() == FILES["tests/daily_default.test.result"]

    raw = classic_project / "datasources" / "page_hits_raw.datasource"  # a TTL the 2024 fixture is past
    raw.write_text(raw.read_text() + 'ENGINE_TTL "timestamp + toIntervalDay(30)"\n')
    expiring = evtrack("test", "--project", str(classic_project))
    fixture = classic_project / "datasources" / "fixtures" / "page_hits_raw.ndjson"
    assert expiring.stderr.splitlines() == [
        f"note: {fixture}: 6 of 6 rows are past the datasource's ENGINE_TTL, so they expire as on Tinybird; cases "
        "that expect them will fail (move the fixture's dates, or the TTL)"]


def test_deployment_directives_of_current_datafiles_are_read_past():
    """FORWARD_QUERY, BACKFILL and DEPLOYMENT_METHOD (Tinybird's current datafiles) say how a deployment
    moves data; the resource parses as it would without them."""
    from evtrack.project import parse_datasource, parse_pipe

    plain = FILES["datasources/page_hits_raw.datasource"]
    directed = plain + 'BACKFILL skip\n\nFORWARD_QUERY >\n    SELECT timestamp, session_id, path,\n        referrer\n'
    assert parse_datasource("page_hits_raw", directed).columns == parse_datasource("page_hits_raw", plain).columns
    pipe = FILES["pipes/daily.pipe"]
    assert parse_pipe("daily", "DEPLOYMENT_METHOD alter\n\n" + pipe).nodes == parse_pipe("daily", pipe).nodes


def test_classic_tb_push_force_checks_a_changed_endpoint_against_its_recorded_calls(classic_project, tmp_path):
    """With its default checks, `tb push --force` of an endpoint replays the endpoint's recent calls
    (from tinybird.pipe_stats_rt) against the new version: the same answers pass, others fail it (s1 had
    3 hits; the CLI reports the relative difference, 1/3)."""
    import time

    import httpx

    server = Served(tmp_path / "store")
    try:
        assert tb("auth", "--host", server.url, "--token", server.admin, cwd=classic_project).returncode == 0
        assert tb("push", "--push-deps", cwd=classic_project).returncode == 0
        assert tb("datasource", "append", "page_hits_raw", "datasources/fixtures/page_hits_raw.ndjson",
                  cwd=classic_project).returncode == 0
        called = httpx.get(f"{server.url}/v0/pipes/daily.json", params={"token": server.token("read"),
                                                                         "date_from": "2024-01-11"})
        assert called.status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the server writes the calls each second
            kept = httpx.get(f"{server.url}/v0/sql", params={
                "token": server.admin, "q": "SELECT count() AS n FROM tinybird.pipe_stats_rt FORMAT JSON"})
            if kept.json()["data"] == [{"n": 1}]:
                break
            time.sleep(0.1)
        daily = classic_project / "pipes" / "daily.pipe"
        daily.write_text(daily.read_text().replace("ORDER BY date, session_id", "ORDER BY date ASC, session_id ASC"))
        same = tb("push", "pipes/daily.pipe", "--force", cwd=classic_project)
        assert same.returncode == 0, same.stdout + same.stderr
        assert ("    new http://127.0.0.1:" in same.stdout
                and "/v0/pipes/daily__checker.json?date_from=2024-01-11&pipe_checker=true ... ok" in same.stdout)
        daily.write_text(daily.read_text().replace("countMerge(hits) AS hits", "countMerge(hits) + 1 AS hits"))
        changed = tb("push", "pipes/daily.pipe", "--force", cwd=classic_project)
        assert changed.returncode == 1
        assert "** check error: 0.3333333333333333 not less than or equal to 0.01 : key hits. old value: 3, new value: 4" in (
            changed.stdout), changed.stdout
    finally:
        assert server.stop() == 0
    # Each push entered the deployment history, as a deploy does: the first push's datafiles, then
    # the endpoint the `--force` push with the same answers replaced; the refused one did not change it.
    from evtrack.engine import Engine

    with Engine.open(tmp_path / "store") as engine:
        pushed = [entry for entry in engine.deployments() if entry.get("via") == "one resource"]
    assert all(entry["status"] == "done" for entry in pushed), pushed
    created = {item for entry in pushed for item in entry["created"]}
    assert {"page_hits_raw.datasource", "daily.pipe"} <= created, pushed
    # `tb push --force` checks through a daily__checker pipe it pushes and deletes: entered too.
    assert [entry["changed"] for entry in pushed].count(["daily.pipe"]) == 1, pushed
    assert ["daily__checker.pipe"] in [entry.get("deleted") for entry in pushed], pushed
