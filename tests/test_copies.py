"""Copy pipes (TYPE COPY) on a small project written here: deploy checks, append and replace runs,
parameters, a failing run, the HTTP route, the CLI command, schedules, a run killed with kill -9
and writes into a target while a replace runs. Expected rows are computed in Python from the rows
the tests send, never by the SQL under test."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient  # noqa: the suite's in-process client

from evtrack.cli import cli
from evtrack.engine import Engine
from evtrack.engine.change.copies import CopyScheduler
from evtrack.engine.store import Store
from evtrack.errors import BadRequest, QueryError, TemplateError
from evtrack.project import load_project
from evtrack.server.app import create_app

from .served import ROOT, Served, clean_env, evtrack

SALES = """SCHEMA >
    `ts` DateTime `json:$.ts`,
    `user` String `json:$.user`,
    `amount` UInt32 `json:$.amount`

ENGINE MergeTree
ENGINE_SORTING_KEY ts
"""

USER_TOTALS = """SCHEMA >
    `user` String,
    `total` UInt64

ENGINE MergeTree
ENGINE_SORTING_KEY user
"""

# Fed by a materialized pipe reading the copy target: how many rows reached the target's table.
TARGET_ROWS = """SCHEMA >
    `one` UInt8,
    `n` UInt64

ENGINE SummingMergeTree
ENGINE_SORTING_KEY one
"""

TOTALS_NODE = """NODE totals
SQL >
    %
    SELECT user, toUInt64(sum(amount)) AS total FROM sales
    WHERE amount >= {{ UInt32(min_amount, 0, description="Smallest sale counted") }}
    GROUP BY user

"""

APPEND_COPY = TOTALS_NODE + "TYPE COPY\nTARGET_DATASOURCE user_totals\n"
REPLACE_COPY = TOTALS_NODE + "TYPE copy\nTARGET_DATASOURCE user_totals\nCOPY_SCHEDULE @on-demand\nCOPY_MODE replace\n"
BROKEN_COPY = """NODE boom
SQL >
    SELECT user, toUInt64(throwIf(amount > 50, 'a sale above 50')) AS total FROM sales

TYPE COPY
TARGET_DATASOURCE user_totals
COPY_MODE replace
"""
COUNT_TARGET = """NODE counted
SQL >
    SELECT 1 AS one, count() AS n FROM user_totals

TYPE MATERIALIZED
DATASOURCE target_rows
"""

SALES_ROWS = [
    {"ts": "2024-05-01 10:00:00", "user": "ana", "amount": 10},
    {"ts": "2024-05-01 11:00:00", "user": "ana", "amount": 20},
    {"ts": "2024-05-01 12:00:00", "user": "ana", "amount": 30},
    {"ts": "2024-05-02 09:00:00", "user": "bo", "amount": 5},
    {"ts": "2024-05-02 10:00:00", "user": "cy", "amount": 70},
]


def expected_totals(min_amount: int = 0) -> dict[str, int]:
    totals = Counter()
    for row in SALES_ROWS:
        if row["amount"] >= min_amount:
            totals[row["user"]] += row["amount"]
    return dict(totals)


def write_project(root: Path, extra: dict[str, str] | None = None, *, schedule: str | None = None) -> Path:
    files = {
        "datasources/sales.datasource": SALES,
        "datasources/user_totals.datasource": USER_TOTALS,
        "datasources/target_rows.datasource": TARGET_ROWS,
        "copies/copy_totals.pipe": APPEND_COPY if schedule is None else APPEND_COPY + f"COPY_SCHEDULE {schedule}\n",
        "copies/snapshot_totals.pipe": REPLACE_COPY,
        "copies/broken_totals.pipe": BROKEN_COPY,
        "materializations/count_target.pipe": COUNT_TARGET,
        **(extra or {}),
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def ndjson(rows) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


@pytest.fixture
def engine(tmp_path):
    with Engine.open(tmp_path / "store") as opened:
        opened.deploy(load_project(write_project(tmp_path / "project")))
        result = opened.append("sales", ndjson(SALES_ROWS))
        assert result.successful_rows == len(SALES_ROWS)
        yield opened


def target(engine: Engine) -> list[tuple[str, int]]:
    rows = json.loads(engine.sql("SELECT user, total FROM user_totals ORDER BY user, total"))["data"]
    return [(r["user"], int(r["total"])) for r in rows]


def target_rows_seen(engine: Engine) -> int:
    return int(json.loads(engine.sql("SELECT sum(n) AS n FROM target_rows"))["data"][0]["n"])


def tables(engine: Engine) -> list[str]:
    return engine.store.run("SHOW TABLES FROM evtrack", "TSV").decode().split()


def test_append_writes_the_result_each_run_and_the_targets_views_fire(engine):
    expected = sorted(expected_totals().items())
    assert engine.run_copy("copy_totals", {}) == len(expected)
    assert target(engine) == expected
    assert engine.run_copy("copy_totals", {}) == len(expected)
    assert target(engine) == sorted(expected * 2)
    # The materialized pipe reading user_totals saw both inserts.
    assert target_rows_seen(engine) == 2 * len(expected)


def test_a_parameter_changes_the_rows_and_its_default_applies_without_it(engine):
    assert engine.run_copy("copy_totals", {"min_amount": "10"}) == len(expected_totals(10))
    assert target(engine) == sorted(expected_totals(10).items())
    assert "bo" not in dict(target(engine))  # bo's only sale is 5


def test_replace_swaps_in_the_new_result_and_rebuilds_what_reads_the_target(engine):
    engine.run_copy("copy_totals", {})
    engine.run_copy("copy_totals", {})
    assert engine.run_copy("snapshot_totals", {"min_amount": "20"}) == len(expected_totals(20))
    assert target(engine) == sorted(expected_totals(20).items())
    # The view's target now counts the replaced rows only, as if they had been inserted.
    assert target_rows_seen(engine) == len(expected_totals(20))
    assert not [t for t in tables(engine) if "__copy_" in t]


def test_mode_given_for_one_run_overrides_the_pipes(engine):
    engine.run_copy("copy_totals", {})
    assert engine.run_copy("copy_totals", {"min_amount": "30"}, mode="replace") == len(expected_totals(30))
    assert target(engine) == sorted(expected_totals(30).items())
    with pytest.raises(BadRequest, match="copy mode"):
        engine.run_copy("copy_totals", {}, mode="upsert")


def test_a_failing_copy_leaves_the_target_as_it_was(engine):
    engine.run_copy("snapshot_totals", {})
    before = target(engine)
    assert before == sorted(expected_totals().items())
    with pytest.raises(QueryError, match="a sale above 50"):
        engine.run_copy("broken_totals", {})
    with pytest.raises(QueryError, match="a sale above 50"):
        engine.run_copy("broken_totals", {}, mode="append")
    assert target(engine) == before
    assert not [t for t in tables(engine) if "__copy_" in t]


def test_a_bad_parameter_is_refused_before_anything_is_written(engine):
    with pytest.raises(TemplateError, match="min_amount"):
        engine.run_copy("copy_totals", {"min_amount": "lots"})
    assert target(engine) == []
    with pytest.raises(BadRequest, match="not a copy pipe"):
        engine.run_copy("count_target", {})


@pytest.mark.parametrize("pipe, message", [
    (APPEND_COPY.replace("user_totals", "nowhere"), "'nowhere' it copies into does not exist"),
    (TOTALS_NODE.replace("AS total", "AS total, 1 AS extra") + "TYPE COPY\nTARGET_DATASOURCE user_totals\n",
     "'extra'"),
    (APPEND_COPY + "COPY_MODE upsert\n", "COPY_MODE 'upsert'"),
    (APPEND_COPY + "COPY_SCHEDULE every day\n", "COPY_SCHEDULE 'every day'"),
    (TOTALS_NODE + "TYPE COPY\n", "names no TARGET_DATASOURCE"),
])
def test_deploy_refuses_a_copy_pipe_that_cannot_run(tmp_path, pipe, message):
    root = write_project(tmp_path / "project", {"copies/odd.pipe": pipe})
    result = CliRunner(mix_stderr=False).invoke(cli, ["--data", str(tmp_path / "store"), "deploy", "--project", str(root)])
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert "odd" not in result.output


def test_a_deployed_copy_pipe_keeps_its_settings(engine):
    node = engine.pipe("snapshot_totals").copy
    assert (node.datasource, node.copy_mode, node.copy_schedule) == ("user_totals", "replace", "@on-demand")
    assert [p.name for p in engine.pipe("copy_totals").params] == ["min_amount"]


# -- HTTP ---------------------------------------------------------------------------------------
def test_copy_route_runs_the_copy_and_answers_a_job(engine):
    reader = engine.tokens.grant("reader", ["PIPES:READ:copy_totals"]).token
    other = engine.tokens.grant("other", ["PIPES:READ:snapshot_totals"]).token
    with TestClient(create_app(engine)) as client:
        answer = client.post("/v0/pipes/copy_totals/copy?min_amount=10", headers={"Authorization": f"Bearer {reader}"})
        assert answer.status_code == 200, answer.text
        job = answer.json()["job"]
        assert (job["kind"], job["status"], job["pipe_name"]) == ("copy", "done", "copy_totals")
        assert job["statistics"]["row_count"] == len(expected_totals(10))
        assert job["pipe_id"] == answer.json()["id"] and answer.json()["type"] == "copy"
        polled = client.get(f"/v0/jobs/{job['id']}", headers={"Authorization": f"Bearer {reader}"})
        assert polled.status_code == 200 and polled.json()["status"] == "done"
        # Form fields and _mode, as tinybird-cli sends them.
        replaced = client.post("/v0/pipes/copy_totals/copy", data={"min_amount": "30", "_mode": "replace"},
                               headers={"Authorization": f"Bearer {reader}"})
        assert replaced.json()["job"]["statistics"]["row_count"] == len(expected_totals(30))
        assert client.post("/v0/pipes/copy_totals/copy", headers={"Authorization": f"Bearer {other}"}).status_code == 403
        bad = client.post("/v0/pipes/copy_totals/copy?min_amount=lots", headers={"Authorization": f"Bearer {reader}"})
        assert bad.status_code == 400 and "min_amount" in bad.json()["error"]
        assert client.post(f"/v0/pipes/copy_totals/copy?token={engine.tokens.admin.token}").status_code == 200
    # replace (min 30), then the admin's append (min 0)
    assert target(engine) == sorted(list(expected_totals(30).items()) + list(expected_totals(0).items()))


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_copy_run_prints_the_rows_and_a_failed_run_exits_1(tmp_path):
    data, root = tmp_path / "store", write_project(tmp_path / "project")
    runner = CliRunner(mix_stderr=False)
    assert runner.invoke(cli, ["--data", str(data), "deploy", "--project", str(root)]).exit_code == 0
    with Engine.open(data) as opened:
        opened.append("sales", ndjson(SALES_ROWS))
    done = runner.invoke(cli, ["--data", str(data), "copy", "run", "copy_totals", "--param", "min_amount=10"])
    assert done.exit_code == 0, done.stderr
    assert done.output.strip() == f"{len(expected_totals(10))} rows copied into user_totals"
    listed = runner.invoke(cli, ["--data", str(data), "pipes"])
    assert "copy_totals (copy into user_totals)" in listed.output
    failed = runner.invoke(cli, ["--data", str(data), "copy", "run", "broken_totals"])
    assert failed.exit_code == 1 and "a sale above 50" in failed.stderr


@pytest.fixture(scope="module")
def deployed_copies(tmp_path_factory) -> Path:
    """A store with the copy project deployed, shared by runs refused before anything runs."""
    folder = tmp_path_factory.mktemp("copies")
    deployed = CliRunner(mix_stderr=False).invoke(
        cli, ["--data", str(folder / "store"), "deploy", "--project", str(write_project(folder / "project"))])
    assert deployed.exit_code == 0, deployed.stderr
    return folder / "store"


@pytest.mark.parametrize("args, error", [
    pytest.param(["copy_totals", "--param", "min_amount=lots"], "Invalid value for --param: min_amount: 'lots' is not "
                 "a valid UInt32; expected an integer from 0 to 4294967295", id="value-of-another-type"),
    pytest.param(["copy_totals", "--param", "nope=1"],
                 "Invalid value for --param: nope: not a parameter of copy_totals (its parameters: min_amount)",
                 id="unknown-parameter"),
    pytest.param(["copy_totals", "--param", "min_amount"], "Invalid value for --param: 'min_amount' is not NAME=VALUE",
                 id="not-name-value"),
    pytest.param(["copy_totals", "--mode", "upsert"],
                 "Invalid value for '--mode': 'upsert' is not one of 'append', 'replace'.", id="unknown-mode"),
    pytest.param(["count_target"], "Invalid value for PIPE: no deployed copy pipe named 'count_target' "
                 "(copy pipes: broken_totals, copy_totals, snapshot_totals)", id="not-a-copy-pipe"),
])
def test_cli_copy_run_refuses_bad_usage_with_exit_2_naming_it(deployed_copies, args, error):
    refused = CliRunner(mix_stderr=False).invoke(cli, ["--data", str(deployed_copies), "copy", "run", *args])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.splitlines()[-1] == f"Error: {error}"
    assert refused.output == ""


# -- schedules ----------------------------------------------------------------------------------
STAMPS = """SCHEMA >
    `at` DateTime

ENGINE MergeTree
ENGINE_SORTING_KEY at
"""
STAMP = """NODE stamp
SQL >
    %
    SELECT {{ DateTime(job_timestamp) }} AS at

TYPE COPY
TARGET_DATASOURCE stamps
COPY_SCHEDULE 0 * * * *
"""


def test_scheduler_runs_a_pipe_when_its_cron_comes_due(tmp_path):
    extra = {"datasources/stamps.datasource": STAMPS, "copies/stamp.pipe": STAMP}
    with Engine.open(tmp_path / "store") as opened:
        opened.deploy(load_project(write_project(tmp_path / "project", extra, schedule="*/5 * * * *")))
        opened.append("sales", ndjson(SALES_ROWS))
        scheduler = CopyScheduler(opened, clock=lambda: 0.0)
        start = 1_700_000_100.0  # 2023-11-14 22:15:00 UTC, a multiple of five minutes
        assert scheduler.tick(start) == []  # learns the schedules: copy_totals next at 22:20, stamp at 23:00
        assert scheduler.tick(start + 299) == []
        assert scheduler.tick(start + 300) == ["copy_totals"]
        scheduler.stop()
        assert scheduler.tick(start + 301) == []  # not again before 22:25
        assert scheduler.runs == {"copy_totals": 1}
        assert target(opened) == sorted(expected_totals().items())
        assert sorted(scheduler.tick(start + 2700 + 5)) == ["copy_totals", "stamp"]  # 23:00:05
        scheduler.stop()
        assert len(target(opened)) == 2 * len(expected_totals())
        # job_timestamp is the time the run was due, not the (injected) clock's nor the machine's.
        stamps = json.loads(opened.sql("SELECT toString(at) AS at FROM stamps"))["data"]
        assert stamps == [{"at": "2023-11-14 23:00:00"}]


def test_scheduled_copy_fires_under_evtrack_serve(tmp_path):
    failing = BROKEN_COPY.replace("TARGET_DATASOURCE", "COPY_SCHEDULE * * * * * *\nTARGET_DATASOURCE")
    data = tmp_path / "store"
    root = write_project(tmp_path / "project", {"copies/failing_totals.pipe": failing}, schedule="* * * * * *")
    deployed = evtrack("--data", str(data), "deploy", "--project", str(root))
    assert deployed.returncode == 0, deployed.stderr
    (tmp_path / "sales.ndjson").write_bytes(ndjson(SALES_ROWS))
    sent = evtrack("--data", str(data), "send", "--datasource", "sales", str(tmp_path / "sales.ndjson"))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    server = Served(data)
    try:
        deadline, count = time.monotonic() + 20, 0
        while time.monotonic() < deadline and count < 2 * len(expected_totals()):
            answer = httpx.get(f"{server.url}/v0/sql", params={"q": "SELECT count() AS n FROM user_totals"},
                               headers={"Authorization": f"Bearer {server.admin}"}, timeout=10)
            count = int(answer.json()["data"][0]["n"])
            time.sleep(0.2)
        # Each run appends one row per user: two runs within a few seconds.
        assert count >= 2 * len(expected_totals()) and count % len(expected_totals()) == 0
        # The CLI goes through the running server.
        ran = evtrack("--data", str(data), "copy", "run", "snapshot_totals", "--param", "min_amount=20")
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == f"{len(expected_totals(20))} rows copied into user_totals"
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.communicate(timeout=60)
        err = server.stderr()
    # The failing schedule was logged each time, and never stopped the server.
    assert server.process.returncode == 0, err
    assert "copy pipe failing_totals failed" in err and "a sale above 50" in err


def test_tb_push_of_a_copy_pipe_to_evtrack_serve(tmp_path):
    """`evtrack deploy --host` runs the unmodified `tb push`: it creates the pipe, then sets its copy node."""
    root = tmp_path / "project"
    for path, text in {"datasources/sales.datasource": SALES, "datasources/user_totals.datasource": USER_TOTALS,
                       "pipes/snapshot_totals.pipe": REPLACE_COPY.replace("@on-demand", "0 * * * *")}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    data = tmp_path / "store"
    server = Served(data)
    try:
        pushed = evtrack("--host", server.url, "--token", server.admin, "deploy", "--project", str(root))
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        node = json.loads((data / "project.json").read_text())["parsed_pipes"]["snapshot_totals"]["nodes"][0]
        assert (node["type"], node["datasource"], node["copy_schedule"], node["copy_mode"]) == (
            "copy", "user_totals", "0 * * * *", "replace")
        (tmp_path / "sales.ndjson").write_bytes(ndjson(SALES_ROWS))
        sent = evtrack("--data", str(data), "send", "--datasource", "sales", str(tmp_path / "sales.ndjson"))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        for _ in range(2):  # replace: the second run leaves the same rows
            ran = evtrack("--data", str(data), "copy", "run", "snapshot_totals")
            assert ran.stdout.strip() == f"{len(expected_totals())} rows copied into user_totals", ran.stderr
        answer = httpx.get(f"{server.url}/v0/sql", params={"q": "SELECT user, total FROM user_totals ORDER BY user"},
                           headers={"Authorization": f"Bearer {server.admin}"}, timeout=10)
        assert [(r["user"], int(r["total"])) for r in answer.json()["data"]] == sorted(expected_totals().items())
    finally:
        assert server.stop() == 0


def test_a_host_that_queues_the_job_gets_its_parameters_and_mode_and_answers_the_job(tmp_path):
    """Against Tinybird Cloud's contract (stood in for by httpx.MockTransport): the job is queued."""
    from evtrack.client import Client
    from evtrack.settings import Secret, Target
    from evtrack.targets import CopyResult, Remote

    host, seen = "https://api.tinybird.co", {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(method=request.method, url=str(request.url))
        return httpx.Response(200, json={"id": "t_1", "name": "copy_totals", "type": "copy", "job": {
            "kind": "copy", "id": "j1", "job_id": "j1", "status": "waiting", "pipe_id": "t_1",
            "pipe_name": "copy_totals"}, "tags": {"copy_target_datasource": "t_2"}})

    client = Client(host, "p.cloud", http=httpx.Client(base_url=host, transport=httpx.MockTransport(handler)))
    remote = Remote(Target(data=tmp_path, host=host, token=Secret("p.cloud"), origin="test"), client=client)
    job = remote.run_copy("copy_totals", {"min_amount": "10"}, "replace")
    assert (seen["method"], seen["url"]) == ("POST", f"{host}/v0/pipes/copy_totals/copy?min_amount=10&_mode=replace")
    assert job == CopyResult(rows=None, job_id="j1", status="waiting")  # no rows yet: the job is queued


def test_a_copy_reads_another_pipe_by_name_with_the_runs_parameters(tmp_path):
    big_sales = """NODE big
SQL >
    %
    SELECT user, amount FROM sales WHERE amount >= {{ UInt32(min_amount, 0) }}

TYPE endpoint
"""
    from_pipe = """NODE totals
SQL >
    SELECT user, toUInt64(sum(amount)) AS total FROM big_sales GROUP BY user

TYPE COPY
TARGET_DATASOURCE user_totals
"""
    root = write_project(tmp_path / "project", {"endpoints/big_sales.pipe": big_sales, "copies/from_pipe.pipe": from_pipe})
    with Engine.open(tmp_path / "store") as opened:
        opened.deploy(load_project(root))
        opened.append("sales", ndjson(SALES_ROWS))
        assert opened.run_copy("from_pipe", {"min_amount": "20"}) == len(expected_totals(20))
        assert target(opened) == sorted(expected_totals(20).items())
    # The CLI knows the parameter from the pipe read by name.
    ran = CliRunner(mix_stderr=False).invoke(
        cli, ["--data", str(tmp_path / "store"), "copy", "run", "from_pipe", "--param", "min_amount=30"])
    assert ran.exit_code == 0, ran.stderr
    assert ran.output.strip() == f"{len(expected_totals(30))} rows copied into user_totals"
    refused = CliRunner(mix_stderr=False).invoke(
        cli, ["--data", str(tmp_path / "store"), "copy", "run", "from_pipe", "--param", "min_amount=-1"])
    assert refused.exit_code == 2 and "min_amount" in refused.stderr


# -- a long replace run: killed, and beside ingests ---------------------------------------------
BIG = """SCHEMA >
    `n` UInt64 `json:$.n`

ENGINE MergeTree
ENGINE_SORTING_KEY n
"""
LABELLED = """SCHEMA >
    `n` UInt64 `json:$.n`,
    `origin` String `json:$.origin`

ENGINE MergeTree
ENGINE_SORTING_KEY n
"""
SNAPSHOT_BIG = """NODE everything
SQL >
    SELECT n, 'copy' AS origin FROM big

TYPE COPY
TARGET_DATASOURCE snapshot
COPY_MODE replace
"""
ADD_ONE = """NODE one
SQL >
    SELECT toUInt64(7) AS n, 'append copy' AS origin

TYPE COPY
TARGET_DATASOURCE snapshot
"""
FEED_SNAPSHOT = """NODE fed
SQL >
    SELECT n, origin FROM feed

TYPE MATERIALIZED
DATASOURCE snapshot
"""
BIG_ROWS = 10_000_000  # a replace run of about a second on a 2-core machine; an ingest of a few rows takes ~20 ms
BEFORE = [{"n": 1, "origin": "before"}, {"n": 2, "origin": "before"}, {"n": 3, "origin": "before"}]


def big_store(root: Path) -> Path:
    """A store whose `snapshot` holds BEFORE, with a replace copy pipe from the BIG_ROWS rows of `big`."""
    files = {"datasources/big.datasource": BIG, "datasources/snapshot.datasource": LABELLED,
             "datasources/feed.datasource": LABELLED, "datasources/elsewhere.datasource": LABELLED,
             "copies/snapshot_big.pipe": SNAPSHOT_BIG,
             "copies/add_one.pipe": ADD_ONE, "materializations/feed_snapshot.pipe": FEED_SNAPSHOT}
    for path, text in files.items():
        (root / "project" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "project" / path).write_text(text)
    with Engine.open(root / "store") as opened:
        opened.deploy(load_project(root / "project"))
        opened.store.execute(f"INSERT INTO evtrack.big SELECT number FROM numbers({BIG_ROWS})")
        assert opened.append("snapshot", ndjson(BEFORE)).successful_rows == len(BEFORE)
    return root / "store"


def origins(engine: Engine) -> dict[str, int]:
    """Raw rows of `snapshot` by origin (no FINAL: a row written twice counts twice)."""
    out = engine.store.run("SELECT origin, count() FROM evtrack.snapshot GROUP BY origin", "JSONCompactEachRow")
    return {origin: int(n) for origin, n in map(json.loads, out.decode().splitlines())}


def staging_tables(tables_now: list[str]) -> list[str]:
    return [t for t in tables_now if "__copy_" in t]


# Runs the long copy in a process of its own, and says which staging table it made once it is there.
KILLED_COPY = """
import sys, threading, time
from pathlib import Path
from evtrack.engine import Engine

engine = Engine.open(Path(sys.argv[1]))

def watch():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = engine.store.run("SELECT name FROM system.tables WHERE database = 'evtrack' "
                                 "AND position(name, '__copy_') > 0", "TSV").split()
        if found:
            print("staging", found[0].decode(), flush=True)
            return

threading.Thread(target=watch, daemon=True).start()
engine.run_copy("snapshot_big", {})
print("finished", flush=True)
"""


def test_a_copy_killed_mid_run_leaves_no_staging_table_and_the_target_as_it_was(tmp_path):
    data = big_store(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", KILLED_COPY, str(data)], cwd=ROOT, env=clean_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hung = threading.Timer(120, child.kill)  # a child that never says anything ends the wait below
    hung.start()
    try:
        seen = child.stdout.readline()  # the staging table is there: the run is under way
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=60)
    finally:
        hung.cancel()
        child.kill()
    assert seen.startswith("staging "), seen + err
    assert child.returncode == -signal.SIGKILL
    with Store(data) as store:  # as the kill left it: the run had not finished
        assert staging_tables(store.run("SHOW TABLES FROM evtrack", "TSV").decode().split()) == [seen.split()[1]]
    with Engine.open(data) as reopened:
        assert staging_tables(tables(reopened)) == []
        assert origins(reopened) == {"before": len(BEFORE)}


def test_rows_ingested_into_the_target_during_a_replace_copy_are_kept(tmp_path):
    with Engine.open(big_store(tmp_path)) as opened:
        copied = []
        run = threading.Thread(target=lambda: copied.append(opened.run_copy("snapshot_big", {})), daemon=True)
        run.start()
        deadline = time.monotonic() + 60
        while not staging_tables(tables(opened)) and run.is_alive() and time.monotonic() < deadline:
            pass  # until the run has made its staging table
        assert staging_tables(tables(opened)), "the run never made its staging table"
        # An append to a datasource the run does not write, and a read of the target (the old rows),
        # both answer while it runs.
        assert opened.append("elsewhere", ndjson([{"n": 0, "origin": "elsewhere"}])).successful_rows == 1
        assert json.loads(opened.sql("SELECT count() AS n FROM snapshot"))["data"] == [{"n": len(BEFORE)}]
        assert staging_tables(tables(opened)), "the run had finished: nothing above ran beside it"
        # Into the target directly, through the materialized pipe feed -> snapshot, and by an append copy,
        # all at once while the run goes on.
        written = []
        writes = [lambda: opened.append("snapshot", ndjson([{"n": 4, "origin": "direct"}] * 2)).successful_rows,
                  lambda: opened.append("feed", ndjson([{"n": 6, "origin": "feed"}] * 3)).successful_rows,
                  lambda: opened.run_copy("add_one", {})]
        writers = [threading.Thread(target=lambda write=write: written.append(write()), daemon=True) for write in writes]
        for writer in writers:
            writer.start()
        for thread in [run, *writers]:
            thread.join(60)
        assert copied == [BIG_ROWS] and sorted(written) == [1, 2, 3]
        # The old rows went with the exchange; every row sent meanwhile is in the new table, once.
        assert origins(opened) == {"copy": BIG_ROWS, "direct": 2, "feed": 3, "append copy": 1}
