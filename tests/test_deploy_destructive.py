"""A deploy deletes what the project no longer has only when asked, listing each drop first."""

from __future__ import annotations

import json

import pytest

from evtrack.engine import Engine
from evtrack.errors import BadRequest
from evtrack.project import load_project

from .served import evtrack
from .test_exactly_once import make_project


def tables(engine) -> set[str]:
    return set(engine.store.run("SELECT name FROM system.tables WHERE database = 'evtrack'", "TSVRaw").decode().split())


def test_a_destructive_deploy_drops_what_the_project_no_longer_has(tmp_path):
    full, store = make_project(tmp_path / "full"), tmp_path / "store"
    assert evtrack("--data", str(store), "deploy", "--project", str(full)).returncode == 0
    (full / "pipes" / "plain_ids_mv.pipe").unlink()
    (full / "datasources" / "plain_ids.datasource").unlink()
    kept = evtrack("--data", str(store), "deploy", "--project", str(full))  # not asked: nothing goes
    assert kept.returncode == 0 and "deleted" not in kept.stdout
    dropped = evtrack("--data", str(store), "deploy", "--allow-destructive", "--project", str(full))
    assert dropped.returncode == 0, dropped.stderr
    lines = dropped.stdout.splitlines()
    assert lines[:2] == ["will drop  plain_ids_mv.pipe", "will drop  plain_ids.datasource"]
    assert lines[-2:] == ["deleted    plain_ids_mv.pipe", "deleted    plain_ids.datasource"]
    with Engine.open(store) as engine:
        assert "plain_ids_mv" not in engine.pipe_names() and "plain_ids" not in engine.catalog.datasource_names()
        assert not {name for name in tables(engine) if name.startswith("plain_ids")}
        assert engine.deployments()[-1]["deleted"] == ["plain_ids_mv.pipe", "plain_ids.datasource"]
        assert json.loads(engine.sql("SELECT count() AS n FROM events"))["data"] == [{"n": 0}]  # the rest stays


def test_a_datasource_a_remaining_pipe_reads_is_not_dropped(tmp_path, project):
    with Engine.open(tmp_path / "store") as engine:
        engine.deploy(load_project(make_project(tmp_path / "full")))
        reduced = load_project(make_project(tmp_path / "reduced"))
        del reduced.datasources["plain_ids"]  # its pipe stays in the project
        with pytest.raises(BadRequest) as refused:
            engine.deploy(reduced, allow_destructive=True)
        assert refused.value.message == ("Datasource 'plain_ids' is not in the project, but the pipes plain_ids_mv "
                                         "use it: add it back, or change them first")
        assert "plain_ids" in engine.catalog.datasource_names()
