"""Deploying to a Tinybird workspace as it expects to be changed: a Forward workspace through a
deployment of the whole project, a Classic one through tinybird-cli's ``tb push``.

The kind is the workspace's own (read once per command, never asked of the user):

1. ``GET /v0/workspace`` carries ``is_forward`` (Forward's ``tb`` reads it to tell a Classic
   workspace that may migrate);
2. without it, ``GET /v1/workspace`` answers only in a Forward workspace (Forward's ``tb`` takes its
   failure for a Classic one).

A Forward deployment is what ``tb --cloud deploy`` does: ``POST /v1/deploy`` with every datafile of
the project (``check=true`` to validate only; ``auto_promote=true`` unless it is to stay staged;
``allow_destructive_operations=true`` to let a datasource go), then ``GET /v1/deployments/{id}``
until it is ready (and live, when promoted). What the project no longer has is deleted: a pipe
always, a datasource only when destruction is allowed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .client import Client, RemoteError
from .errors import BadRequest, EvtrackError
from .project import project_files

__all__ = ["FORWARD", "CLASSIC", "Outcome", "deploy", "workspace_kind", "wrong_kind"]

FORWARD, CLASSIC = "forward", "classic"
POLL_SECONDS = 0.5
WAIT_SECONDS = 600
_DONE = {"data_ready"}
_GONE = {"failed", "deleting", "deleted"}


def workspace_kind(client: Client) -> str:
    """``forward`` or ``classic``, as the workspace says."""
    info = client.workspace()
    if isinstance(info.get("is_forward"), bool):
        return FORWARD if info["is_forward"] else CLASSIC
    try:
        client.workspace("v1")
    except RemoteError as exc:
        if exc.status in (401, 403):
            raise
        return CLASSIC
    return FORWARD


def wrong_kind(host: str, found: str, asked: str) -> BadRequest:
    if found == CLASSIC:
        return BadRequest(f"the workspace at {host} is a Classic workspace, not a Forward one: drop --{asked} "
                          "(evtrack deploys a Classic workspace with tinybird-cli's tb push), or migrate it to "
                          "Forward (Forward's `tb migrate-to-forward`)")
    return BadRequest(f"the workspace at {host} is a Forward workspace, not a Classic one: drop --{asked} "
                      "(a Forward workspace changes through deployments, which evtrack deploy makes)")


@dataclass
class Outcome:
    id: str = ""
    status: str = ""
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{label:<10} {name}" for label in ("created", "changed", "deleted") for name in getattr(self, label)]


def project_texts(project_dir: Path) -> dict[str, str]:
    """The project's datafiles by their path in it, as Forward's ``tb`` posts them."""
    project_dir = Path(project_dir)
    return {path.relative_to(project_dir).as_posix(): path.read_text(encoding="utf-8")
            for path in project_files(project_dir)}


def deploy(client: Client, project_dir: Path, *, check: bool = False, stage: bool = False,
           allow_destructive: bool = False, progress: Callable[[str], None] = lambda line: None,
           sleep=time.sleep, clock=time.monotonic) -> Outcome:
    """Deploy the project to the Forward workspace behind ``client``; its outcome, or an EvtrackError
    naming each file's errors."""
    params = {"from": "cli"}
    if check:
        params["check"] = "true"
    elif not stage:
        params["auto_promote"] = "true"
    if allow_destructive:
        params["allow_destructive_operations"] = "true"
    answer = client.deploy(project_texts(project_dir), params)
    found = answer.get("deployment") or {}
    if answer.get("result") == "failed":
        raise EvtrackError(_failure(found, answer), status=400)
    outcome = _outcome(found, answer.get("result") == "no_changes")
    if check or answer.get("result") == "no_changes" or not outcome.id:
        return outcome
    progress(f"deployment {outcome.id}: {found.get('status', 'calculating')}")
    deadline = clock() + WAIT_SECONDS
    while True:
        status, live = found.get("status", ""), bool(found.get("live"))
        if status in _GONE:
            raise EvtrackError(f"deployment {outcome.id} {status}: " + (_failure(found, {}) or "see its errors"),
                               status=400)
        if status in _DONE and (stage or live):
            break
        if clock() > deadline:
            raise EvtrackError(f"deployment {outcome.id} is still {status} after {WAIT_SECONDS} s", status=504)
        sleep(POLL_SECONDS)
        found = {**found, **client.deployment(outcome.id)}
        progress(f"deployment {outcome.id}: {found.get('status')}{' (live)' if found.get('live') else ''}")
    outcome.status = "live" if found.get("live") else "staged"
    return outcome


def _outcome(found: dict, unchanged: bool) -> Outcome:
    def names(kind: str) -> list[str]:
        return [f"{name}.datasource" for name in found.get(f"{kind}_datasource_names", [])] + \
               [f"{name}.pipe" for name in found.get(f"{kind}_pipe_names", [])]

    return Outcome(id=str(found.get("id") or ""), status="unchanged" if unchanged else found.get("status", ""),
                   created=names("new"), changed=names("changed"), deleted=names("deleted"))


def _failure(found: dict, answer: dict) -> str:
    errors = [f"{e.get('filename') or 'project'}: {e.get('error')}" if isinstance(e, dict) else str(e)
              for e in found.get("errors") or answer.get("errors") or []]
    feedback = [f"{f.get('resource') or 'project'}: {f.get('message')}" for f in found.get("feedback") or []
                if isinstance(f, dict) and str(f.get("level", "")).upper() == "ERROR"]
    return "; ".join(errors + feedback) or answer.get("error") or "the deployment failed"
