from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evtrack.engine import Engine
from evtrack.project import load_project

from . import reference

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "events.ndjson"
BAD_FIXTURE = ROOT / "fixtures" / "bad_events.ndjson"


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch):
    """No test sees the developer's Tinybird or evtrack settings."""
    import os

    for name in list(os.environ):
        if name.startswith(("TB_", "EVTRACK_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def project():
    return load_project(ROOT)


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory, project) -> Path:
    """A store with the project deployed and the fixture sent, shared by read-only tests."""
    path = tmp_path_factory.mktemp("store")
    with Engine.open(path) as engine:
        engine.deploy(project)
        result = engine.append("events", FIXTURE)
        assert (result.successful_rows, result.quarantined_rows) == (6000, 0)
    return path


@pytest.fixture
def engine(store_dir):
    """The shared store, opened for one test (one chDB path per process: closed after)."""
    with Engine.open(store_dir) as opened:
        yield opened


@pytest.fixture(scope="session")
def deployed_store(tmp_path_factory, project) -> Path:
    """A store with the project deployed and nothing sent: what `fresh_engine` starts from."""
    path = tmp_path_factory.mktemp("deployed") / "store"
    with Engine.open(path) as engine:
        engine.deploy(project)
    return path


def copy_store(source: Path, target: Path) -> Path:
    """A closed store, copied: its own tables, tokens and logs, as the deploy left them (the
    store's links between its folders are relative, so the copy reads its own files). Deploying
    the project takes about 1.5 s; copying its result, a tenth of that."""
    shutil.copytree(source, target, symlinks=True)
    return target


@pytest.fixture
def fresh_engine(tmp_path, deployed_store):
    with Engine.open(copy_store(deployed_store, tmp_path / "store")) as opened:
        yield opened


@pytest.fixture(scope="session")
def rows():
    return reference.load(FIXTURE)


def data(body: bytes) -> list[dict]:
    return json.loads(body)["data"]


# The files that take longest, first: the suite runs on two workers a file at a time (pytest-xdist,
# --dist loadfile), and the short files then fill in while the long ones run, so both end together.
LONGEST_FIRST = ("test_change_kills_more.py", "test_forward_tb.py", "test_tracker.py", "test_security.py", "test_durability.py", "test_lifecycle.py",
                 "test_exactly_once.py", "test_change_kills.py", "test_deploy_crash.py", "test_serve_limits.py",
                 "test_classic_project.py", "test_remote_deploy.py", "test_formats.py", "test_sql_guard.py",
                 "test_memory.py", "test_browser.py", "test_full_disk.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
