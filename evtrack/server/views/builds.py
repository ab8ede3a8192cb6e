"""Builds and deployments of a whole project, as Tinybird's current CLI (Forward ``tb``) sends them
to Tinybird Local: ``POST /v1/build`` (``tb build``, ``tb test run``) and ``POST /v1/deploy``
(``tb deploy``).

Both carry the whole project as a multipart body, one ``data_project://`` part per datafile, its
path relative to the project as the file name, so what the body lacks is deleted. A build applies
everything at once, the way ``tb build`` expects a fresh workspace to look: datasources whose
schema cannot change in place are rebuilt (keeping their common columns), and absent resources go
with their data. A deploy deletes an absent datasource only with ``allow_destructive_operations``.
Both run the engine's deploy, so a deployment lands in the workspace's history (``/v1/deployments``).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import scopes
from ...engine import Workspace
from ...errors import BadRequest, EvtrackError
from ...project import Project, parse_datasource, parse_pipe
from .. import shapes
from ..auth import require, workspace_of
from ..bodies import read_form
from ..calls import call

__all__ = ["ProjectErrors", "apply_project", "build", "deploy", "parse_project"]

PROJECT_PART = "data_project://"
VENDORED_PART = "data_project_vendored://"


class ProjectErrors(Exception):
    """Datafiles that cannot be built, each as ``{"filename", "error"}``."""

    def __init__(self, errors: list[dict]):
        super().__init__(errors)
        self.errors = errors


async def _posted_files(request: Request) -> dict[str, str]:
    """The posted datafiles by relative path; vendored workspaces are refused by name."""
    files: dict[str, str] = {}
    errors = []
    for name, value in (await read_form(request)).multi_items():
        if not isinstance(value, UploadFile):
            continue
        try:
            text = (await value.read()).decode("utf-8")
        finally:
            await value.close()
        if name == PROJECT_PART:
            files[value.filename or ""] = text
        elif name == VENDORED_PART:
            errors.append({"filename": value.filename, "error": "Vendored workspaces (vendor/) are not supported by "
                                                                "evtrack serve: build that workspace on its own"})
    if errors:
        raise ProjectErrors(errors)
    return files


def parse_project(files: dict[str, str]) -> Project:
    """The posted datafiles parsed with tinybird-cli's parser; every file that fails is named."""
    datasources, pipes, errors, where = {}, {}, [], {}
    for path, text in sorted(files.items()):
        stem, kind = PurePosixPath(path).stem, PurePosixPath(path).suffix
        if kind not in (".datasource", ".pipe"):
            feature = "connections" if kind == ".connection" else f"'{kind}' files"
            errors.append({"filename": path, "error": f"{feature} are not supported by evtrack serve"})
            continue
        if f"{stem}{kind}" in where:
            errors.append({"filename": path, "error": f"{where[stem + kind]} defines {stem}{kind} too"})
            continue
        where[f"{stem}{kind}"] = path
        try:
            if kind == ".datasource":
                datasources[stem] = parse_datasource(stem, text)
            else:
                pipes[stem] = parse_pipe(stem, text)
        except EvtrackError as exc:
            errors.append({"filename": path, "error": exc.message})
    if errors:
        raise ProjectErrors(errors)
    return Project(datasources=datasources, pipes=pipes)


def _blamed(message: str, files: dict[str, str]) -> list[dict]:
    """A deploy error as the CLI prints it: under the file it is about, when the message names one."""
    for path in sorted(files):
        stem = PurePosixPath(path).stem
        if f"'{stem}'" in message or message.startswith((f"{stem}.", f"pipe '{stem}'", f"Datasource '{stem}'")):
            return [{"filename": path, "error": message}]
    return [{"filename": "", "error": message}]


def apply_project(workspace: Workspace, project: Project, destructive: bool, staged: str | None = None):
    """Deploy ``project`` over the workspace (promoting the staged deployment ``staged``). Without
    ``destructive``, absent pipes still go (as on Tinybird) but an absent datasource is refused, with
    the option that allows it."""
    removals = _refuse_deletions(workspace, project, destructive)
    return workspace.deploy(project, force=True, allow_destructive=bool(removals), staged=staged)


def _refuse_deletions(workspace: Workspace, project: Project, destructive: bool) -> list[str]:
    """What deploying ``project`` would remove; a BadRequest if that takes a datasource without ``destructive``."""
    removals = workspace.removals(project)
    gone = [name for name in removals if name.endswith(".datasource")]
    if gone and not destructive:
        raise BadRequest(f"The deployment would delete {', '.join(gone)} and its data: deploy with "
                         "--allow-destructive-operations to delete it")
    return removals


async def _run(request: Request, destructive: bool) -> tuple[Workspace, dict, object]:
    """(workspace, files, DeployResult), or ProjectErrors."""
    workspace = workspace_of(request)
    require(request, workspace.tokens, scopes.ADMIN)
    files = await _posted_files(request)
    project = await call(parse_project, files)
    try:
        return workspace, files, await call(apply_project, workspace, project, destructive)
    except EvtrackError as exc:
        raise ProjectErrors(_blamed(exc.message, files)) from None


async def build(request: Request) -> Response:
    try:
        _, _, result = await _run(request, destructive=True)
    except ProjectErrors as exc:
        return JSONResponse({"result": "failed", "errors": exc.errors}, status_code=400)
    return JSONResponse({"result": "success", "build": {**shapes.changes(result), "feedback": []}})


async def deploy(request: Request) -> Response:
    """``tb deploy`` (``auto_promote=true``) deploys at once; ``tb deployment create`` without it stages
    the deployment, kept until ``set-live`` or a discard; ``check=true`` only plans."""
    destructive = request.query_params.get("allow_destructive_operations", "").lower() == "true"
    if request.query_params.get("check", "").lower() == "true":
        return await _plan(request, destructive, stage=False)
    if request.query_params.get("auto_promote", "").lower() != "true":
        return await _plan(request, destructive, stage=True)
    workspace = workspace_of(request)
    try:
        try:
            await call(workspace.check_none_staged)
        except EvtrackError as exc:
            raise ProjectErrors([{"filename": "", "error": exc.message}]) from None
        workspace, _, result = await _run(request, destructive)
    except ProjectErrors as exc:
        history = await call(workspace.deployments)
        failed = history[-1]["id"] if history and history[-1].get("status") == "failed" else ""
        return JSONResponse({"result": "failed", "deployment": shapes.deployment(failed, "failed", False, exc.errors)},
                            status_code=400)
    changes = shapes.changes(result)
    outcome = "success" if any(changes.values()) else "no_changes"
    return JSONResponse({"result": outcome,
                         "deployment": {**shapes.deployment(result.id, "data_ready", True), **changes}})


async def _plan(request: Request, destructive: bool, stage: bool) -> Response:
    """``tb deploy --check``: the datafiles parse, nothing would be deleted that may not be, and the
    project deploys into a scratch database with no data (its SQL, its materialized pipes' columns);
    what would change is listed. With ``stage``, the checked project is kept as a staged deployment,
    which ``set-live`` applies with the engine's deploy."""
    workspace = workspace_of(request)
    require(request, workspace.tokens, scopes.ADMIN)
    staged = ""
    try:
        files = await _posted_files(request)
        project = await call(parse_project, files)
        try:
            plan = await call(_planned, workspace, project, destructive)
            if any(plan.values()):
                await call(request.app.state.engine.check, project)  # its SQL, in a scratch database
                if stage:
                    staged = await call(workspace.stage, files, _as_history(plan), destructive)
        except EvtrackError as exc:
            raise ProjectErrors(_blamed(exc.message, files)) from None
    except ProjectErrors as exc:
        return JSONResponse({"result": "failed", "deployment": shapes.deployment("", "failed", False, exc.errors)},
                            status_code=400)
    outcome = "success" if any(plan.values()) else "no_changes"
    status = "data_ready" if staged else "calculating"
    return JSONResponse({"result": outcome, "deployment": {**shapes.deployment(staged, status, False), **plan}})


def _as_history(plan: dict[str, list[str]]) -> dict[str, list[str]]:
    """A plan's name lists as the deployment history writes what a deploy changed: ``name.kind``."""
    return {change: [f"{name}.{kind}" for kind in ("datasource", "pipe") for name in plan[f"{tinybird}_{kind}_names"]]
            for change, tinybird in (("created", "new"), ("changed", "changed"), ("deleted", "deleted"))}


def _planned(workspace: Workspace, project: Project, destructive: bool) -> dict[str, list[str]]:
    removals = _refuse_deletions(workspace, project, destructive)
    catalog = workspace.catalog
    deployed = {"datasource": catalog.datasources, "pipe": {name: catalog.pipe(name) for name in catalog.pipe_names()}}
    posted = {"datasource": project.datasources, "pipe": project.pipes}
    plan = {}
    for kind in ("datasource", "pipe"):
        old, new = deployed[kind], posted[kind]
        plan[f"new_{kind}_names"] = sorted(name for name in new if name not in old)
        plan[f"changed_{kind}_names"] = sorted(name for name in new if name in old and old[name].source != new[name].source)
        plan[f"deleted_{kind}_names"] = sorted(item.rsplit(".", 1)[0] for item in removals if item.endswith(f".{kind}"))
    return plan
