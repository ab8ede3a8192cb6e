"""The ``evtrack`` command: choose a target, call one function, print the result.

Domain errors (``EvtrackError``) become one line, ``Error: ...``, exit 1; bad usage and bad
parameter values exit 2 before anything runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from . import __version__
from .engine import Engine, deployed_pipes
from .errors import EvtrackError
from .output import OUTPUT_FORMATS, engine_format, render
from .params import InvalidParam, expected_format, validate_params
from .project import Pipe, load_project

__all__ = ["cli"]

DEFAULT_DATA = ".evtrack"
CHUNK_BYTES = 32 * 1024 * 1024  # stdin and progress-bar sends go to the engine in blocks this big


class Group(click.Group):
    """Turns every ``EvtrackError`` into one ``Error:`` line and exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EvtrackError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data",
    envvar="EVTRACK_DATA",
    default=DEFAULT_DATA,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the embedded store (env EVTRACK_DATA).",
)
@click.version_option(__version__, prog_name="evtrack")
@click.pass_context
def cli(ctx: click.Context, data: Path) -> None:
    """Real-time event tracking on Tinybird datafiles, embedded by default."""
    ctx.obj = data


def _engine(ctx: click.Context) -> Engine:
    data = ctx.find_root().obj
    return ctx.with_resource(Engine.open(data))


def _default_format() -> str:
    return "table" if sys.stdout.isatty() else "json"


# -- deploy ---------------------------------------------------------------------------------
@cli.command()
@click.option("--force", is_flag=True, help="Rebuild datasources whose schema changed incompatibly.")
@click.option(
    "--project",
    "project_dir",
    default=".",
    show_default=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder holding datasources/ and pipes/.",
)
@click.pass_context
def deploy(ctx: click.Context, force: bool, project_dir: Path) -> None:
    """Create or update the datasources, then the pipes."""
    project = load_project(project_dir)
    if not project.datasources and not project.pipes:
        raise click.UsageError(f"no datasources/ or pipes/ found in {project_dir.resolve()}")
    result = _engine(ctx).deploy(project, force=force)
    for label, names in (("created", result.created), ("changed", result.changed),
                         ("unchanged", result.unchanged), ("removed", result.removed)):
        for name in names:
            click.echo(f"{label:<10} {name}")


# -- send -----------------------------------------------------------------------------------
@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--datasource", default="events", show_default=True, help="Datasource to append to.")
@click.pass_context
def send(ctx: click.Context, files: tuple[Path, ...], datasource: str) -> None:
    """Send NDJSON events (a file, a .gz file, or - for stdin) and print a receipt."""
    for path in files:
        if str(path) != "-" and not path.exists():
            raise click.BadParameter(f"file {str(path)!r} does not exist", param_hint="FILES")
    engine = _engine(ctx)
    engine.datasource(datasource)
    started = time.monotonic()
    stored = quarantined = 0
    reasons: list[str] = []
    for path in files:
        for result in _append(engine, datasource, path):
            stored += result.successful_rows
            quarantined += result.quarantined_rows
            reasons += result.errors
    elapsed = time.monotonic() - started
    click.echo(f"stored       {stored}")
    click.echo(f"quarantined  {quarantined}")
    for reason in reasons[:5]:
        click.echo(f"  - {reason}")
    if quarantined:
        click.echo(f"  see: evtrack sql \"SELECT c__error, * FROM {datasource}_quarantine\"")
    click.echo("rejected     0")
    click.echo(f"elapsed      {elapsed:.2f}s ({(stored + quarantined) / max(elapsed, 1e-9):,.0f} events/s)")
    if quarantined:
        ctx.exit(1)


def _append(engine: Engine, datasource: str, path: Path):
    """Whole files go straight to the engine; stdin and large files on a terminal in blocks."""
    if str(path) == "-":
        yield from (engine.append(datasource, block) for block in _blocks(sys.stdin.buffer))
        return
    size = path.stat().st_size
    if not sys.stderr.isatty() or size < 2 * CHUNK_BYTES or path.name.endswith(".gz"):
        yield engine.append(datasource, path)
        return
    started, events = time.monotonic(), 0
    with open(path, "rb") as stream, click.progressbar(
        length=size, label=path.name, file=sys.stderr,
        item_show_func=lambda n: f"{n:,.0f} events/s" if n else None,
    ) as bar:
        for block in _blocks(stream):
            result = engine.append(datasource, block)
            events += result.successful_rows + result.quarantined_rows
            bar.update(len(block), events / max(time.monotonic() - started, 1e-9))
            yield result


def _blocks(stream):
    """Blocks of about CHUNK_BYTES that end at a newline, so no line is split."""
    rest = b""
    while chunk := stream.read(CHUNK_BYTES):
        chunk = rest + chunk
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            rest = chunk
            continue
        rest = chunk[cut:]
        yield chunk[:cut]
    if rest.strip():
        yield rest


# -- query ----------------------------------------------------------------------------------
class PipeCommands(click.Group):
    """``evtrack query PIPE``: one subcommand per deployed pipe, its options from the pipe."""

    def _pipes(self, ctx: click.Context) -> dict[str, Pipe]:
        return deployed_pipes(ctx.find_root().obj or Path(DEFAULT_DATA))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self._pipes(ctx))

    def get_command(self, ctx: click.Context, name: str):
        pipes = self._pipes(ctx)
        if name not in pipes:
            known = ", ".join(pipes) or "none; run `evtrack deploy` first"
            raise click.UsageError(f"no deployed pipe named {name!r} (deployed: {known})", ctx)
        return _pipe_command(pipes[name])


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
        click.Option(
            [*_option_names(p.name), p.name], metavar=p.type, show_default=False,
            help=f"{p.description} [{', '.join(_facts(p))}]".strip(),
        )
        for p in pipe.params
    ]
    options.append(click.Option(["--param", "extra"], multiple=True, metavar="NAME=VALUE",
                                help="Any parameter, as NAME=VALUE (repeatable)."))
    options.append(click.Option(["--format", "fmt"], type=click.Choice(OUTPUT_FORMATS),
                                help="Output format [default: table on a terminal, else json]."))

    @click.pass_context
    def run(ctx: click.Context, extra: tuple[str, ...], fmt: str | None, **values: str | None) -> None:
        params = {k: v for k, v in values.items() if v is not None}
        for item in extra:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
            params[key] = value
        try:
            validate_params(pipe, params)
        except InvalidParam as exc:
            raise click.BadParameter(str(exc), param_hint=f"'{_option_names(exc.name)[0]}'") from None
        fmt = fmt or _default_format()
        click.echo(render(_engine(ctx).query_pipe(pipe.name, params, engine_format(fmt)), fmt))

    return click.Command(pipe.name, params=options, callback=run, help=pipe.description,
                         short_help=pipe.description.split(". ")[0][:80])


@cli.group(cls=PipeCommands)
def query() -> None:
    """Call a deployed pipe: evtrack query PIPE [--PARAM VALUE]... (see evtrack query PIPE --help)."""


# -- sql, pipes -----------------------------------------------------------------------------
@cli.command()
@click.argument("query_text", metavar="QUERY")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS),
              help="Output format [default: table on a terminal, else json]; a FORMAT clause in QUERY wins.")
@click.pass_context
def sql(ctx: click.Context, query_text: str, fmt: str | None) -> None:
    """Run read-only SQL over the datasources (and their _quarantine tables)."""
    from .engine.sqlapi import split_format

    named = split_format(query_text)[1]
    fmt = fmt or _default_format()
    body = _engine(ctx).sql(query_text, None if named else engine_format(fmt))
    click.echo(render(body, "raw" if named else fmt))


@cli.command()
@click.pass_context
def pipes(ctx: click.Context) -> None:
    """List deployed pipes and their parameters."""
    found = deployed_pipes(ctx.find_root().obj)
    if not found:
        click.echo("No pipes deployed. Run `evtrack deploy`.")
    for pipe in found.values():
        kind = "endpoint" if pipe.endpoint else "no endpoint"
        click.echo(f"{pipe.name} ({kind}): {pipe.description}")
        for p in pipe.params:
            flags = " required" if p.required else (f" default={p.default}" if p.default is not None else "")
            click.echo(f"  --{p.name.replace('_', '-'):<14} {p.type:<9}{flags}  {p.description}")


# -- serve, token ------------------------------------------------------------------------------
@cli.command()
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7181, show_default=True, type=click.IntRange(0, 65535), help="Port (0 picks a free one).")
@click.pass_context
def serve(ctx: click.Context, bind: str, port: int) -> None:
    """Serve Tinybird's API (events, pipes, SQL, what `tb` needs) over the embedded store."""
    from .server import serve as run_server

    engine = _engine(ctx)

    def ready(url: str) -> None:
        click.echo(f"evtrack serving {engine.store.path} at {url}")
        click.echo(f"admin token: evtrack token ls --show-tokens, or GET {url}/tokens from this machine")
        click.echo("Ctrl-C to stop")

    run_server(engine, bind, port, on_ready=ready)


@cli.group()
def token() -> None:
    """Tokens of the embedded workspace."""


@token.command("ls")
@click.option("--show-tokens", is_flag=True, help="Show the token values.")
@click.pass_context
def token_ls(ctx: click.Context, show_tokens: bool) -> None:
    """List tokens and their scopes."""
    for t in _engine(ctx).tokens.all():
        click.echo(f"{t.name:<14} {t.token if show_tokens else 'p.' + '*' * 8:<48} {', '.join(t.scopes)}")


def main() -> None:
    cli(prog_name="evtrack")
