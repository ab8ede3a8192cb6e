"""Workspaces in one store: each its own database, catalog, tokens and log; none reads another.

The expected counts are the lines each test sends, counted by hand.
"""

from __future__ import annotations

import json

import pytest

from evtrack.engine import Engine
from evtrack.errors import BadRequest, Forbidden, NotFound, QueryError

EVENT = '{"event_id": "%s", "event_type": "tap", "user_id": "%s", "timestamp": "2023-03-01 00:00:00"}'


def count(workspace, sql: str = "SELECT count() AS n FROM events") -> int:
    return json.loads(workspace.sql(sql))["data"][0]["n"]


@pytest.fixture
def two(tmp_path, project):
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(project)
        a, b = engine.create_workspace("alpha"), engine.create_workspace("beta")
        for workspace in (a, b):
            workspace.deploy(project)
        yield engine, a, b


def test_two_workspaces_with_the_same_datasources_hold_separate_data(two):
    engine, a, b = two
    a.append("events", "\n".join(EVENT % (f"a{i}", "ua") for i in range(3)).encode())
    b.append("events", (EVENT % ("b0", "ub")).encode())
    assert (count(engine), count(a), count(b)) == (0, 3, 1)
    answer = json.loads(b.query_pipe("user_activity", {"user_id": "ub"}))
    assert answer["rows"] == 1 and answer["data"][0]["event_count"] == 1
    assert json.loads(a.query_pipe("user_activity", {"user_id": "ub"}))["rows"] == 0


def test_a_workspace_cannot_name_another_workspaces_tables(two):
    engine, a, b = two
    b.append("events", (EVENT % ("b0", "ub")).encode())
    for other in (b.database, engine.default.database):
        with pytest.raises(QueryError) as refused:
            a.sql(f"SELECT count() FROM {other}.events")
        assert refused.value.message == f"[Error] Resource '{other}.events' not found"


def test_each_token_finds_its_own_workspace_and_no_other(two):
    engine, a, b = two
    assert engine.find_token(a.tokens.admin.token) == (a, a.tokens.admin)
    assert engine.find_token(b.tokens.get("tracker").token) == (b, b.tokens.get("tracker"))
    assert engine.find_token(engine.default.tokens.admin.token)[0] is engine.default
    assert len({a.tokens.admin.token, b.tokens.admin.token, engine.default.tokens.admin.token}) == 3
    # A JWT is verified by the workspace it names: one signed by alpha for beta's id is refused.
    signed = a.tokens.sign_jwt("viewer", {"get_events": {}}, 60)
    assert engine.find_token(signed, jwt=True)[0] is a
    import jwt as pyjwt

    forged = pyjwt.encode({**pyjwt.decode(signed, options={"verify_signature": False}), "workspace_id": b.id},
                          a.tokens.admin.token, algorithm="HS256")
    with pytest.raises(Forbidden):
        engine.find_token(forged, jwt=True)


def test_workspaces_persist_and_a_deleted_one_leaves_nothing(tmp_path, project):
    with Engine.open(tmp_path / "store") as engine:
        kept = engine.create_workspace("kept")
        kept.deploy(project)
        kept.append("events", (EVENT % ("k0", "uk")).encode())
        gone = engine.create_workspace("gone")
        gone.deploy(project)
        folder, database = gone.folder, gone.database
        engine.delete_workspace("gone")
        assert not folder.exists()
        assert engine.store.run(f"EXISTS DATABASE {database}").strip() == b"0"
        with pytest.raises(BadRequest):
            engine.delete_workspace(engine.default.id)
        with pytest.raises(BadRequest):
            engine.create_workspace("kept")
    with Engine.open(tmp_path / "store") as engine:
        assert [w.name for w in engine.workspaces()] == ["evtrack", "kept"]
        assert count(engine.workspace("kept")) == 1
        with pytest.raises(NotFound):
            engine.workspace("gone")


@pytest.mark.parametrize("name", ["", "9lives", "has space", "dash-ed", "x" * 101])
def test_a_workspace_name_is_letters_numbers_and_underscores(tmp_path, name):
    with Engine.open(tmp_path / "store") as engine, pytest.raises(BadRequest) as refused:
        engine.create_workspace(name)
    assert refused.value.message.startswith(f"Invalid workspace name '{name}'")


# -- over HTTP: a request runs in its token's workspace -------------------------------------------
@pytest.fixture(scope="module")
def served_two(tmp_path_factory):
    import httpx

    from .served import Served, evtrack

    server = Served(tmp_path_factory.mktemp("served_workspaces"))
    try:
        user = httpx.get(f"{server.url}/tokens").json()["user_token"]
        made = {}
        for name in ("alpha", "beta"):
            answer = httpx.post(f"{server.url}/v1/workspaces", params={"name": name, "token": user})
            assert answer.status_code == 200, answer.text
            made[name] = answer.json()
            deployed = evtrack("--host", server.url, "--token", made[name]["token"], "deploy")
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        yield server, user, made
    finally:
        assert server.stop() == 0


def _token(server, admin: str, name: str) -> str:
    import httpx

    tokens = httpx.get(f"{server.url}/v0/tokens", params={"token": admin}).json()["tokens"]
    return next(t["token"] for t in tokens if t["name"] == name)


def test_over_http_each_token_reads_and_writes_its_own_workspace_only(served_two):
    import httpx

    server, user, made = served_two
    alpha, beta = made["alpha"]["token"], made["beta"]["token"]
    for name, events in (("alpha", 3), ("beta", 1)):
        tracker = _token(server, made[name]["token"], "tracker")
        body = "\n".join(EVENT % (f"{name}{i}", f"u_{name}") for i in range(events))
        sent = httpx.post(f"{server.url}/v0/events", params={"name": "events", "wait": "true", "token": tracker},
                          content=body)
        assert sent.json() == {"successful_rows": events, "quarantined_rows": 0}

    def rows(token: str, sql: str):
        return httpx.get(f"{server.url}/v0/sql", params={"q": sql, "token": token})

    assert rows(alpha, "SELECT count() AS n FROM events").json()["data"] == [{"n": 3}]
    assert rows(beta, "SELECT count() AS n FROM events").json()["data"] == [{"n": 1}]
    nothing = rows(server.admin, "SELECT count() AS n FROM events")  # the default workspace deployed nothing
    assert (nothing.status_code, nothing.json()["error"]) == (400, "[Error] Resource 'events' not found")
    # Another workspace's tables are not there to name.
    beta_db = httpx.get(f"{server.url}/v1/user/workspaces", params={"token": user}).json()
    assert [w["name"] for w in beta_db["workspaces"]] == ["evtrack", "alpha", "beta"]
    refused = rows(alpha, "SELECT count() AS n FROM evtrack.events")
    assert (refused.status_code, refused.json()["error"]) == (400, "[Error] Resource 'evtrack.events' not found")
    # A dashboard token reads its own workspace's pipe; a JWT is verified by the workspace it names.
    dashboard = _token(server, alpha, "dashboard")
    read = httpx.get(f"{server.url}/v0/pipes/user_activity.json", params={"token": dashboard, "user_id": "u_beta"})
    assert (read.status_code, read.json()["rows"]) == (200, 0)
    import jwt as pyjwt

    claims = {"workspace_id": made["beta"]["id"], "name": "forged", "exp": 4102444800,
              "scopes": [{"type": "PIPES:READ", "resource": "user_activity"}]}
    forged = pyjwt.encode(claims, alpha, algorithm="HS256")  # signed with alpha's key, naming beta
    answer = httpx.get(f"{server.url}/v0/pipes/user_activity.json", params={"token": forged, "user_id": "u_beta"})
    assert answer.status_code == 403
    genuine = pyjwt.encode({**claims, "workspace_id": made["beta"]["id"]}, beta, algorithm="HS256")
    answer = httpx.get(f"{server.url}/v0/pipes/user_activity.json", params={"token": genuine, "user_id": "u_beta"})
    assert (answer.status_code, answer.json()["data"][0]["event_count"]) == (200, 1)


def test_over_http_workspaces_are_managed_with_the_user_token(served_two):
    import httpx

    server, user, made = served_two
    dashboard = _token(server, made["alpha"]["token"], "dashboard")
    refused = httpx.post(f"{server.url}/v1/workspaces", params={"name": "nope", "token": dashboard})
    assert (refused.status_code, refused.json()["error"]) == (403, "invalid authentication token")
    made_gamma = httpx.post(f"{server.url}/v1/workspaces", params={"name": "gamma", "token": user}).json()
    gone = httpx.delete(f"{server.url}/v1/workspaces/{made_gamma['id']}",
                        params={"token": user, "hard_delete_confirmation": "yes"})
    assert gone.status_code == 200
    listed = httpx.get(f"{server.url}/v1/user/workspaces", params={"token": user}).json()["workspaces"]
    assert "gamma" not in [w["name"] for w in listed]
    default = httpx.delete(f"{server.url}/v1/workspaces/{listed[0]['id']}", params={"token": user})
    assert (default.status_code, default.json()["error"]) == (400, "The default workspace cannot be deleted")
