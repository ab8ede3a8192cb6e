"""Against a real `evtrack serve` on loopback: the unmodified tb CLI, verdin, evtrack as a client."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from . import reference
from .conftest import FIXTURE, ROOT
from .served import Served, evtrack, tb
from .test_endpoints import GET_EVENTS, STATS, _normalise


def start_loaded(folder):
    """A server whose project was deployed with `evtrack deploy --host` and fixture sent with `evtrack send --host`."""
    server = Served(folder)
    deployed = evtrack("--host", server.url, "--token", server.admin, "deploy")
    sent = evtrack("--host", server.url, "--token", server.admin, "send", str(FIXTURE))
    if deployed.returncode or sent.returncode:
        server.stop()
        raise AssertionError(deployed.stdout + deployed.stderr + sent.stdout + sent.stderr)
    return server


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Read-only tests share this one."""
    server = start_loaded(tmp_path_factory.mktemp("served"))
    yield server
    server.stop()


@pytest.fixture
def writable(tmp_path):
    server = start_loaded(tmp_path / "store")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rows():
    return reference.load(FIXTURE)


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    for part in ("datasources", "pipes", "fixtures"):
        shutil.copytree(ROOT / part, folder / part)
    return folder


def test_unmodified_tb_cli_against_serve(tmp_path, project):
    server = Served(tmp_path / "store")
    try:
        auth = tb("auth", "--host", server.url, "--token", server.admin, cwd=project)
        assert auth.returncode == 0, auth.stdout + auth.stderr
        assert json.loads((project / ".tinyb").read_text())["host"] == server.url
        # The endpoints read events_by_user, which a materialized pipe fills: it is pushed too.
        pushed = tb("push", "--push-deps", "datasources/events.datasource", "pipes/events_by_user_mv.pipe", "pipes/get_events.pipe", "pipes/user_activity.pipe",
                    "pipes/event_stats.pipe", cwd=project)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        for name in ("events", "events_by_user", "get_events", "user_activity", "event_stats"):
            assert f"** '{name}' created" in pushed.stdout
        appended = tb("datasource", "append", "events", "fixtures/events.ndjson", cwd=project)
        assert appended.returncode == 0, appended.stdout + appended.stderr
        assert "** Total rows in events: 5950" in appended.stdout  # 6,000 lines less 50 exact resends
        listed = tb("datasource", "ls", cwd=project)
        assert listed.returncode == 0 and "name: events" in listed.stdout and "row_count: 5,950" in listed.stdout
        pipes = tb("pipe", "ls", cwd=project)
        assert pipes.returncode == 0 and all(p in pipes.stdout for p in ("get_events", "user_activity", "event_stats"))
        got = tb("pipe", "data", "get_events", "--event_type", "page_view", "--format", "json", cwd=project)
        assert got.returncode == 0, got.stdout + got.stderr
        expected = reference.get_events(reference.load(FIXTURE), event_type="page_view")
        assert [r["event_id"] for r in json.loads(got.stdout)["data"]] == [r["event_id"] for r in expected]
        counted = tb("sql", "select count() from events", "--format", "json", cwd=project)
        assert counted.returncode == 0, counted.stdout + counted.stderr
        assert json.loads(counted.stdout)["data"] == [{"count()": 5950}]
    finally:
        stopped = server.stop()
    assert stopped == 0  # a clean stop on SIGTERM
    assert not (tmp_path / "store" / "server.json").exists()


def test_verdin_queries_a_pipe_and_sends_events(writable, rows):
    from verdin.client import Client as Verdin

    verdin = Verdin(writable.admin, api=writable.url)
    result = verdin.pipe("event_stats").query({"platform": "mobile"})
    assert result.data == reference.event_stats(rows, platform="mobile")
    events = verdin.datasource("events")
    sent = events.send_events([{"event_id": "verdin_1", "event_type": "sdk_test", "user_id": "user_sdk",
                                "timestamp": "2023-09-30 12:00:00"}], wait=True)
    assert (sent.successful_rows, sent.quarantined_rows) == (1, 0)
    appended = events.append_ndjson([{"event_id": "verdin_2", "event_type": "sdk_test", "timestamp": "2023-09-30 12:00:01"},
                                     {"event_id": "verdin_3", "event_type": "sdk_test"}])
    assert appended.status_code == 200 and appended.json()["quarantine_rows"] == 1
    check = verdin.sql("SELECT count() AS n FROM events WHERE event_type = 'sdk_test'").json()
    assert check.data == [{"n": 2}]


@pytest.mark.parametrize("pipe, params", [("get_events", p) for p in GET_EVENTS[:8]] + [("event_stats", p) for p in STATS[:4]])
def test_raw_http_matches_reference(loaded, rows, pipe, params):
    response = httpx.get(f"{loaded.url}/v0/pipes/{pipe}.json", params={**params, "token": loaded.token("dashboard")})
    assert response.status_code == 200, response.text
    expected = getattr(reference, pipe)(rows, **params)
    got = response.json()["data"]
    assert (_normalise(got) == _normalise(expected)) if pipe == "get_events" else (got == expected)


def test_evtrack_query_through_host_and_through_running_server(loaded, rows):
    via_host = evtrack("--host", loaded.url, "--token", loaded.token("dashboard"),
                       "query", "user_activity", "--user-id", "user_abc", "--format", "json")
    assert via_host.returncode == 0, via_host.stderr
    assert json.loads(via_host.stdout)["data"] == reference.user_activity(rows, "user_abc")
    # no --host: the store is held by the running server, so evtrack goes through it
    via_store = evtrack("--data", str(loaded.data), "query", "user_activity", "--user-id", "user_abc", "--format", "json")
    assert via_store.returncode == 0, via_store.stderr
    assert json.loads(via_store.stdout)["data"] == reference.user_activity(rows, "user_abc")
    counted = evtrack("--data", str(loaded.data), "sql", "SELECT count() AS n FROM events FINAL", "--format", "json")
    assert json.loads(counted.stdout)["data"][0]["n"] == len(rows)


def test_evtrack_errors_from_a_host_are_one_line_with_status(loaded):
    result = evtrack("--host", loaded.url, "--token", "wrong", "query", "get_events", "--param", "limit=5")
    assert result.returncode == 1
    assert result.stderr == "Error: invalid authentication token (HTTP 403)\n"
    bad = evtrack("--host", loaded.url, "--token", loaded.admin, "query", "get_events", "--start-date", "2023-07-01")
    assert bad.returncode == 2 and "Invalid value for '--start-date'" in bad.stderr


def test_tb_host_environment_and_tinyb_file_pick_the_target(loaded, tmp_path, rows):
    by_env = evtrack("sql", "SELECT count() AS n FROM events WHERE user_id = 'user_abc'", "--format", "json",
                     cwd=tmp_path, TB_HOST=loaded.url, TB_TOKEN=loaded.admin)
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout)["data"] == [{"n": 7}]
    (tmp_path / ".tinyb").write_text(json.dumps({"host": loaded.url, "token": loaded.admin}))
    by_file = evtrack("sql", "SELECT count() AS n FROM events WHERE user_id = 'user_abc'", "--format", "json", cwd=tmp_path)
    assert json.loads(by_file.stdout)["data"] == [{"n": 7}]


def test_deploy_to_a_host_updates_pipes_alters_datasources_and_refuses_incompatible_changes(writable, project):
    def deploy():
        return evtrack("--host", writable.url, "--token", writable.admin, "deploy", "--project", str(project))

    pipe = project / "pipes" / "event_stats.pipe"
    pipe.write_text(pipe.read_text().replace("ORDER BY event_count DESC, event_type ASC", "ORDER BY event_type DESC"))
    ds = project / "datasources" / "events.datasource"
    ds.write_text(ds.read_text().replace("    `properties`", "    `referrer` String `json:$.referrer` DEFAULT '',\n    `properties`"))
    changed = deploy()
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "-  ADD COLUMN `referrer` String DEFAULT ''" in changed.stdout
    stats = httpx.get(f"{writable.url}/v0/pipes/event_stats.json", params={"token": writable.admin}).json()["data"]
    assert stats[0]["event_type"] == "signup"  # the edited ORDER BY is live
    ds.write_text(ds.read_text().replace("`country` LowCardinality(String)", "`country` UInt8"))
    refused = deploy()
    assert refused.returncode == 1
    assert "column 'country' would change type from LowCardinality(String) to UInt8" in refused.stderr


def test_tb_push_populate_backfills_a_materialized_pipe_over_data_already_sent(tmp_path, project, rows):
    """`tb push --populate --wait` of a materialized pipe over a datasource that holds data: the target
    is backfilled, and tb gets the finished populate job it waits for."""
    server = Served(tmp_path / "store")
    try:
        assert tb("auth", "--host", server.url, "--token", server.admin, cwd=project).returncode == 0
        pushed = tb("push", "datasources/events.datasource", "datasources/events_by_user.datasource", cwd=project)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        appended = tb("datasource", "append", "events", "fixtures/events.ndjson", cwd=project)
        assert appended.returncode == 0, appended.stdout + appended.stderr
        populated = tb("push", "pipes/events_by_user_mv.pipe", "--populate", "--wait", cwd=project)
        assert populated.returncode == 0, populated.stdout + populated.stderr
        assert "** Populating job result" in populated.stdout and "'status': 'done'" in populated.stdout
        assert "** 'events_by_user_mv' created" in populated.stdout
        counted = httpx.get(f"{server.url}/v0/sql", params={
            "q": "SELECT count() AS n FROM events_by_user FINAL FORMAT JSON", "token": server.admin}, timeout=30)
        assert counted.json()["data"] == [{"n": len(rows)}]  # every event of the fixture once
    finally:
        assert server.stop() == 0
