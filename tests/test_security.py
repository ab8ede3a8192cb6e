"""Nothing reaches past its token (docs/security.md): a corpus of hostile SQL sent to every entry
point of the gate with every kind of token, against a real `evtrack serve` on loopback holding two
workspaces, then the Host checks against DNS rebinding, the CLI's target order and the store's modes.

Each hostile case asserts what the attack would have shown: a 4xx; no file anywhere under a watched
folder (every INTO OUTFILE of the corpus points there); none of the default workspace's event ids
(``secret_*``, sent only there) in the answer or in the attacker's tables; the server still up.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from evtrack.cli import cli

from .conftest import ROOT
from .served import Served, evtrack, tb

SECRET, INTRUDERS = "secret_", "theirs_"  # the default workspace's events, and the intruder's own


def secret_events(marker: str) -> str:
    return "\n".join(json.dumps({"event_id": f"{marker}{i}", "event_type": "view", "user_id": f"{marker}user{i}",
                                 "session_id": "s", "timestamp": "2023-07-01 00:00:00", "platform": "web"})
                     for i in range(5))


def corpus(watch: Path, other: str = "evtrack") -> dict[str, str]:
    """Hostile texts by name: each spelling of a way out (files on the host, the database ``other``)."""
    w = str(watch)
    texts = {
        "outfile raw blob": f"SELECT 'pwned' INTO OUTFILE '{w}/a' TRUNCATE FORMAT RawBLOB",
        "outfile lower case": f"select 1 into outfile '{w}/b'",
        "outfile with comments": f"SELECT 1 /* x */ INTO -- y\n OUTFILE '{w}/c' AND STDOUT",
        "outfile append": f"SELECT 1 INTO OUTFILE '{w}/d' APPEND",
        "outfile compression": f"SELECT 1 INTO OUTFILE '{w}/e.gz' COMPRESSION 'gzip'",
        "outfile after a cte": f"WITH x AS (SELECT 1 AS n) SELECT n FROM x INTO OUTFILE '{w}/f'",
        "outfile after a union": f"SELECT 1 UNION ALL SELECT 2 INTO OUTFILE '{w}/g'",
        "outfile in a subquery": f"SELECT * FROM (SELECT 1 INTO OUTFILE '{w}/h')",
        "outfile of a describe": f"DESCRIBE (SELECT 1) INTO OUTFILE '{w}/i'",
        "from infile": f"INSERT INTO events FROM INFILE '{w}/../x' FORMAT LineAsString",
        "file function": "SELECT file('/etc/hostname') AS f",
        "file table function": "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "other database": "SELECT event_id FROM evtrack.events",
        "other database backquoted": "SELECT event_id FROM `evtrack`.`events`",
        "other database double quoted": 'SELECT event_id FROM "evtrack"."events"',
        "other database in a cte": "WITH e AS (SELECT event_id FROM evtrack.events) SELECT event_id FROM e",
        "other database in IN": "SELECT event_id FROM events WHERE user_id IN (SELECT user_id FROM evtrack.events)",
        "other database in a union": "SELECT event_id FROM events UNION ALL SELECT event_id FROM evtrack.events",
        "system tables": "SELECT name FROM system.tables",
        "system in a subquery": "SELECT * FROM (SELECT name, database FROM `system`.`databases`)",
        "information schema": "SELECT * FROM information_schema.tables",
        "merge of another database": "SELECT * FROM merge('evtrack', '.*')",
        "remote": "SELECT * FROM remote('127.0.0.1', evtrack.events)",
    }
    return {name: text.replace("evtrack", other) for name, text in texts.items()}


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A served store: the default workspace with the secret events; workspace 'intruder' made
    through POST /v1/workspaces, holding the same project and none of them."""
    data, watch = tmp_path_factory.mktemp("secure"), tmp_path_factory.mktemp("watched")
    server = Served(data)
    try:
        assert evtrack("--host", server.url, "--token", server.admin, "deploy").returncode == 0
        sent = httpx.post(f"{server.url}/v0/events", params={"name": "events", "wait": "true", "token": server.admin},
                          content=secret_events(SECRET))
        assert sent.json() == {"successful_rows": 5, "quarantined_rows": 0}
        user = httpx.get(f"{server.url}/tokens").json()["user_token"]
        made = httpx.post(f"{server.url}/v1/workspaces", params={"name": "intruder", "token": user})
        assert made.status_code == 200, made.text
        intruder = made.json()["token"]
        deployed = evtrack("--host", server.url, "--token", intruder, "deploy")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        sent = httpx.post(f"{server.url}/v0/events", params={"name": "events", "wait": "true", "token": intruder},
                          content=secret_events(INTRUDERS))
        assert sent.json() == {"successful_rows": 5, "quarantined_rows": 0}
        jwt = evtrack("--data", str(data), "token", "jwt", "--pipe", "get_events")
        assert jwt.returncode == 0, jwt.stderr
        tokens = {"other workspace's admin": intruder, "dashboard": server.token("dashboard"),
                  "tracker": server.token("tracker"), "jwt": jwt.stdout.strip()}
        registry = json.loads((data / "workspaces.json").read_text())["workspaces"]
        intruder_db = next(entry["database"] for entry in registry if entry["name"] == "intruder")
        yield server, watch, tokens, intruder_db
    finally:
        assert server.stop() == 0


def assert_held(server, watch: Path, answer: httpx.Response, victim: str = SECRET, sent: str = "") -> None:
    """Refused with a 4xx and no insides (a workspace's database only where ``sent`` named it); no
    file; none of the victim's rows in the answer; the server up."""
    assert 400 <= answer.status_code < 500, answer.text[:500]
    assert victim not in answer.text
    assert not re.search(r"__import_id|evtrack-batch", answer.text), answer.text
    assert all(name in sent for name in re.findall(r"w_[0-9a-f]{12}", answer.text)), answer.text
    assert list(watch.rglob("*")) == []
    assert server.process.poll() is None


def assert_own_rows_only(server, attacker: str, victim: str = SECRET) -> None:
    """The attacker's tables hold their own 5 events and none of the victim's: nothing was copied in."""
    for table in ("events", "events_by_user", "events_by_day"):
        own = httpx.get(f"{server.url}/v0/sql", params={"token": attacker, "q": f"SELECT * FROM {table} FORMAT JSON"})
        assert own.status_code == 200 and victim not in own.text, (table, own.text[:300])
    events = httpx.get(f"{server.url}/v0/sql", params={"token": attacker, "q": "SELECT event_id FROM events FORMAT JSON"})
    assert len(events.json()["data"]) == 5


@pytest.mark.parametrize("case", sorted(corpus(Path("/w"))))
def test_the_sql_api_and_q_refuse_every_way_out_with_every_token(setting, case):
    server, watch, tokens, intruder_db = setting
    text = corpus(watch)[case]
    for name, token in tokens.items():
        sql = httpx.get(f"{server.url}/v0/sql", params={"q": text, "token": token}, timeout=30)
        assert_held(server, watch, sql)
        q = httpx.get(f"{server.url}/v0/pipes/get_events.json", params={"q": text, "token": token}, timeout=30)
        assert_held(server, watch, q)
    assert_own_rows_only(server, tokens["other workspace's admin"])


def _pipe(name: str, sql: str, kind: str) -> dict:
    node = {"name": f"{name}_node", "sql": sql, "type": kind}
    if kind == "materialized":
        node["datasource"] = "events_by_day"
    if kind == "copy":
        node["target_datasource"] = "events"
    return {"name": name, "description": "hostile", "nodes": [node]}


@pytest.mark.parametrize("kind", ["endpoint", "materialized", "copy"])
def test_no_pipe_node_can_reach_out_however_it_is_pushed(setting, kind):
    """Pushed as `tb push` pushes a pipe (POST /v0/pipes: the default workspace, which takes Classic pushes,
    against the intruder's database) and as Forward builds a project (/v1/build: the intruder's Forward
    workspace, against the default one's)."""
    server, watch, tokens, intruder_db = setting
    intruder = tokens["other workspace's admin"]
    for i, (case, text) in enumerate(sorted(corpus(watch, intruder_db).items())):
        pushed = httpx.post(f"{server.url}/v0/pipes", params={"token": server.admin},
                            json=_pipe(f"hostile_{kind}_{i}", text, kind), timeout=60)
        assert_held(server, watch, pushed, INTRUDERS, sent=text)
    for i, (case, text) in enumerate(sorted(corpus(watch).items())):
        datafile = f"NODE n\nSQL >\n    {text}\n" + ("TYPE ENDPOINT\n" if kind == "endpoint" else
                                                       "TYPE MATERIALIZED\nDATASOURCE events_by_day\n"
                                                       if kind == "materialized" else "TYPE COPY\nTARGET_DATASOURCE events\n")
        built = httpx.post(f"{server.url}/v1/build", params={"token": intruder},
                           files=[("data_project://", (f"pipes/hostile_{i}.pipe", datafile))], timeout=60)
        assert built.json().get("result") != "success", (case, built.text)
        assert SECRET not in built.text and list(watch.rglob("*")) == []
    for token in (intruder, server.admin):
        listed = httpx.get(f"{server.url}/v0/pipes", params={"token": token}).json()["pipes"]
        assert not [p["name"] for p in listed if p["name"].startswith("hostile")]
    assert_own_rows_only(server, server.admin, INTRUDERS)
    assert_own_rows_only(server, intruder, SECRET)


def test_the_unmodified_tb_push_cannot_store_a_pipe_that_reaches_out(setting, tmp_path):
    """Into the default workspace (Classic pushes), reading the intruder's database."""
    server, watch, tokens, intruder_db = setting
    texts = corpus(watch, intruder_db)
    for i, case in enumerate(("outfile raw blob", "other database", "system tables")):
        folder = tmp_path / str(i)
        (folder / "pipes").mkdir(parents=True)
        (folder / "pipes" / "exfil.pipe").write_text(f"NODE n\nSQL >\n    {texts[case]}\n\nTYPE ENDPOINT\n")
        assert tb("auth", "--host", server.url, "--token", server.admin, cwd=folder).returncode == 0
        pushed = tb("push", "pipes/exfil.pipe", cwd=folder)
        assert pushed.returncode != 0, (case, pushed.stdout)
        assert INTRUDERS not in pushed.stdout + pushed.stderr
        assert list(watch.rglob("*")) == []
    answer = httpx.get(f"{server.url}/v0/pipes/exfil.json", params={"token": server.admin})
    assert answer.status_code == 404


def test_delete_conditions_and_datafile_expressions_pass_the_gate(setting):
    server, watch, tokens, intruder_db = setting
    intruder = tokens["other workspace's admin"]
    for condition in ("user_id IN (SELECT user_id FROM evtrack.events)", "length(file('/etc/hostname')) > 0"):
        answer = httpx.post(f"{server.url}/v0/datasources/events/delete", params={"token": intruder},
                            data={"delete_condition": condition})
        assert_held(server, watch, answer)
    for schema in ("`x` String `json:$.x` DEFAULT file('/etc/hostname')",
                   f"`x` String `json:$.x` DEFAULT (SELECT any(event_id) FROM {intruder_db}.events)"):
        # Pushed as tb push pushes a datasource, into the default workspace; built into the intruder's.
        answer = httpx.post(f"{server.url}/v0/datasources", params={"token": server.admin, "name": "sneaky",
                                                                     "schema": schema, "format": "ndjson"})
        assert_held(server, watch, answer, INTRUDERS, sent=schema)
        built = httpx.post(f"{server.url}/v1/build", params={"token": intruder}, files=[
            ("data_project://", ("datasources/sneaky.datasource", f"SCHEMA >\n    {schema.replace(intruder_db, 'evtrack')}\n"))])
        assert built.json().get("result") == "failed" and SECRET not in built.text
    assert_own_rows_only(server, intruder, SECRET)
    assert_own_rows_only(server, server.admin, INTRUDERS)
    # The default workspace still has its secret events: nothing above deleted them.
    mine = httpx.get(f"{server.url}/v0/sql", params={"token": server.admin, "q": "SELECT count() AS n FROM events"})
    assert mine.json()["data"] == [{"n": 5}]


def test_refusals_name_what_is_not_allowed_in_tinybirds_words(setting):
    server, watch, tokens, intruder_db = setting
    texts, intruder = corpus(watch), tokens["other workspace's admin"]
    expected = {
        "outfile raw blob": "[Error] INTO OUTFILE is not allowed",
        "other database": "[Error] Resource 'evtrack.events' not found",
        "system tables": "[Error] Resource 'system.tables' not found",
    }
    for case, message in expected.items():
        answer = httpx.get(f"{server.url}/v0/sql", params={"q": texts[case], "token": intruder})
        assert (answer.status_code, answer.json()["error"]) == (400, message)
    allowed = httpx.get(f"{server.url}/v0/sql", params={"q": "SELECT number FROM system.numbers LIMIT 3",
                                                         "token": intruder})
    assert allowed.status_code == 200, allowed.text


# -- DNS rebinding: a loopback name, or one allowed ------------------------------------------------
def test_tokens_answer_only_a_loopback_host(setting):
    server, _, _, _ = setting
    port = server.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert httpx.get(f"{server.url}/tokens", headers={"Host": host}).status_code == 200, host
    refused = httpx.get(f"{server.url}/tokens", headers={"Host": f"evil.example:{port}"})
    assert refused.status_code == 403
    assert "Host 'evil.example' is not allowed" in refused.json()["error"]
    assert "--allow-host evil.example" in refused.json()["error"]
    assert "admin_token" not in refused.text


def test_bound_to_loopback_every_route_refuses_a_foreign_host(setting):
    server, _, _, _ = setting
    for path in ("/", "/tracker.js", "/v0/pipes", "/v0/sql?q=SELECT+1"):
        answer = httpx.get(f"{server.url}{path}", params={"token": server.admin}, headers={"Host": "rebound.example"})
        assert answer.status_code == 403, path
        assert answer.json()["error"].startswith("Host 'rebound.example' is not allowed")


def test_allow_host_adds_a_name(engine):
    from starlette.testclient import TestClient

    from evtrack.server.app import create_app
    from evtrack.server.hosts import HostPolicy

    app = create_app(engine, hosts=HostPolicy.for_bind("127.0.0.1", ["dev.example"]))
    with TestClient(app, base_url="http://dev.example:7181", client=("127.0.0.1", 5000)) as http:
        assert http.get("/tokens").status_code == 200
        assert http.get("/tokens", headers={"Host": "other.example"}).status_code == 403
    # Bound to another address the names of the network are not known: only /tokens is checked.
    lan = create_app(engine, hosts=HostPolicy.for_bind("0.0.0.0"))
    with TestClient(lan, base_url="http://laptop.lan:7181", client=("127.0.0.1", 5000)) as http:
        assert http.get("/v0/pipes", params={"token": engine.tokens.admin.token}).status_code == 200
        assert http.get("/tokens").status_code == 403


# -- the CLI's target: the command line first ------------------------------------------------------
@pytest.fixture
def tinyb_folder(tmp_path, monkeypatch):
    """A folder where `tb auth` ran against a host that answers nothing (port 9 on loopback)."""
    (tmp_path / ".tinyb").write_text(json.dumps({"host": "http://127.0.0.1:9", "token": "p.remote"}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_data_flag_and_variable_beat_a_tinyb(tinyb_folder, monkeypatch):
    runner = CliRunner()
    flag = runner.invoke(cli, ["--data", str(tinyb_folder / "flag"), "deploy", "--project", str(ROOT)])
    assert flag.exit_code == 0, flag.output
    assert (tinyb_folder / "flag" / "project.json").exists()
    monkeypatch.setenv("EVTRACK_DATA", str(tinyb_folder / "env"))
    env = runner.invoke(cli, ["deploy", "--project", str(ROOT)])
    assert env.exit_code == 0, env.output
    assert (tinyb_folder / "env" / "project.json").exists()


def test_a_store_and_a_host_named_at_one_level_are_refused(tinyb_folder, monkeypatch):
    runner = CliRunner()
    both = runner.invoke(cli, ["--data", "./s", "--host", "http://127.0.0.1:9", "--token", "t", "sql", "SELECT 1"])
    assert both.exit_code == 1
    assert "both --data (s) and --host (http://127.0.0.1:9)" in both.output
    monkeypatch.setenv("EVTRACK_DATA", "./s")
    monkeypatch.setenv("TB_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("TB_TOKEN", "t")
    env = runner.invoke(cli, ["sql", "SELECT 1"])
    assert env.exit_code == 1 and "both EVTRACK_DATA (s) and TB_HOST (http://127.0.0.1:9)" in env.output


def test_a_delete_on_a_host_names_it_in_the_prompt(tinyb_folder):
    answer = CliRunner().invoke(cli, ["delete", "events", "--where", "user_id = 'u1'"], input="n\n")
    assert "Delete the rows of events on http://127.0.0.1:9 where user_id = 'u1'" in answer.output
    assert answer.exit_code == 1  # aborted: nothing was sent


# -- the store is its owner's alone ------------------------------------------------------------------
def _open_modes(folder: Path) -> list[str]:
    return [f"{p}: {oct(p.stat().st_mode & 0o777)}" for p in [folder, *folder.rglob("*")]
            if not p.is_symlink() and p.stat().st_mode & 0o077]


def test_a_store_and_all_it_holds_are_its_owners_alone(tmp_path):
    store = tmp_path / "store"
    done = evtrack("--data", str(store), "deploy")
    assert done.returncode == 0, done.stderr
    sent = evtrack("--data", str(store), "send", str(ROOT / "fixtures" / "events.ndjson"))
    assert sent.returncode == 0, sent.stderr
    assert _open_modes(store) == []
    assert stat.S_IMODE(store.stat().st_mode) == 0o700


def test_an_existing_open_store_is_made_private_when_it_opens(tmp_path):
    store = tmp_path / "old"
    assert evtrack("--data", str(store), "deploy").returncode == 0
    for path in [store, *store.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    assert evtrack("--data", str(store), "sql", "SELECT 1").returncode == 0
    assert _open_modes(store) == []
