"""The embedded engine: one chDB store, holding workspaces, each a Tinybird project.

    engine = Engine.open(Path(".evtrack"))
    engine.deploy(load_project(Path(".")))               # the default workspace
    engine.append("events", Path("fixtures/events.ndjson"))
    engine.query_pipe("user_activity", {"user_id": "user_abc"})
    staging = engine.create_workspace("staging")         # another project: its own data and tokens
    staging.deploy(load_project(Path(".")))

A workspace (``evtrack.engine.workspace``) is a ClickHouse database of the store plus a folder
with its deployed snapshot, tokens, write-ahead log and deployments. chDB allows one data folder
per process, so workspaces live side by side inside the one store. The default workspace is the
store as it always was (the database ``evtrack``, its files at the store's root), so a store made
before workspaces opens unchanged and every command without a workspace uses it. The others live
in ``workspaces/<folder>/`` and the database ``w_<folder>``; ``workspaces.json`` lists them. The
user token (``user.json``) manages them, as Tinybird's user token does.

``Engine`` owns the store and the list of workspaces, and answers for the default workspace.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from ..errors import BadRequest, NotFound
from ..times import utc_text
from .catalog import DATABASE
from .store import QueryLimits, Store
from .tokens import Token
from .workspace import FORMATS, AppendResult, DeployResult, Workspace, deployed_pipes, read_snapshot

__all__ = ["Engine", "Workspace", "AppendResult", "DeployResult", "FORMATS", "deployed_pipes", "read_snapshot"]

DEFAULT_NAME = "evtrack"
_REGISTRY = "workspaces.json"
_USER = "user.json"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_CHECK, _CHECKS = "check_", "checks"  # scratch databases and folders of Engine.check


class Engine:
    def __init__(self, store: Store):
        self.store = store
        # What each read may use (time, memory, result size), in every workspace; None: no limits.
        self.read_limits: QueryLimits | None = None
        self._lock = threading.Lock()  # creating and deleting workspaces
        self.default = Workspace(store, store.path, DATABASE, DEFAULT_NAME, owner=self)
        self._others: dict[str, Workspace] = {}
        for entry in self._registry():
            self._others[entry["id"]] = Workspace(store, self._folder(entry["folder"]), entry["database"],
                                                  entry["name"], owner=self, kind=entry.get("kind", "forward"))
        self._drop_checks()  # of a process that stopped in the middle of one

    @classmethod
    def open(cls, path: Path, memory_budget: int | None = None) -> "Engine":
        return cls(Store(Path(path), memory_budget))

    def close(self) -> None:
        for workspace in self.workspaces():
            workspace.close()
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- workspaces -----------------------------------------------------------------------
    def workspaces(self) -> list[Workspace]:
        """The default workspace first, then the others as they were created."""
        return [self.default, *self._others.values()]

    def workspace(self, ref: str) -> Workspace:
        """A workspace by id or name."""
        found = next((w for w in self.workspaces() if ref in (w.id, w.name)), None)
        if found is None:
            raise NotFound(f"Workspace '{ref}' not found")
        return found

    def create_workspace(self, name: str, kind: str = "forward") -> Workspace:
        """A new, empty workspace: its own database, folder, tokens (an admin token) and log; Forward,
        as Tinybird Local makes them, unless ``kind`` says otherwise."""
        if not _NAME.fullmatch(name or ""):
            raise BadRequest(f"Invalid workspace name '{name}': use letters, numbers and underscores, "
                             "starting with a letter (at most 100)")
        with self._lock:
            if any(w.name == name for w in self.workspaces()):
                raise BadRequest(f"Workspace '{name}' already exists")
            folder = uuid.uuid4().hex[:12]
            database = f"w_{folder}"
            self.store.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            workspace = Workspace(self.store, self._folder(folder), database, name, owner=self, kind=kind)
            self._others[workspace.id] = workspace
            self._save_registry(self._registry() + [{"id": workspace.id, "name": name, "folder": folder,
                                                     "database": database, "created": _now(), "kind": kind}])
            return workspace

    def delete_workspace(self, ref: str) -> Workspace:
        """Drop a workspace with its data, tokens and log (the default one cannot be deleted)."""
        with self._lock:
            workspace = self.workspace(ref)
            if workspace is self.default:
                raise BadRequest("The default workspace cannot be deleted")
            self._save_registry([e for e in self._registry() if e["id"] != workspace.id])
            del self._others[workspace.id]
            workspace.close()
            self.store.execute(f"DROP DATABASE IF EXISTS `{workspace.database}` SYNC")
            shutil.rmtree(workspace.folder, ignore_errors=True)
            return workspace

    def find_token(self, value: str | None, jwt: bool = False) -> tuple[Workspace, Token] | None:
        """The workspace whose token (or, with ``jwt``, whose signed JWT) ``value`` is, and the token."""
        if not value:
            return None
        if jwt and value.count(".") == 2:
            claimed = _jwt_workspace(value)
            workspace = next((w for w in self.workspaces() if w.id == claimed), self.default)
            token = workspace.tokens.find(value, jwt=True)
            return (workspace, token) if token is not None else None
        found = None
        for workspace in self.workspaces():  # every token compared, in constant time each
            token = workspace.tokens.find(value)
            if token is not None:
                found = (workspace, token)
        return found

    @property
    def user_token(self) -> str:
        """The token that manages workspaces (created with the store's first use of it)."""
        path = self.store.path / _USER
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))["token"]
        token = f"p.{secrets.token_urlsafe(32)}"
        fd, tmp = tempfile.mkstemp(dir=self.store.path, prefix=".user-")  # created 0600
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps({"token": token}))
        os.replace(tmp, path)
        return token

    def check(self, project) -> None:
        """Deploy ``project`` into a scratch database with no data, then drop it: what a deploy of it
        would refuse (its SQL, a materialized pipe's columns) is refused now, and nothing else changes."""
        folder = uuid.uuid4().hex[:12]
        database, path = f"{_CHECK}{folder}", self.store.path / _CHECKS / folder
        path.mkdir(parents=True)
        self.store.execute(f"CREATE DATABASE `{database}`")
        scratch = Workspace(self.store, path, database, f"{_CHECK}{folder}", owner=self)
        try:
            scratch.deploy(project, force=True)
        finally:
            scratch.close()
            self.store.execute(f"DROP DATABASE IF EXISTS `{database}` SYNC")
            shutil.rmtree(path, ignore_errors=True)

    def _drop_checks(self) -> None:
        listed = self.store.run(f"SELECT name FROM system.databases WHERE startsWith(name, '{_CHECK}')", "TSV")
        for database in listed.decode().split():
            self.store.execute(f"DROP DATABASE IF EXISTS `{database}` SYNC")
        shutil.rmtree(self.store.path / _CHECKS, ignore_errors=True)

    def _folder(self, name: str) -> Path:
        folder = self.store.path / "workspaces" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _registry(self) -> list[dict]:
        path = self.store.path / _REGISTRY
        return json.loads(path.read_text(encoding="utf-8"))["workspaces"] if path.exists() else []

    def _save_registry(self, entries: list[dict]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.store.path, prefix=".workspaces-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps({"workspaces": entries}, indent=2))
        os.replace(tmp, self.store.path / _REGISTRY)


# What the engine answers for its default workspace: every command that names no workspace.
_DEFAULT_WORKSPACE = (
    "catalog", "tokens", "wal", "history", "changes", "service", "database", "folder", "datasources",
    "deploy", "deploy_datasource", "deploy_pipe", "drop_pipe", "plan_datasource", "deployments", "removals",
    "pipe", "pipes", "pipe_names", "datasource", "datasource_stats", "tables",
    "append", "append_rows", "append_many", "replay_log", "run_copy", "pipe_query", "query_pipe", "sql", "run_read",
    "delete", "truncate", "drop_datasource", "replace", "deletions", "export",
)
for _name in _DEFAULT_WORKSPACE:
    setattr(Engine, _name, property(lambda self, name=_name: getattr(self.default, name),
                                    doc=f"The default workspace's ``{_name}``."))


def _jwt_workspace(value: str) -> str:
    """The workspace a JWT claims, read without verifying it (its workspace's tokens verify it)."""
    import jwt as pyjwt

    try:
        return str(pyjwt.decode(value, options={"verify_signature": False}).get("workspace_id", ""))
    except pyjwt.PyJWTError:
        return ""


def _now() -> str:
    return utc_text()
