"""The ``evtrack`` command: choose a target, call one function, print the result.

Domain errors (``EvtrackError``) become one line, ``Error: ...``, exit 1; bad usage and bad
parameter values exit 2 before anything runs.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

import click

from . import __version__
from .errors import EvtrackError
from .output import OUTPUT_FORMATS, engine_format, render
from .project import Pipe, project_files
from .settings import MAX_BATCH_BYTES, resolve

if TYPE_CHECKING:
    from .sender import Receipt
    from .targets import Embedded, Target

# The targets, the sender and the parameter checks are imported by the commands that use them:
# `evtrack --help` loads none of them, and `evtrack query` neither the HTTP client nor the sender
# when the target is the embedded store.

__all__ = ["cli", "main"]

DEFAULT_DATA = ".evtrack"
PROGRESS_BYTES = 64 * 1024 * 1024  # files at least this big show a progress bar on a terminal


class Group(click.Group):
    """Turns every ``EvtrackError`` into one ``Error:`` line and exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EvtrackError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", envvar="EVTRACK_DATA", default=DEFAULT_DATA, show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder of the embedded store (env EVTRACK_DATA).")
@click.option("--host", help="Tinybird API host (else TB_HOST, else .tinyb, else the embedded store).")
@click.option("--token", help="Token for --host (else TB_TOKEN, else .tinyb).")
@click.version_option(__version__, prog_name="evtrack")
@click.pass_context
def cli(ctx: click.Context, data: Path, host: str | None, token: str | None) -> None:
    """Real-time event tracking on Tinybird datafiles, embedded by default."""
    ctx.obj = {"data": data, "host": host, "token": token}


def _target(ctx: click.Context) -> Target:
    """The command's target, opened once and closed when the command ends."""
    root = ctx.find_root()
    if "target" not in root.obj:
        from .targets import open_target

        settings = resolve(root.obj["data"], root.obj["host"], root.obj["token"], data_origin=_data_origin(root))
        root.obj["settings"] = settings
        root.obj["target"] = root.with_resource(_closing(open_target(settings)))
    return root.obj["target"]


def _data_origin(root: click.Context) -> str | None:
    """Where --data's value came from: the flag, EVTRACK_DATA, or (None) its default."""
    source = root.get_parameter_source("data")
    if source == click.core.ParameterSource.COMMANDLINE:
        return "--data"
    return "EVTRACK_DATA" if source == click.core.ParameterSource.ENVIRONMENT else None


def _where(ctx: click.Context) -> str:
    """' on HOST' when the command goes to a host: said in prompts and output that change data."""
    _target(ctx)
    settings = ctx.find_root().obj["settings"]
    return f" on {settings.host}" if settings.remote else ""


class _closing:
    def __init__(self, target):
        self.target = target

    def __enter__(self):
        return self.target

    def __exit__(self, *exc):
        self.target.close()


def _default_format() -> str:
    return "table" if sys.stdout.isatty() else "json"


# -- deploy ---------------------------------------------------------------------------------
@cli.command()
@click.option("--force", is_flag=True, help="Rebuild datasources whose schema changed incompatibly, and the targets of changed materialized pipes.")
@click.option("--project", "project_dir", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path), help="Folder of the project (datasources/ and pipes/, or Forward's endpoints/, materializations/, ...).")
@click.option("--allow-destructive", is_flag=True,
              help="Also drop the deployed pipes and datasources (with their data) the project no longer has; "
                   "each is listed before anything runs. On a Forward workspace: let its datasources go too.")
@click.option("--check", is_flag=True, help="Only validate the project against the target; change nothing.")
@click.option("--stage", is_flag=True, help="Forward workspace: keep the deployment staged instead of promoting it.")
@click.option("--promote", metavar="ID", help="Forward workspace: make the staged deployment ID live.")
@click.option("--discard", metavar="ID", help="Forward workspace: discard the staged deployment ID.")
@click.option("--forward", "kind", flag_value="forward",
              help="Say the host's workspace is a Forward one (it is found out anyway; a wrong claim is an error).")
@click.option("--classic", "kind", flag_value="classic", help="Say the host's workspace is a Classic one.")
@click.pass_context
def deploy(ctx: click.Context, force: bool, project_dir: Path, allow_destructive: bool, check: bool, stage: bool,
           promote: str | None, discard: str | None, kind: str | None) -> None:
    """Create or update the datasources, then the pipes. On a host, a Forward workspace gets a deployment
    of the whole project (promoted unless --stage), a Classic one tinybird-cli's push."""
    from .targets import DeployOptions, Remote

    if promote or discard:
        target = _target(ctx)
        if not isinstance(target, Remote):
            raise click.UsageError("--promote and --discard move a Forward workspace's deployments: give --host")
        lines = target.promote(promote) if promote else target.discard(discard)
    else:
        if not project_files(project_dir):
            raise click.UsageError(f"no .datasource or .pipe files found in {project_dir.resolve()}")
        target = _target(ctx)
        options = DeployOptions(check=check, stage=stage, allow_destructive=allow_destructive, kind=kind,
                                progress=lambda line: click.echo(line, err=True))
        if allow_destructive and not isinstance(target, Remote) and not check:
            for item in target.removals(project_dir):
                click.echo(f"will drop  {item}")
        lines = target.deploy(project_dir, force, options)
    for line in lines:
        click.echo(line)


# -- send -----------------------------------------------------------------------------------
@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--datasource", default="events", show_default=True, help="Datasource to append to.")
@click.option("--batch-bytes", type=click.IntRange(1024), default=MAX_BATCH_BYTES, show_default=True,
              help="Largest request, before compression (Tinybird takes 10 MB).")
@click.option("--concurrency", type=click.IntRange(1, 64),
              help="Requests in flight at once [default: 2 to a host, 4 to this machine's loopback].")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Ask the host to acknowledge only stored batches (wait=true).")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path),
              help="Where lines refused before sending go, one JSON line each [default: FILE.rejects.ndjson].")
@click.option("--resume", is_flag=True, help="Continue from the last acknowledged batch of an interrupted send.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="The resume checkpoint [default: FILE.checkpoint.json].")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as JSON.")
@click.option("--format", "fmt", type=click.Choice(["ndjson", "csv", "parquet"]),
              help="The files' format [default: by the name: .csv, .parquet (.gz too), else NDJSON].")
@click.pass_context
def send(ctx: click.Context, files: tuple[Path, ...], datasource: str, batch_bytes: int, concurrency: int,
         wait: bool, rejects: Path | None, resume: bool, checkpoint: Path | None, as_json: bool,
         fmt: str | None) -> None:
    """Send NDJSON events (files, .gz files, or - for stdin) and print a receipt.

    Every non-blank line is stored, quarantined (with a reason, in DATASOURCE_quarantine) or
    rejected before sending (with a reason, in the rejects file). Exit 1 unless all were stored.
    """
    from .sender import Receipt, SendOptions, send_path

    for path in files:
        if str(path) != "-" and not path.exists():
            raise click.BadParameter(f"file {str(path)!r} does not exist", param_hint="FILES")
    options = SendOptions(batch_bytes=batch_bytes, concurrency=concurrency, wait=wait, resume=resume,
                          checkpoint=checkpoint if len(files) == 1 else None, rejects=rejects, format=fmt)
    target = _target(ctx)
    started, total = time.monotonic(), Receipt()
    for path in files:
        with _progress(path) as progress:
            receipt = send_path(target, datasource, path, options, progress)
        total.add(receipt)
        total.rejects_file = total.rejects_file or receipt.rejects_file
    _print_receipt(total, time.monotonic() - started, datasource, as_json)
    if total.stored != total.lines:
        ctx.exit(1)


def _print_receipt(total: Receipt, elapsed: float, datasource: str, as_json: bool) -> None:
    rate = total.lines / max(elapsed, 1e-9)
    if as_json:
        click.echo(json.dumps({**total.as_dict(), "elapsed_s": round(elapsed, 3), "events_per_s": round(rate, 1)}))
        return
    click.echo(f"lines        {total.lines}")
    click.echo(f"stored       {total.stored}")
    click.echo(f"quarantined  {total.quarantined}")
    for reason in total.reasons[:5]:
        click.echo(f"  - {reason}")
    if total.quarantined:
        click.echo(f"  see: evtrack sql \"SELECT c__error, * FROM {datasource}_quarantine\"")
    click.echo(f"rejected     {total.rejected}" + (f" (see {total.rejects_file})" if total.rejects_file else ""))
    for reject in total.rejects[:5]:
        click.echo(f"  - {reject}")
    click.echo(f"retries      {total.retries}")
    click.echo(f"elapsed      {elapsed:.2f}s ({rate:,.0f} events/s)")


@contextlib.contextmanager
def _progress(path: Path):
    """A progress bar with events/s for a large file on a terminal; otherwise nothing."""
    big = str(path) != "-" and path.stat().st_size >= PROGRESS_BYTES and not path.name.endswith(".gz")
    if not (big and sys.stderr.isatty()):
        yield None
        return
    started, events = time.monotonic(), 0
    with click.progressbar(length=path.stat().st_size, label=path.name, file=sys.stderr,
                           item_show_func=lambda rate: f"{rate:,.0f} events/s" if rate else None) as bar:
        def advance(size: int, receipt: Receipt) -> None:
            nonlocal events
            events += receipt.lines
            bar.update(size, events / max(time.monotonic() - started, 1e-9))

        yield advance


# -- query ----------------------------------------------------------------------------------
class PipeCommands(click.Group):
    """``evtrack query PIPE``: one subcommand per endpoint, its options from the pipe's own parameters.
    Materialized pipes have no endpoint to call, so they are not listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, pipe in _target(ctx).pipes().items() if pipe.endpoint is not None]

    def get_command(self, ctx: click.Context, name: str):
        pipe = _target(ctx).pipe(name)
        if pipe is None:
            known = ", ".join(self.list_commands(ctx)) or "none; run `evtrack deploy` first"
            raise click.UsageError(f"no deployed pipe named {name!r} (deployed: {known})", ctx)
        return _pipe_command(pipe)


def _option_names(name: str) -> list[str]:
    dashed = f"--{name.replace('_', '-')}"
    return [dashed] if dashed == f"--{name}" else [dashed, f"--{name}"]


def _facts(param) -> list[str]:
    facts = [param.type]
    if param.required:
        facts.append("required")
    if param.default is not None:
        facts.append(f"default {param.default}")
    return facts


def _pipe_command(pipe: Pipe) -> click.Command:
    options = [
        click.Option([*_option_names(p.name), p.name], metavar=p.type, show_default=False,
                     help=f"{p.description} [{', '.join(_facts(p))}]".strip())
        for p in pipe.params
    ]
    options.append(click.Option(["--param", "extra"], multiple=True, metavar="NAME=VALUE",
                                help="Any parameter, as NAME=VALUE (repeatable)."))
    options.append(click.Option(["--format", "fmt"], type=click.Choice(OUTPUT_FORMATS),
                                help="Output format [default: table on a terminal, else json]."))

    @click.pass_context
    def run(ctx: click.Context, extra: tuple[str, ...], fmt: str | None, **values: str | None) -> None:
        from .params import InvalidParam, validate_params

        params = {**{k: v for k, v in values.items() if v is not None}, **_name_values(extra)}
        try:
            validate_params(pipe, params)
        except InvalidParam as exc:
            raise click.BadParameter(str(exc), param_hint=f"'{_option_names(exc.name)[0]}'") from None
        fmt = fmt or _default_format()
        click.echo(render(_target(ctx).query_pipe(pipe.name, params, engine_format(fmt)), fmt))

    return click.Command(pipe.name, params=options, callback=run, help=pipe.description,
                         short_help=pipe.description.split(". ")[0][:80])


def _name_values(items: tuple[str, ...], hint: str = "--param") -> dict[str, str]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=hint)
        params[key] = value
    return params


@cli.group(cls=PipeCommands)
def query() -> None:
    """Call a pipe: evtrack query PIPE [--PARAM VALUE]... (see evtrack query PIPE --help)."""


# -- sql, pipes -----------------------------------------------------------------------------
@cli.command()
@click.argument("query_text", metavar="QUERY")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS),
              help="Output format [default: table on a terminal, else json]; a FORMAT clause in QUERY wins.")
@click.pass_context
def sql(ctx: click.Context, query_text: str, fmt: str | None) -> None:
    """Run read-only SQL over the datasources (and their _quarantine tables)."""
    from .engine.sql.sqlapi import split_format

    named = split_format(query_text)[1]
    fmt = fmt or _default_format()
    body = _target(ctx).sql(query_text, None if named else engine_format(fmt))
    click.echo(render(body, "raw" if named else fmt))


@cli.command()
@click.option("--source", "sources", multiple=True, metavar="NAME",
              help="A service datasource to read (repeatable): datasources_ops_log, pipe_stats_rt, jobs_log "
                   "[default: all three].")
@click.option("--since", default="1h", show_default=True,
              help="From when: a duration ago (30m, 1h, 2d, 1w) or a date and time (UTC).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000),
              help="At most this many records, the newest.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing records as they come, until Ctrl-C.")
@click.pass_context
def logs(ctx: click.Context, sources: tuple[str, ...], since: str, limit: int, follow: bool) -> None:
    """What the workspace did, newest last: operations on datasources, endpoint calls and jobs, from
    Tinybird's service datasources (tinybird.datasources_ops_log, pipe_stats_rt, jobs_log)."""
    from . import logs as service_logs

    try:
        names = [service_logs.source_name(s) for s in sources] or list(service_logs.DEFAULT_SOURCES)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--source") from None
    try:
        start = service_logs.since_time(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    target = _target(ctx)
    run = lambda sql: target.sql(sql, None)  # noqa: E731 (the query names its format)
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            service_logs.follow(run, names, start, limit, click.echo)
        return
    for _, line, _ in service_logs.lines(run(service_logs.query(names, start, limit))):
        click.echo(line)


@cli.command()
@click.pass_context
def pipes(ctx: click.Context) -> None:
    """List deployed pipes and their parameters."""
    found = _target(ctx).pipes()
    if not found:
        click.echo("No pipes deployed. Run `evtrack deploy`.")
    for pipe in found.values():
        kind = "endpoint" if pipe.endpoint else f"copy into {pipe.copy.datasource}" if pipe.copy else "no endpoint"
        click.echo(f"{pipe.name} ({kind}): {pipe.description}")
        for p in pipe.params:
            flags = " required" if p.required else (f" default={p.default}" if p.default is not None else "")
            click.echo(f"  --{p.name.replace('_', '-'):<14} {p.type:<9}{flags}  {p.description}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Each deployment as a JSON object, one a line.")
@click.pass_context
def deployments(ctx: click.Context, as_json: bool) -> None:
    """List the deployments, oldest first: id, when, status, what changed (on a host: its /v1/deployments)."""
    from .engine.deploy.deployer import History
    from .targets import Remote

    target = _target(ctx)
    remote = isinstance(target, Remote)
    entries = target.deployments() if remote else History(_embedded(ctx).data).all()
    if not entries:
        click.echo("No deployments yet. Run `evtrack deploy`.")
    for entry in entries:
        if as_json:
            click.echo(json.dumps(entry, sort_keys=True))
        elif remote:  # a host's /v1/deployments
            click.echo(f"{entry.get('id')}  {entry.get('created_at', '')}  {entry.get('status', '')}"
                       + ("  live" if entry.get("live") else ""))
        else:
            changes = [f"{kind} {', '.join(entry[kind])}" for kind in ("created", "changed", "deleted")
                       if entry.get(kind)]
            click.echo(f"{entry['id']}  {entry['started']} -> {entry['finished']}  {entry['status']}"
                       + (f"  ({'; '.join(changes)})" if changes else "")
                       + (f"  {entry['error']}" if entry.get("error") else ""))


# -- forgetting data -------------------------------------------------------------------------
@cli.command()
@click.argument("datasource")
@click.option("--where", "condition", required=True, metavar="CONDITION",
              help="An SQL expression over the datasource's columns, such as \"user_id = 'u1'\".")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--no-cascade", is_flag=True, help="Only this datasource, not those materialized from it.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, datasource: str, condition: str, dry_run: bool, no_cascade: bool, yes: bool) -> None:
    """Delete the rows where CONDITION holds, from DATASOURCE and every datasource materialized from it."""
    if not dry_run and not yes:
        click.confirm(f"Delete the rows of {datasource}{_where(ctx)} where {condition}, and the rows derived from them?",
                      abort=True)
    done = _target(ctx).delete(datasource, condition, dry_run=dry_run, cascade=not no_cascade)
    verb = "would delete" if dry_run else "deleted"
    for table, rows in done.removed.items():
        click.echo(f"{verb} {rows} rows from {table}{_where(ctx)}")
    for name, why in done.skipped.items():
        click.echo(f"kept {name}: {why}")
    for name, why in done.rebuilt.items():
        click.echo(f"{'would rebuild' if dry_run else 'rebuilt'} {name}: {why}")
    from .targets import Embedded

    target = _target(ctx)
    if not dry_run and isinstance(target, Embedded):  # the embedded store keeps a report of each deletion
        from .engine.change.lifecycle import DELETIONS

        click.echo(f"report kept in {target.data / DELETIONS}")


@cli.command()
@click.argument("datasource")
@click.option("--cascade", is_flag=True, help="Also empty every datasource materialized from it.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def truncate(ctx: click.Context, datasource: str, cascade: bool, yes: bool) -> None:
    """Empty DATASOURCE (and its quarantine): every row goes."""
    if not yes:
        click.confirm(f"Delete every row of {datasource}{_where(ctx)}"
                      f"{' and of what is materialized from it' if cascade else ''}?", abort=True)
    _target(ctx).truncate(datasource, cascade)
    click.echo(f"truncated {datasource}{_where(ctx)}")


@cli.command()
@click.argument("name", metavar="DATASOURCE|PIPE")
@click.option("--param", "items", multiple=True, metavar="NAME=VALUE",
              help="A template parameter of the pipe, as NAME=VALUE (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "ndjson", "csv"]), default="parquet", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write (replaced if it exists).")
@click.pass_context
def export(ctx: click.Context, name: str, items: tuple[str, ...], fmt: str, output: Path) -> None:
    """Write a datasource's rows, or a pipe's result, to a file, streamed (memory stays bounded)."""
    rows = _embedded(ctx).engine.export(name, _name_values(items), fmt, output)
    click.echo(f"{rows} rows written to {output}")


# -- copy -----------------------------------------------------------------------------------
@cli.group()
def copy() -> None:
    """Copy pipes (TYPE COPY): write a pipe's result into its TARGET_DATASOURCE."""


@copy.command("run")
@click.argument("pipe_name", metavar="PIPE")
@click.option("--param", "items", multiple=True, metavar="NAME=VALUE",
              help="A template parameter of the pipe, as NAME=VALUE (repeatable); others take their defaults.")
@click.option("--mode", type=click.Choice(["append", "replace"]), help="This run's mode [default: the pipe's COPY_MODE].")
@click.pass_context
def copy_run(ctx: click.Context, pipe_name: str, items: tuple[str, ...], mode: str | None) -> None:
    """Run the copy pipe PIPE once and print the rows it copied."""
    from .params import InvalidParam, validate_params

    target = _target(ctx)
    deployed = target.pipes()
    pipe = target.pipe(pipe_name)
    if pipe is None or pipe.copy is None:
        known = ", ".join(n for n, p in deployed.items() if p.copy is not None) or "none"
        raise click.BadParameter(f"no deployed copy pipe named {pipe_name!r} (copy pipes: {known})", param_hint="PIPE")
    params = _name_values(items)
    # Its own parameters and those of the pipes it reads by name (which get the run's values too).
    reads, grown = {pipe.name: pipe}, True
    while grown:
        more = {n: p for n, p in deployed.items() if n not in reads and any(n in r.source for r in reads.values())}
        reads.update(more)
        grown = bool(more)
    declared = {p.name for read in reads.values() for p in read.params}
    unknown = sorted(set(params) - declared)
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: not a parameter of {pipe_name} "
                                 f"(its parameters: {', '.join(sorted(declared)) or 'none'})", param_hint="--param")
    missing = [p.name for p in pipe.params if p.required and p.default is None and p.name not in params]
    if missing:
        raise click.BadParameter(f"{', '.join(missing)} required by {pipe_name}", param_hint="--param")
    try:
        for read in reads.values():
            validate_params(read, params)
    except InvalidParam as exc:
        raise click.BadParameter(f"{exc.name}: {exc}", param_hint="--param") from None
    result = target.run_copy(pipe_name, params, mode)
    if result.rows is not None:
        click.echo(f"{result.rows} rows copied into {pipe.copy.datasource}")
    else:  # a host that queues the job (Tinybird): its id and status
        click.echo(f"copy job {result.job_id} {result.status} (into {pipe.copy.datasource})")


# -- test -----------------------------------------------------------------------------------
@cli.command("test")
@click.argument("pipe_names", metavar="[PIPE]...", nargs=-1)
@click.option("--update", is_flag=True, help="Rewrite the expected results with what the pipes answer.")
@click.option("--loose", is_flag=True,
              help="Compare rows as JSON (spacing and escapes aside) and errors by status, not the exact text.")
@click.option("--project", "project_dir", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path), help="Folder of the project.")
@click.pass_context
def test_pipes(ctx: click.Context, pipe_names: tuple[str, ...], update: bool, loose: bool, project_dir: Path) -> None:
    """Run the project's tests/<pipe>.yaml cases (Tinybird's `tb test` format) and Classic tests/*.test
    files against a fresh local store loaded with fixtures/<datasource>.ndjson, or with --host against
    that host's data."""
    from . import pipetests

    files = pipetests.test_files(project_dir, pipe_names)
    if not files:
        raise click.UsageError(f"no test files in {(project_dir / 'tests').resolve()} (tests/<pipe>.yaml or *.test)")
    cases = {path: pipetests.load_cases(path) for path in files}
    root = ctx.find_root().obj
    if root["host"]:
        settings = resolve(root["data"], root["host"], root["token"], data_origin=_data_origin(ctx.find_root()))
        caller = pipetests.host_caller(settings.host, settings.token.reveal())
    else:
        caller = pipetests.embedded_caller(project_dir)
    with caller as call:
        outcomes = {path: pipetests.run_cases(found, call, loose) for path, found in cases.items()}
    failed = 0
    for path, results in outcomes.items():
        for outcome in results:
            failed += not outcome.passed
            mark = "PASS" if outcome.passed else ("UPDATED" if update else "FAIL")
            click.echo(f"{mark:<8} {outcome.case.pipe:<28} {outcome.case.name}")
            if not outcome.passed and not update:
                for line in outcome.diff[:40]:
                    click.echo(f"           {line}")
        if update and any(not o.passed for o in results):
            pipetests.update_file(path, results)
    total = sum(len(r) for r in outcomes.values())
    click.echo(f"{total - failed} passed, {failed} {'updated' if update else 'failed'}")
    if failed and not update:
        ctx.exit(1)


# -- serve, token ---------------------------------------------------------------------------
def _embedded(ctx: click.Context) -> Embedded:
    from .targets import Embedded

    target = _target(ctx)
    if not isinstance(target, Embedded):
        raise click.UsageError(f"{ctx.info_name} works on the embedded store, and the target is {target.label}")
    return target


class ByteSize(click.ParamType):
    """A size in bytes: 1000000, or with a binary suffix, 512M, 4G."""

    name = "size"
    _UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        number, unit = (text[:-1], text[-1]) if text[-1:] in self._UNITS else (text, "")
        try:
            return int(float(number) * self._UNITS[unit])
        except (ValueError, KeyError):
            self.fail(f"{value!r} is not a size: use bytes or a number with K, M, G or T, such as 4G", param, ctx)


@cli.command()
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7181, show_default=True, type=click.IntRange(0, 65535), help="Port (0 picks a free one).")
@click.option("--max-execution-time", envvar="EVTRACK_MAX_EXECUTION_TIME", default=10.0, show_default=True,
              type=click.FloatRange(0), help="Seconds an endpoint call or SQL query may run before a 408; 0: no limit.")
@click.option("--max-query-memory", envvar="EVTRACK_MAX_QUERY_MEMORY", default="4G", show_default=True, type=ByteSize(),
              help="Memory one query may use before it fails; 0: no limit.")
@click.option("--max-result-bytes", envvar="EVTRACK_MAX_RESULT_BYTES", default="100M", show_default=True,
              type=ByteSize(), help="Largest result a query may return (Tinybird's response limit); 0: no limit.")
@click.option("--memory-budget", envvar="EVTRACK_MEMORY_BUDGET", type=ByteSize(),
              help="Memory the whole engine may use, so queries fail before the machine runs out [default: 60% of RAM].")
@click.option("--workspace-kind", type=click.Choice(["both", "forward", "classic"]), default="both", show_default=True,
              help="How Tinybird's CLIs may change the default workspace: through deployments (forward), tb push "
                   "(classic), or either (both). Workspaces made through POST /v1/workspaces are Forward.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="A Host name to answer to besides localhost, 127.0.0.1 and [::1] (repeatable; '*' for any): "
                   "bound to loopback, every other name is refused, against DNS rebinding.")
@click.pass_context
def serve(ctx: click.Context, bind: str, port: int, max_execution_time: float, max_query_memory: int,
          max_result_bytes: int, memory_budget: int | None, workspace_kind: str, allow_hosts: tuple[str, ...]) -> None:
    """Serve Tinybird's API (events, pipes, SQL, what `tb` needs) over the embedded store."""
    from .engine.store import QueryLimits
    from .server import running_server, serve as run_server

    data = ctx.find_root().obj["data"]
    if (url := running_server(data)) is not None:
        raise click.ClickException(f"evtrack serve is already running on {data} at {url}")
    embedded = _embedded(ctx)
    embedded.memory_budget = memory_budget
    engine = embedded.engine
    engine.read_limits = QueryLimits(max_execution_time, max_query_memory, max_result_bytes)
    engine.default.kind = workspace_kind

    def ready(url: str) -> None:
        click.echo(f"evtrack serving {engine.store.path} at {url}")
        click.echo(f"admin token: `evtrack token ls --show-tokens`, or GET {url}/tokens from this machine")
        click.echo("Ctrl-C to stop")

    run_server(engine, bind, port, on_ready=ready, allow_hosts=allow_hosts)


@cli.group()
def token() -> None:
    """Tokens of the embedded workspace."""


@token.command("ls")
@click.option("--show-tokens", is_flag=True, help="Show the token values.")
@click.pass_context
def token_ls(ctx: click.Context, show_tokens: bool) -> None:
    """List tokens and their scopes."""
    from .engine.tokens import TokenStore

    data = ctx.find_root().obj["data"]
    if not (data / "tokens.json").exists():
        raise click.ClickException(f"no store with tokens at {data}: run `evtrack deploy` or `evtrack serve` first")
    for t in TokenStore(data).all():
        click.echo(f"{t.name:<14} {t.token if show_tokens else 'p.' + '*' * 8:<48} {', '.join(t.scopes)}")


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl(ctx, param, value: str) -> int:
    number, unit = (value[:-1], value[-1]) if value[-1:] in _TTL_UNITS else (value, "s")
    if not number.isdigit() or int(number) == 0:
        raise click.BadParameter(f"'{value}' is not a duration: a positive number with s, m, h or d, e.g. 1h")
    return int(number) * _TTL_UNITS[unit]


@token.command("jwt")
@click.option("--pipe", "pipes", multiple=True, required=True, help="A deployed pipe the JWT may read (repeatable).")
@click.option("--fixed", multiple=True, metavar="NAME=VALUE",
              help="A parameter fixed for every read, whatever the request says (repeatable).")
@click.option("--ttl", default="1h", show_default=True, callback=_ttl, help="Lifetime: a number with s, m, h or d.")
@click.option("--name", default="frontend_jwt", show_default=True, help="The token's name.")
@click.pass_context
def token_jwt(ctx: click.Context, pipes: tuple[str, ...], fixed: tuple[str, ...], ttl: int, name: str) -> None:
    """Print a JWT (HS256, signed with the admin token) that reads PIPES with FIXED parameters."""
    from .engine import deployed_pipes
    from .engine.tokens import TokenStore

    data = ctx.find_root().obj["data"]
    if not (data / "tokens.json").exists():
        raise click.ClickException(f"no store with tokens at {data}: run `evtrack deploy` or `evtrack serve` first")
    values = dict(item.partition("=")[::2] for item in fixed)
    if any("=" not in item or not item.partition("=")[0] for item in fixed):
        raise click.BadParameter("expected NAME=VALUE, e.g. --fixed user_id=user_abc", param_hint="'--fixed'")
    # A JWT reads endpoints only: a materialized pipe has nothing to read.
    deployed = {name: pipe for name, pipe in deployed_pipes(data).items() if pipe.endpoint is not None}
    for pipe in pipes:
        if pipe not in deployed:
            raise click.BadParameter(f"no deployed endpoint named '{pipe}' (deployed: {', '.join(deployed)})",
                                     param_hint="'--pipe'")
        known = {p.name for p in deployed[pipe].params}
        for key in values:
            if key not in known:  # a fixed parameter the pipe ignores would restrict nothing
                raise click.BadParameter(f"'{key}' is not a parameter of {pipe} ({', '.join(sorted(known))})",
                                         param_hint="'--fixed'")
    click.echo(TokenStore(data).sign_jwt(name, {pipe: values for pipe in pipes}, ttl))


def main() -> None:
    cli(prog_name="evtrack")
