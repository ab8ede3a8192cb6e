"""The Tinybird data project: datasources and pipes, parsed by tinybird-cli's own parser.

Nothing here re-implements Tinybird's datafile format or template language: datafiles go
through ``tinybird.datafile_common``, column DDL through ``tinybird.sql`` and the engine
clause through ``tinybird.ch_utils.engine``; template parameters are read with
``tinybird.sql_template``. Parsing happens once, when a project is loaded or deployed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import click

from .errors import BadRequest

__all__ = ["Column", "Datasource", "Node", "Param", "Pipe", "Project", "described_columns", "load_project",
           "datasource_text", "parse_datasource", "parse_pipe", "pipe_record", "pipe_from_record", "pipe_text",
           "project_files"]

# tinybird-cli reads its datafiles with a template pass that may look at the environment; keep
# its version check and telemetry quiet whenever it is imported by evtrack.
os.environ.setdefault("TB_VERSION_WARNING", "0")
os.environ.setdefault("TB_CLI_TELEMETRY_OPTOUT", "1")

# tinybird-cli's modules are imported where they are used: loading its datafile parser takes
# about half a second, which commands that parse no datafile (a send to a host) need not pay.


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    jsonpath: str | None
    default: str | None  # the SQL expression after DEFAULT, if any
    nullable: bool

    @property
    def accepts_null(self) -> bool:
        """Whether a null or missing value is stored as NULL: ``Nullable(T)``, ``LowCardinality(Nullable(T))``."""
        return self.nullable or self.type.replace(" ", "").startswith("LowCardinality(Nullable(")

    @property
    def required(self) -> bool:
        return self.default is None and not self.accepts_null

    @property
    def sql_type(self) -> str:
        return f"Nullable({self.type})" if self.nullable else self.type


@dataclass(frozen=True)
class Datasource:
    name: str
    description: str
    columns: tuple[Column, ...]
    column_ddl: tuple[str, ...]
    engine: str
    tokens: tuple[tuple[str, str], ...]
    source: str
    # The ENGINE* settings as the datafile (and `tb push`) name them, e.g. ("engine_sorting_key", "...").
    engine_settings: tuple[tuple[str, str], ...] = ()
    schema: str = ""  # the SCHEMA block's columns, with their jsonpaths


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: object = None
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Node:
    name: str
    sql: str
    description: str
    type: str
    # The datasource a node writes into: DATASOURCE of a materialized node, TARGET_DATASOURCE of a copy node.
    datasource: str = ""
    copy_schedule: str = ""  # a copy node's COPY_SCHEDULE: a cron expression, or "" / @on-demand
    copy_mode: str = ""  # a copy node's COPY_MODE: append (the default) or replace

    @property
    def templated(self) -> bool:
        return self.sql.lstrip().startswith("%")

    @property
    def template(self) -> str:
        """The SQL without the leading ``%``, as tinybird-cli's renderer expects it."""
        return self.sql.lstrip()[1:] if self.templated else self.sql


@dataclass(frozen=True)
class Pipe:
    name: str
    description: str
    nodes: tuple[Node, ...]
    tokens: tuple[tuple[str, str], ...]
    params: tuple[Param, ...]
    source: str

    @property
    def endpoint(self) -> Node | None:
        for node in reversed(self.nodes):
            if node.type == "endpoint":
                return node
        return None

    @property
    def materialized(self) -> Node | None:
        """The node that writes into a datasource on every insert into its source (TYPE MATERIALIZED)."""
        return next((node for node in self.nodes if node.type == "materialized"), None)

    @property
    def copy(self) -> Node | None:
        """The node whose result a copy job writes into its TARGET_DATASOURCE (TYPE COPY)."""
        return next((node for node in self.nodes if node.type == "copy"), None)


@dataclass(frozen=True)
class Project:
    datasources: dict[str, Datasource] = field(default_factory=dict)
    pipes: dict[str, Pipe] = field(default_factory=dict)


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What the embedded engine runs; anything else is refused at deploy rather than deployed and ignored.
_NODE_TYPES = frozenset({"standard", "default", "endpoint", "materialized", "copy"})
ON_DEMAND = "@on-demand"
COPY_MODES = ("append", "replace")
# Datafile settings of Tinybird's connectors (Kafka, S3, GCS, BigQuery, Snowflake, DynamoDB, ...).
_CONNECTOR_PREFIXES = ("kafka_", "import_")
# Folders that never hold the project's datafiles.
_SKIPPED_FOLDERS = frozenset({"fixtures", "tests", "node_modules", "venv", "env", "__pycache__"})


# Directives of Tinybird's current datafiles about how a deployment moves data, which the Classic
# parser does not know: FORWARD_QUERY (how existing rows reach a changed schema), BACKFILL and
# DEPLOYMENT_METHOD. They say nothing about the resource itself; evtrack's deploy moves data its own
# way (a datasource whose schema changes is rebuilt keeping its common columns), so they are read past.
_DEPLOYMENT_DIRECTIVE = re.compile(r"^(FORWARD_QUERY|BACKFILL|DEPLOYMENT_METHOD)\b", re.IGNORECASE)


def _without_deployment_directives(text: str) -> str:
    kept, block = [], False
    for line in text.splitlines(keepends=True):
        if block and (not line.strip() or line[0] in " \t"):
            continue  # the indented body of a `FORWARD_QUERY >` block
        block = False
        if _DEPLOYMENT_DIRECTIVE.match(line):
            block = line.rstrip().endswith(">")
            continue
        kept.append(line)
    return "".join(kept)


def _parsed(parse, name: str, text: str, kind: str):
    if not _NAME.match(name):
        raise BadRequest(f"Invalid {kind} name '{name}': use letters, digits and underscores, not starting with a digit")
    try:
        return parse(f"{name}.{kind}", content=_without_deployment_directives(text), hide_folders=True)
    except click.ClickException as exc:
        raise BadRequest(f"{name}.{kind}: {click.unstyle(exc.format_message())}") from None
    except Exception as exc:  # the parser raises ValueError and friends on bad files
        raise BadRequest(f"{name}.{kind}: {exc}") from None


def _description(value) -> str:
    return " ".join((value or "").split())


def described_columns(described: list[dict]) -> tuple[Column, ...]:
    """Columns as tinybird-cli's parser and Tinybird's datasource API both describe them
    (``name``, ``type``, ``jsonpath``, ``default_value`` as "DEFAULT expr", ``nullable``)."""
    return tuple(
        Column(
            name=c["name"],
            type=c["type"],
            jsonpath=c.get("jsonpath"),
            default=_default_expression(c.get("default_value")),
            nullable=bool(c.get("nullable")),
        )
        for c in described
    )


def parse_datasource(name: str, text: str) -> Datasource:
    from tinybird import datafile_common
    from tinybird.ch_utils.engine import engine_full_from_dict
    from tinybird.sql import schema_to_sql_columns

    doc = _parsed(datafile_common.parse_datasource, name, text, "datasource")
    node = doc.nodes[0]
    connector = sorted(k for k in node if k.startswith(_CONNECTOR_PREFIXES))
    if connector:
        raise BadRequest(f"{name}.datasource: connectors ({', '.join(k.upper() for k in connector)}) are not supported "
                         "by the embedded engine; deploy this project to Tinybird")
    raw_columns = node["columns"]
    engine = node.get("engine") or {"type": "MergeTree", "args": []}
    try:
        engine_full = engine_full_from_dict(engine["type"], dict(engine["args"]), columns=raw_columns)
    except ValueError as exc:
        raise BadRequest(f"{name}.datasource: {exc}") from None
    return Datasource(
        name=name,
        description=node.get("description") or getattr(doc, "description", "") or "",
        columns=described_columns(raw_columns),
        column_ddl=tuple(schema_to_sql_columns(raw_columns, skip_jsonpaths=True)),
        engine=engine_full,
        tokens=tuple((t["token_name"], t["permissions"]) for t in doc.tokens),
        source=text,
        schema=",\n".join(schema_to_sql_columns(raw_columns)),
        engine_settings=(("engine", engine["type"]), *((f"engine_{k}", str(v)) for k, v in engine["args"])),
    )


def datasource_text(settings: dict) -> str:
    """A datafile from the fields ``tb push`` sends (``schema``, ``description``, ``engine*``)."""
    lines = []
    if settings.get("description"):
        lines += ["DESCRIPTION >", textwrap.indent(settings["description"], "    "), ""]
    lines += ["SCHEMA >", ",\n".join(f"    {c}" for c in split_columns(settings["schema"])), ""]
    for key in ("engine", "engine_sorting_key", "engine_partition_key", "engine_ttl", "engine_ver",
                "engine_primary_key", "engine_settings"):
        if settings.get(key):
            lines.append(f'{key.upper()} "{settings[key]}"')
    return "\n".join(lines) + "\n"


def split_columns(schema: str) -> list[str]:
    """Column definitions separated by top-level commas (not those inside brackets or quotes)."""
    parts, depth, quote, current = [], 0, "", []
    for ch in schema:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'`\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _default_expression(default_value: str | None) -> str | None:
    if not default_value:
        return None
    kind, _, expression = default_value.partition(" ")
    return expression.strip() if kind.upper() == "DEFAULT" else None


def parse_pipe(name: str, text: str) -> Pipe:
    from tinybird import datafile_common

    doc = _parsed(datafile_common.parse_pipe, name, text, "pipe")
    nodes = tuple(
        Node(
            name=n["name"],
            sql=n["sql"],
            description=_description(n.get("description")),
            type=(n.get("type") or "standard").lower(),
            datasource=n.get("datasource") or n.get("target_datasource") or "",
            copy_schedule=(n.get("copy_schedule") or "").strip() if (n.get("type") or "").lower() == "copy" else "",
            copy_mode=(n.get("mode") or "").strip().lower() if (n.get("type") or "").lower() == "copy" else "",
        )
        for n in doc.nodes
    )
    for node in nodes:
        if node.type not in _NODE_TYPES:
            feature = {"sink": "sink pipes (TYPE sink)",
                       "stream": "stream pipes (TYPE stream)"}.get(node.type, f"TYPE {node.type}")
            raise BadRequest(f"{name}.pipe: node '{node.name}': {feature} are not supported by the embedded engine")
        if node.type == "materialized" and not node.datasource:
            raise BadRequest(f"{name}.pipe: node '{node.name}' is TYPE MATERIALIZED but names no DATASOURCE")
        if node.type == "copy":
            _check_copy_node(name, node)
    if sum(node.type in ("endpoint", "materialized", "copy") for node in nodes) > 1:
        raise BadRequest(f"{name}.pipe: a pipe has at most one endpoint, materialized or copy node")
    return Pipe(
        name=name,
        description=_description(getattr(doc, "description", "")),
        nodes=nodes,
        tokens=tuple((t["token_name"], t["permissions"]) for t in doc.tokens),
        params=_params(nodes),
        source=text,
    )


def _check_copy_node(name: str, node: Node) -> None:
    """TARGET_DATASOURCE is required, COPY_MODE is append or replace, COPY_SCHEDULE a cron or @on-demand."""
    from croniter import croniter

    if not node.datasource:
        raise BadRequest(f"{name}.pipe: node '{node.name}' is TYPE COPY but names no TARGET_DATASOURCE")
    if node.copy_mode and node.copy_mode not in COPY_MODES:
        raise BadRequest(f"{name}.pipe: COPY_MODE '{node.copy_mode}' is not one of append, replace")
    if node.copy_schedule and node.copy_schedule != ON_DEMAND and not croniter.is_valid(node.copy_schedule):
        raise BadRequest(f"{name}.pipe: COPY_SCHEDULE '{node.copy_schedule}' is not a cron expression "
                         f"(such as 0 * * * *) nor {ON_DEMAND}")


def pipe_record(pipe: Pipe) -> dict:
    """The parsed pipe as JSON, keyed to its text: what the CLI needs (options, types,
    descriptions) and what rendering needs (the nodes), read back without tinybird-cli's parser."""
    record = {f.name: getattr(pipe, f.name) for f in dataclasses.fields(pipe) if f.name != "source"}
    record["nodes"] = [dataclasses.asdict(n) for n in pipe.nodes]
    record["params"] = [dataclasses.asdict(p) for p in pipe.params]
    record["source_md5"] = hashlib.md5(pipe.source.encode()).hexdigest()
    return record


def pipe_from_record(name: str, text: str, record: dict | None) -> Pipe:
    """The pipe ``text`` as its record says, or parsed when the record is missing or is not of this text."""
    if record and record.get("source_md5") == hashlib.md5(text.encode()).hexdigest():
        fields = {k: v for k, v in record.items() if k != "source_md5"}
        try:
            return Pipe(**{**fields, "name": name, "source": text,
                           "nodes": tuple(Node(**n) for n in fields["nodes"]),
                           "params": tuple(Param(**p) for p in fields["params"]),
                           "tokens": tuple(tuple(t) for t in fields["tokens"])})
        except (KeyError, TypeError):  # a record written by another version of evtrack
            pass
    return parse_pipe(name, text)


def _params(nodes: tuple[Node, ...]) -> tuple[Param, ...]:
    """The template parameters of all nodes, merged by name: the most descriptive use wins."""
    from tinybird.sql_template import get_template_and_variables, get_var_names_and_types

    merged: dict[str, dict] = {}
    for node in nodes:
        if not node.templated:
            continue
        template, _, _ = get_template_and_variables(node.template, node.name)
        for var in get_var_names_and_types(template):
            seen = merged.setdefault(var["name"], {})
            for key in ("type", "description", "default", "required"):
                if var.get(key) not in (None, "") and seen.get(key) in (None, ""):
                    seen[key] = var[key]
    return tuple(
        Param(
            name=name,
            type=info.get("type") or "String",
            default=info.get("default"),
            description=info.get("description") or "",
            required=bool(info.get("required")),
        )
        for name, info in merged.items()
    )


def project_files(root: Path) -> list[Path]:
    """The ``.datasource`` and ``.pipe`` files of the project at ``root``, in either of Tinybird's layouts:
    classic (``datasources/``, ``pipes/``) or Forward (``datasources/``, ``endpoints/``,
    ``materializations/``, ``copies/``, any other folder). ``fixtures/``, ``tests/``, hidden folders
    and virtualenvs are skipped."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(
            d for d in subfolders
            if not d.startswith(".") and d not in _SKIPPED_FOLDERS and not (Path(folder) / d / "pyvenv.cfg").exists()
        )
        found += [Path(folder) / f for f in sorted(files) if f.endswith((".datasource", ".pipe"))]
    return found


def load_project(root: Path) -> Project:
    """Read every datafile of the project at ``root`` (see ``project_files``)."""
    datasources: dict[str, Datasource] = {}
    pipes: dict[str, Pipe] = {}
    where: dict[str, Path] = {}
    for path in project_files(Path(root)):
        kind = path.suffix[1:]
        key = f"{path.stem}.{kind}"
        if key in where:
            raise BadRequest(f"two files define {key}: {where[key]} and {path}")
        where[key] = path
        text = path.read_text(encoding="utf-8")
        if kind == "datasource":
            datasources[path.stem] = parse_datasource(path.stem, text)
        else:
            pipes[path.stem] = parse_pipe(path.stem, text)
    return Project(datasources=datasources, pipes=pipes)


def pipe_text(document: dict, tokens=()) -> str:
    """The datafile a pipe's JSON describes, for tinybird-cli's parser."""
    lines = []
    if document.get("description"):
        lines += ["DESCRIPTION >", textwrap.indent(document["description"], "    "), ""]
    lines += [f'TOKEN "{name}" {permission}' for name, permission in tokens] + ([""] if tokens else [])
    for node in document["nodes"]:
        lines.append(f"NODE {node['name']}")
        if node.get("description"):
            lines += ["DESCRIPTION >", textwrap.indent(node["description"], "    ")]
        lines += ["SQL >", textwrap.indent(textwrap.dedent(node["sql"]).strip("\n"), "    "), ""]
        node_type = (node.get("type") or node.get("node_type") or "").lower()
        if node_type == "endpoint":
            lines += ["TYPE endpoint", ""]
        elif node_type == "materialized" and node.get("datasource"):
            lines += ["TYPE materialized", f"DATASOURCE {node['datasource']}", ""]
        elif node_type == "copy" and (node.get("datasource") or node.get("target_datasource")):
            # Our own record's keys, or those `tb push` sends (target_datasource, copy_schedule, mode).
            lines += ["TYPE copy", f"TARGET_DATASOURCE {node.get('datasource') or node['target_datasource']}"]
            lines += [f"COPY_SCHEDULE {node['copy_schedule']}"] if node.get("copy_schedule") else []
            mode = node.get("copy_mode") or node.get("mode")
            lines += [f"COPY_MODE {mode}"] if mode else []
            lines.append("")
    return "\n".join(lines)
