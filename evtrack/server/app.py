"""The app: the one routing table, and ``create_app(engine)``, which puts it together with the
lifespan (the ingest buffer, the copy scheduler), CORS and the error handlers.

Tinybird's HTTP API over the embedded engine, as a thin skin: each route's view
(``server.views``) checks the token's scope, reads its parameters, calls the engine off the event
loop (``server.calls``) and answers with Tinybird's shapes (``server.shapes``). Errors are
``EvtrackError``s, answered by one handler (``server.failures``).
"""

from __future__ import annotations

import contextlib
from functools import partial

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from ..engine import FORMATS, Engine
from ..errors import EvtrackError
from .buffer import IngestBuffer
from .calls import call
from .cors import CORSMiddleware
from .hosts import HostMiddleware, HostPolicy
from .kinds import changes_deployment, classic_only, creates_datasource, forward_only
from .failures import EVENTS_PATH, HANDLERS
from .pipestats import PipeStats
from .views import (builds, copies, datasources, deployments, endpoints, events, imports, jobs, lifecycle, local,
                    pipes, sql, tokens, variables, web, workspace, workspaces)

__all__ = ["DEFAULT_MAX_BODY", "create_app", "routes"]

DEFAULT_MAX_BODY = 10 * 1024 * 1024


def routes() -> list[Route]:
    """Every route of the server. Starlette takes the first whose path and method match, so the
    endpoint formats come before ``/v0/pipes/{name}``, which serves what is left of that path."""
    return [
        Route(EVENTS_PATH, events.send, methods=["POST"]),
        *[Route(f"/v0/pipes/{{name}}.{fmt}", partial(endpoints.read, fmt=fmt), methods=["GET", "POST"])
          for fmt in FORMATS],
        Route("/v0/sql", sql.query, methods=["GET", "POST"]),
        Route("/v0/sql_tables", sql.tables, methods=["POST"]),

        Route("/v0/workspace", workspace.describe, methods=["GET"]),
        Route("/v1/workspace", forward_only(workspace.describe), methods=["GET"]),
        Route("/v0/datasources", datasources.list_all, methods=["GET"]),
        Route("/v0/datasources", classic_only(datasources.create_or_append, creates_datasource), methods=["POST"]),
        Route("/v0/datasources/{name}", datasources.describe, methods=["GET"]),
        Route("/v0/datasources/{name}/alter", classic_only(datasources.alter), methods=["POST"]),
        Route("/v0/datasources/{name}/delete", lifecycle.delete_rows, methods=["POST"]),
        Route("/v0/datasources/{name}/truncate", lifecycle.truncate, methods=["POST"]),
        Route("/v0/datasources/{name}", classic_only(lifecycle.drop), methods=["DELETE"]),
        Route("/v0/pipes", pipes.list_all, methods=["GET"]),
        Route("/v0/pipes", classic_only(pipes.create), methods=["POST"]),
        Route("/v0/pipes/{name}.pipe", pipes.datafile, methods=["GET"]),
        Route("/v0/pipes/{name}", pipes.describe, methods=["GET"]),
        Route("/v0/pipes/{name}", endpoints.read_json, methods=["POST"]),
        Route("/v0/pipes/{name}", classic_only(pipes.delete), methods=["DELETE"]),
        Route("/v0/pipes/{name}/nodes/{node}/endpoint", classic_only(pipes.set_endpoint), methods=["POST"]),
        Route("/v0/pipes/{name}/nodes/{node}/analysis", pipes.analyze_node, methods=["GET"]),
        Route("/v0/pipes/{name}/nodes/{node}/copy", classic_only(copies.set_up), methods=["PUT"]),
        Route("/v0/pipes/{name}/copy", copies.run, methods=["POST"]),
        Route("/v0/jobs", jobs.list_all, methods=["GET"]),
        Route("/v0/jobs/{job_id}", jobs.get, methods=["GET"]),
        Route("/v0/tokens", tokens.list_or_create, methods=["GET", "POST"]),
        Route("/v0/tokens/{name}", tokens.one, methods=["GET", "PUT"]),

        Route("/tokens", tokens.discover, methods=["GET"]),
        Route("/v1/user/workspaces", workspaces.list_all, methods=["GET"]),
        Route("/v1/user/workspaces/", workspaces.list_all, methods=["GET"]),
        Route("/v0/user/workspaces", workspaces.list_all, methods=["GET"]),  # Classic `tb test run`
        Route("/v0/user/workspaces/", workspaces.list_all, methods=["GET"]),
        Route("/v1/workspaces", workspaces.create, methods=["POST"]),
        Route("/v1/workspaces/{id}", workspaces.delete, methods=["DELETE"]),
        Route("/v1/deployments", deployments.list_all, methods=["GET"]),
        Route("/v1/deployments/{id}", deployments.one, methods=["GET"]),
        Route("/v1/deployments/{id}", forward_only(deployments.discard), methods=["DELETE"]),
        Route("/v1/deployments/{id}/set-live", forward_only(deployments.set_live), methods=["POST"]),

        # Tinybird Local for Forward tb: builds, deploys, appends, secrets, version
        Route("/v1/build", forward_only(builds.build), methods=["POST"]),
        Route("/v1/deploy", forward_only(builds.deploy, changes_deployment), methods=["POST"]),
        Route("/v1/datasources/{name}/append", imports.append, methods=["POST"]),
        Route("/v1/datasources/{name}/replace", imports.replace, methods=["POST"]),
        Route("/v0/variables", variables.list_all, methods=["GET"]),
        Route("/v0/variables", variables.create, methods=["POST"]),
        Route("/v0/variables/{name}", variables.one, methods=["GET"]),
        Route("/v0/variables/{name}", variables.update, methods=["PUT"]),
        Route("/v0/variables/{name}", variables.delete, methods=["DELETE"]),
        Route("/version", local.version, methods=["GET"]),
        Route("/v0/health", local.health, methods=["GET"]),
        Route("/examples/query.http", local.example_url, methods=["GET"]),
        Route("/", web.static, methods=["GET", "HEAD"]),
        Route("/tracker.js", web.static, methods=["GET", "HEAD"]),
    ]


def create_app(engine: Engine, *, max_body: int = DEFAULT_MAX_BODY, buffer: IngestBuffer | None = None,
               scheduler=None, hosts: HostPolicy = HostPolicy()) -> Starlette:
    """``scheduler`` (an ``evtrack.engine.change.copies.CopyScheduler``), when given, runs the scheduled copy pipes.
    ``hosts``: the names it answers to (``evtrack.server.hosts``); by default, only the loopback-only
    routes are checked."""
    buffer = buffer or IngestBuffer(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # The first look at a datasource parses the deployed datafiles, loading tinybird-cli's parser (a
        # tenth of a second): here, off the loop, rather than in the first request. One that no longer
        # parses fails the requests that use it, as it would without this.
        with contextlib.suppress(EvtrackError):
            await call(lambda: engine.datasources)
        await buffer.start()
        app.state.pipestats.start()
        if scheduler is not None:
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                await call(scheduler.stop)
            for each in list(app.state.buffers.values()):
                await each.stop()  # a clean shutdown flushes what was acknowledged
            await app.state.pipestats.stop()

    app = Starlette(lifespan=lifespan, routes=routes(), middleware=[Middleware(HostMiddleware, policy=hosts), Middleware(CORSMiddleware)],
                    exception_handlers=HANDLERS)
    app.state.engine = engine
    app.state.max_body = max_body
    app.state.buffer = buffer
    app.state.buffers = {engine.default.id: buffer}  # one per workspace, each writing its own log
    app.state.pipestats = PipeStats()
    return app
