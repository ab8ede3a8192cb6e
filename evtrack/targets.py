"""The targets a command runs against, and the protocol they share.

- ``Embedded``: the chDB store in a folder, opened only when something must run.
- ``Remote``: any Tinybird API (Tinybird Cloud or Local, or ``evtrack serve``) through ``Client``;
  deploys go to a Forward workspace as a deployment (``evtrack.deployments``), to a Classic one
  through tinybird-cli's own ``tb push``.

Both are a ``Target``: they list and look up pipes, query them, run SQL and copy pipes, deploy a
project, and say how a send reaches them (a ``Delivery``). A copy run answers a ``CopyResult``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from .engine import FORMATS, AppendResult, Engine, deployed_pipes
from .engine.ingest.statement import MAX_LINE_BYTES
from .engine.tokens import TokenStore
from .errors import BadRequest, EvtrackError
from .project import Pipe, load_project, parse_pipe, pipe_text, project_files
from .server import running_server
from .settings import Secret
from .settings import Target as Settings

if TYPE_CHECKING:
    from .client import Client
    from .sender import Receipt, SendOptions

# The HTTP client (httpx) and the sender are imported where they are used, so a query on the embedded
# store loads neither.

__all__ = ["CopyResult", "Delivery", "DeployOptions", "Embedded", "Remote", "Removed", "Target", "open_for_app", "open_target", "tb_push"]


@dataclass(frozen=True)
class Delivery:
    """How a send reaches a target."""

    # One batch of NDJSON lines, and what became of them; with a key (the same on a resend of the same
    # lines), a target that can makes a resend a no-op.
    deliver: Callable[..., Receipt]
    max_line: int | None  # a longer line is rejected before sending; None: the target checks every line
    whole_file: Callable[[Path], Receipt] | None  # a whole file in one statement, where the target can
    concurrency: int  # batches in flight at once


@dataclass(frozen=True)
class Removed:
    """Rows a deletion removed (or, on a dry run, would remove) per table, the datasources it left
    alone with why, and those it rebuilt from their sources with why."""

    removed: dict
    skipped: dict
    rebuilt: dict


@dataclass(frozen=True)
class CopyResult:
    """A copy pipe's run: the rows copied once it is done; a host that queues the job (Tinybird) answers
    its id and status, and no rows yet."""

    rows: int | None
    job_id: str | None = None
    status: str | None = "done"


@runtime_checkable
class Target(Protocol):
    """What every command needs of where it runs."""

    label: str  # for messages: "embedded", or the host

    def close(self) -> None: ...

    def pipes(self) -> dict[str, Pipe]:
        """The deployed pipes, by name."""

    def pipe(self, name: str) -> Pipe | None:
        """The deployed pipe ``name``, or None."""

    def query_pipe(self, name: str, params: dict[str, str], fmt: str) -> bytes: ...

    def sql(self, query: str, fmt: str | None) -> bytes: ...

    def run_copy(self, name: str, params: dict[str, str], mode: str | None) -> CopyResult: ...

    def delete(self, datasource: str, condition: str, dry_run: bool, cascade: bool) -> Removed: ...

    def truncate(self, datasource: str, cascade: bool) -> None: ...

    def delivery(self, datasource: str, options: SendOptions) -> Delivery: ...

    def deploy(self, project_dir: Path, force: bool, options: "DeployOptions") -> list[str]:
        """The project's datafiles deployed; one line per file, then what became of the deployment."""


@dataclass(frozen=True)
class DeployOptions:
    """How a deploy runs: ``check`` validates only; ``stage`` keeps a Forward deployment staged;
    ``allow_destructive`` lets datasources the project no longer has go; ``kind`` is what the user
    says the workspace is (``forward``/``classic``), checked against what it is; ``progress``
    hears each step of a deployment."""

    check: bool = False
    stage: bool = False
    allow_destructive: bool = False
    kind: str | None = None
    progress: Callable[[str], None] = lambda line: None


class Embedded:
    """The store in ``data``; chDB is loaded on first use."""

    label = "embedded"

    def __init__(self, data: Path, memory_budget: int | None = None):
        self.data = Path(data)
        self.memory_budget = memory_budget  # None: the store's default
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine.open(self.data, self.memory_budget)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()

    def pipes(self) -> dict[str, Pipe]:
        return deployed_pipes(self.data)

    def pipe(self, name: str) -> Pipe | None:
        return self.pipes().get(name)

    def query_pipe(self, name: str, params: dict[str, str], fmt: str) -> bytes:
        return self.engine.query_pipe(name, params, fmt)

    def sql(self, query: str, fmt: str | None) -> bytes:
        return self.engine.sql(query, fmt)

    def run_copy(self, name: str, params: dict[str, str], mode: str | None) -> CopyResult:
        return CopyResult(rows=self.engine.run_copy(name, params, mode))

    def delete(self, datasource: str, condition: str, dry_run: bool, cascade: bool) -> Removed:
        deletion = self.engine.delete(datasource, condition, cascade=cascade, dry_run=dry_run)
        return Removed(deletion.removed, deletion.skipped, deletion.rebuilt)

    def truncate(self, datasource: str, cascade: bool) -> None:
        self.engine.truncate(datasource, cascade)

    def delivery(self, datasource: str, options: SendOptions) -> Delivery:
        """No longest line: the engine checks every line in SQL and quarantines with reasons; a whole
        file goes in one statement."""
        self.engine.datasource(datasource)

        def deliver(payload: bytes, key: str | None = None) -> Receipt:
            if key is None:
                return _receipt(self.engine.append(datasource, payload))
            # An idempotent insert under the key: the same lines sent again after a kill add nothing.
            return _receipt(self.engine.append_many(datasource, [payload], [f"key-{key}"], once=True)[0])

        def whole_file(path: Path) -> Receipt:
            return _receipt(self.engine.append(datasource, path))

        return Delivery(deliver=deliver, max_line=None, whole_file=whole_file, concurrency=1)

    def deploy(self, project_dir: Path, force: bool, options: DeployOptions = DeployOptions()) -> list[str]:
        if options.kind or options.stage:
            flag = "--stage" if options.stage else f"--{options.kind}"
            raise BadRequest(f"{flag} is for a Tinybird workspace: give --host (the embedded store deploys at once)")
        project = load_project(project_dir)
        if options.check:
            self.engine.check(project)
            return ["valid: the project deploys (checked in a scratch database; nothing changed)"]
        result = self.engine.deploy(project, force=force, allow_destructive=options.allow_destructive)
        return [f"{label:<10} {name}" for label in ("created", "changed", "unchanged", "deleted")
                for name in getattr(result, label)]

    def removals(self, project_dir: Path) -> list[str]:
        """What a destructive deploy of the project would drop."""
        return self.engine.removals(load_project(project_dir))


class Remote:
    """A Tinybird API at ``host``."""

    def __init__(self, target: Settings, client: Client | None = None, snapshot: Path | None = None):
        self.target = target
        self.label = target.host
        if client is None:
            from .client import Client

            client = Client(target.host, target.token.reveal())
        self.client = client
        self._snapshot = snapshot  # the store of a local `evtrack serve`, whose deployed pipes are on disk

    def close(self) -> None:
        self.client.close()

    def pipes(self) -> dict[str, Pipe]:
        if self._snapshot is not None:
            return deployed_pipes(self._snapshot)
        return load_project(Path.cwd()).pipes

    def pipe(self, name: str) -> Pipe | None:
        """The pipe as listed, else as deployed on the host (for its parameters); None when the host won't say."""
        listed = self.pipes().get(name)
        if listed is not None:
            return listed
        try:
            document = self.client.pipe(name)
        except EvtrackError:
            return None
        return parse_pipe(name, pipe_text(document))

    def query_pipe(self, name: str, params: dict[str, str], fmt: str) -> bytes:
        return self.client.query_pipe(name, params, fmt)

    def run_copy(self, name: str, params: dict[str, str], mode: str | None) -> CopyResult:
        """The rows copied when the host says (`evtrack serve` runs the job before answering), else the job."""
        job = self.client.run_copy(name, params, mode).get("job", {})
        rows = (job.get("statistics") or {}).get("row_count")
        done = job.get("status") == "done" and isinstance(rows, int)
        return CopyResult(rows=rows if done else None, job_id=job.get("id"), status=job.get("status"))

    def sql(self, query: str, fmt: str | None) -> bytes:
        from .engine.sql.sqlapi import split_format

        sql, named = split_format(query)
        return self.client.sql(f"{sql} FORMAT {named or FORMATS.get(fmt or 'json', 'JSON')}")

    def delete(self, datasource: str, condition: str, dry_run: bool, cascade: bool) -> Removed:
        answer = self.client.delete_rows(datasource, condition, dry_run, cascade)
        # evtrack serve says what each table lost; Tinybird, the datasource's count.
        removed = answer.get("removed") or {datasource: answer.get("rows_to_be_deleted", answer.get("rows_affected", 0))}
        return Removed(removed, answer.get("skipped", {}), answer.get("rebuilt", {}))

    def truncate(self, datasource: str, cascade: bool) -> None:
        self.client.truncate(datasource, cascade)

    def delivery(self, datasource: str, options: SendOptions) -> Delivery:
        """Batches go to the Events API with retries; the host checks every line, except one too long
        to send in a request, which the sender rejects (at the engine's own limit, so both paths agree)."""
        from .client import Retry
        from .sender import Receipt

        retry = Retry()

        def deliver(payload: bytes, key: str | None = None) -> Receipt:
            answer, retries = self.client.send(datasource, payload, wait=options.wait, retry=retry, key=key)
            stored, quarantined = answer.get("successful_rows", 0), answer.get("quarantined_rows", 0)
            return Receipt(lines=stored + quarantined, stored=stored, quarantined=quarantined, retries=retries)

        # Two ~9.5 MB requests in flight stay under Tinybird's documented 20 MB/s and 100 requests/s
        # per datasource when each takes about a second to acknowledge. On this machine's loopback
        # (`evtrack serve`) there is no such limit, and eight in flight (76 MB, under the server's
        # 128 MB queue) let the server write them in fewer, larger inserts: fewer parts to merge.
        concurrency = options.concurrency or (8 if self.client.loopback else 2)
        return Delivery(deliver=deliver, max_line=MAX_LINE_BYTES, whole_file=None, concurrency=concurrency)

    def deploy(self, project_dir: Path, force: bool, options: DeployOptions = DeployOptions()) -> list[str]:
        """A Forward workspace gets a deployment of the whole project; a Classic one, tb push."""
        from . import deployments

        found = deployments.workspace_kind(self.client)
        if options.kind and options.kind != found:
            raise deployments.wrong_kind(self.target.host, found, options.kind)
        if found == deployments.CLASSIC:
            for flag, given in (("--check", options.check), ("--stage", options.stage),
                                ("--allow-destructive", options.allow_destructive)):
                if given:
                    raise BadRequest(f"{flag} needs a Forward workspace: {self.target.host} is a Classic workspace, "
                                     "which evtrack deploys with tb push (it never deletes)")
            return tb_push(project_dir, self.target.host, self.target.token.reveal(), force)
        outcome = deployments.deploy(self.client, project_dir, check=options.check, stage=options.stage,
                                     allow_destructive=options.allow_destructive, progress=options.progress)
        lines = outcome.lines()
        if options.check:
            return [*lines, "valid: the deployment would succeed (nothing changed)"]
        if outcome.status == "unchanged":
            return ["no changes: nothing deployed"]
        if outcome.status == "staged":
            return [*lines, f"deployment {outcome.id} staged on {self.target.host}: promote it with "
                            f"`evtrack deploy --promote {outcome.id}`, or `--discard {outcome.id}`"]
        return [*lines, f"deployment {outcome.id} live on {self.target.host}"]

    def promote(self, ident: str) -> list[str]:
        """Make a staged deployment live (as Forward's ``tb deployment promote``: set-live, then the
        deployment it replaced is removed)."""
        before = next((d["id"] for d in self.client.deployments() if d.get("live")), None)
        self.client.set_live(ident)
        if before and before != ident:
            try:
                self.client.discard(before)
            except EvtrackError:
                pass  # a host that removed it already
        return [f"deployment {ident} live on {self.target.host}"]

    def discard(self, ident: str) -> list[str]:
        self.client.discard(ident)
        return [f"deployment {ident} discarded on {self.target.host}"]

    def deployments(self) -> list[dict]:
        return self.client.deployments()


def _receipt(result: AppendResult) -> Receipt:
    from .sender import Receipt

    return Receipt(lines=result.successful_rows + result.quarantined_rows, stored=result.successful_rows,
                   quarantined=result.quarantined_rows, reasons=list(result.errors))


def tb_push(project_dir: Path, host: str, token: str, force: bool = False) -> list[str]:
    """Run tinybird-cli's own push of the project's datafiles, found as a deploy finds them (either
    layout); its summary lines, or its errors as an EvtrackError."""
    project_dir = Path(project_dir)
    files = [str(path.relative_to(project_dir)) for path in project_files(project_dir)]
    # --force so that changed pipes are replaced and datasources altered (compatible changes only: an
    # incompatible one fails, naming the column); --yes answers tb's confirmation; --no-check skips its
    # comparison of old and new endpoint results.
    # The token goes in the environment, not the command line, where other users of the machine could see it.
    command = [sys.executable, "-m", "tinybird.tb_cli", "push", "--push-deps", "--force", "--yes", "--no-check", *files]
    env = {**os.environ, "TB_HOST": host, "TB_TOKEN": token, "TB_VERSION_WARNING": "0", "TB_CLI_TELEMETRY_OPTOUT": "1"}
    done = subprocess.run(command, cwd=project_dir, env=env, capture_output=True, text=True, timeout=600)
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0:
        first = next((i for i, line in enumerate(lines) if line.lower().startswith("error")), max(len(lines) - 3, 0))
        detail = " ".join(line.removeprefix("** ").removeprefix("Error:").strip() for line in lines[first:])
        raise EvtrackError(f"tb push failed: {detail.strip()}", status=400)
    keep = ("created", "updated", "unchanged", "already", "token", "alter", "-  ")
    return [line.removeprefix("** ") for line in lines if any(k in line.lower() for k in keep)]


def open_for_app(host: str | None = None, token: str | None = None, data: str | Path | None = None) -> Target:
    """The target an app's ``Tracker`` or ``Client`` uses, found as the CLI finds its own: a host and
    token given or configured, else the store in ``data`` (``EVTRACK_DATA``, ``.evtrack``), through
    its ``evtrack serve`` if one runs."""
    from .settings import resolve

    return open_target(resolve(Path(data or os.environ.get("EVTRACK_DATA") or ".evtrack"), host, token))


def open_target(settings: Settings) -> Target:
    """Embedded, unless a host is configured or `evtrack serve` is running on the store."""
    if settings.remote:
        return Remote(settings)
    url = running_server(settings.data)
    if url is None:
        return Embedded(settings.data)
    admin = TokenStore(settings.data).admin.token
    served = Settings(data=settings.data, host=url, token=Secret(admin), origin="evtrack serve")
    return Remote(served, snapshot=settings.data)
