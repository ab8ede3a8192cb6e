"""Tinybird's JSON shapes: the bodies the server answers with, built from the engine's objects.

Pure functions: no engine call, no I/O. What a shape needs from the database (a datasource's
statistics) is read by the view, off the event loop, and passed in. Ids are derived from names,
so they are stable across restarts; ``STARTED`` stands for every creation and update time.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from ..engine.ingest.statement import quarantine_name
from ..engine.service import resource_id
from ..engine.tokens import Token
from ..project import Datasource, Pipe
from ..scopes import split

__all__ = ["DOCS", "STARTED", "changes", "datasource", "deployment", "error", "import_job", "job", "pipe",
           "resource_id", "timestamp", "token", "workspace"]

DOCS = "https://www.tinybird.co/docs/api-reference"


def timestamp() -> str:
    """Now, as Tinybird writes times in its answers."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


STARTED = timestamp()


def error(message: str) -> dict:
    """The body of every error but the Events API's (plain text) and a template's ``custom_error`` (its own)."""
    return {"error": message, "documentation": DOCS}


def workspace(workspace_id: str, name: str = "evtrack", kind: str = "both") -> dict:
    """``is_forward``: what Forward's ``tb`` reads to tell a Classic workspace (true only for a Forward one)."""
    return {
        "id": workspace_id, "name": name, "user_email": "evtrack@localhost",
        "user_id": workspace_id, "scope": "admin", "is_branch": False, "release": None,
        "main": None, "releases": [], "plan": "dev", "is_forward": kind == "forward",
    }


def listed_workspace(workspace) -> dict:
    """A workspace as Tinybird lists a user's workspaces: with its admin token."""
    return {"id": workspace.id, "name": workspace.name, "token": workspace.tokens.admin.token,
            "role": "admin", "is_branch": False}


def datasource(ds: Datasource, statistics: dict[str, int]) -> dict:
    engine_args = ds.engine
    return {
        "id": resource_id("datasource", ds.name), "name": ds.name, "description": ds.description,
        "cluster": "evtrack", "tags": {}, "created_at": STARTED, "updated_at": STARTED,
        "replicated": False, "version": 0, "project": None, "headers": {}, "shared_with": [],
        "engine": {"engine": engine_args.split("(")[0], "engine_full": engine_args},
        "columns": [
            {"name": c.name, "type": c.type, "codec": None, "default_value": f"DEFAULT {c.default}" if c.default else None,
             "jsonpath": c.jsonpath, "nullable": c.nullable, "normalized_name": c.name}
            for c in ds.columns
        ],
        "schema": {"sql_schema": ds.schema}, "type": "ndjson", "indexes": [], "new_columns_detected": {}, "used_by": [],
        "statistics": statistics,
        "quarantine": quarantine_name(ds.name),
    }


def pipe(p: Pipe, base_url: str) -> dict:
    """``base_url``: the server's, which the pipe's endpoint URL starts with."""
    endpoint, materialized, copy = p.endpoint, p.materialized, p.copy
    nodes = [{
        "id": resource_id("pipe", p.name, n.name), "name": n.name, "sql": n.sql, "description": n.description or None,
        "materialized": n.datasource or None, "cluster": None, "tags": {}, "created_at": STARTED,
        "updated_at": STARTED, "version": 0, "project": None, "result": None, "ignore_sql_errors": False,
        "node_type": "endpoint" if n is endpoint else "materialized" if n is materialized else "copy" if n is copy
        else "standard",
        "dependencies": [], "params": [],
    } for n in p.nodes]
    kind = "endpoint" if endpoint else "materialized" if materialized else "copy" if copy else "default"
    copying = {"copy_node": resource_id("pipe", p.name, copy.name),
               "copy_target_datasource": resource_id("datasource", copy.datasource)} if copy else {}
    return {
        "id": resource_id("pipe", p.name), "name": p.name, "description": p.description or None,
        "endpoint": resource_id("pipe", p.name, endpoint.name) if endpoint else None,
        "type": kind, "created_at": STARTED, "updated_at": STARTED,
        "parent": None, "nodes": nodes, **copying, "url": f"{base_url.rstrip('/')}/v0/pipes/{p.name}.json",
    }


def token(t: Token) -> dict:
    """A token with its value: only routes that need the ``TOKENS`` scope answer it."""
    return {"id": t.id, "name": t.name, "token": t.token, "scopes": [_scope(s) for s in t.scopes]}


def _scope(scope: str) -> dict:
    kind, resource = split(scope)
    return {"type": kind, "resource": resource, "filter": ""} if resource else {"type": scope}


def job(kind: str, pipe_name: str, target: str, created: str, base_url: str, **extra) -> dict:
    """A finished job, as ``GET /v0/jobs/{id}`` describes it."""
    job_id = str(uuid.uuid4())
    return {
        "kind": kind, "id": job_id, "job_id": job_id, "status": "done", "created_at": created,
        "started_at": created, "updated_at": timestamp(), "is_cancellable": False,
        "job_url": f"{base_url.rstrip('/')}/v0/jobs/{job_id}",
        "pipe_id": resource_id("pipe", pipe_name), "pipe_name": pipe_name,
        "datasource": {"id": resource_id("datasource", target), "name": target}, **extra,
    }


def changes(result) -> dict[str, list[str]]:
    """What a build or deployment (an engine ``DeployResult``) created, changed and deleted, as
    Tinybird's CLI reads it: names without their extension, by kind. evtrack has no connections."""
    out = {}
    for kind in ("datasource", "pipe"):
        for change, items in (("new", result.created), ("changed", result.changed), ("deleted", result.deleted)):
            out[f"{change}_{kind}_names"] = [item.rsplit(".", 1)[0] for item in items if item.endswith(f".{kind}")]
    for change in ("new", "changed", "deleted"):
        out[f"{change}_data_connector_names"] = []
    return out


def deployment(deployment_id: str, status: str, live: bool, errors=()) -> dict:
    """A deployment as ``POST /v1/deploy`` answers it, before its name lists."""
    return {"id": deployment_id, "status": status, "live": live, "feedback": [], "errors": list(errors),
            "disconnected_data_source_names": [], "token_changes": [], "data_movements": [],
            "new_data_connector_ids": []}


def import_job(job_id: str, datasource_name: str, created: str, base_url: str, stored: int, quarantined: int,
               mode: str = "append") -> dict:
    """A finished append (``/v1/datasources/{name}/append``) as its answer and ``GET /v0/jobs/{id}`` describe it."""
    return {
        "kind": "import", "id": job_id, "job_id": job_id, "import_id": job_id, "status": "done",
        "created_at": created, "started_at": created, "updated_at": timestamp(), "is_cancellable": False,
        "job_url": f"{base_url.rstrip('/')}/v0/jobs/{job_id}", "mode": mode,
        "datasource": {"id": resource_id("datasource", datasource_name), "name": datasource_name},
        # No "error" field, not even false: the CLI takes an answer that has one for a failure.
        "statistics": {"row_count": stored}, "quarantine_rows": quarantined, "invalid_lines": 0,
        "blocks": [{"block_id": job_id, "process_return": [{"lines": stored + quarantined, "quarantine": quarantined}]}],
    }
