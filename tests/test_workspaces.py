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
