"""Printing query results: a table on a terminal, Tinybird's JSON otherwise, or CSV/NDJSON."""

from __future__ import annotations

import json

import click

__all__ = ["OUTPUT_FORMATS", "engine_format", "render"]

OUTPUT_FORMATS = ("table", "json", "csv", "ndjson")


def engine_format(fmt: str) -> str:
    """What to ask the engine for: a table is drawn from the JSON result."""
    return "json" if fmt == "table" else fmt


def render(body: bytes, fmt: str) -> str:
    if fmt != "table":
        return body.decode("utf-8", errors="replace").rstrip("\n")
    result = json.loads(body)
    names = [m["name"] for m in result.get("meta", [])]
    rows = [[_cell(row.get(n)) for n in names] for row in result.get("data", [])]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = "  ".join
    out = [line(click.style(n.ljust(w), bold=True) for n, w in zip(names, widths))]
    out += [line(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    out.append(click.style(f"{result.get('rows', len(rows))} row{'s' if len(rows) != 1 else ''}", dim=True))
    return "\n".join(out)


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
