"""How every command prints: ``--output table|json|yaml|csv``.

One shape for each format, whichever server answered (the local data directory or a
remote one through the REST API):

- ``json`` and ``yaml``: a list is ``{"items": [...], "total": N, "next": CURSOR}``
  (``total`` counts every match, ``next`` is the cursor of the following page or null);
  one object is that object. The fields are the REST API's, documented in
  ``docs/cli.md`` and at ``/docs``.
- ``csv``: a header row, then one row an item (nested values as JSON).
- ``table`` (the default): columns for people; without box-drawing when standard output
  is not a terminal, and never cutting an id short. A list's count and the next page's
  cursor go to standard error.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

__all__ = [
    "Column",
    "Format",
    "OutputOption",
    "default_format",
    "render_done",
    "render_item",
    "render_page",
    "set_default_format",
]


class Format(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"
    csv = "csv"


OutputOption = Annotated[
    Format | None,
    typer.Option("--output", "-o", help="table (default), json, yaml or csv", show_default=False),
]

_default: list[Format] = [Format.table]


def set_default_format(value: Format | None) -> None:
    """The format of commands not given their own ``--output`` (the global option)."""
    _default[0] = value or Format.table


def default_format() -> Format:
    return _default[0]


def _format(value: Format | None) -> Format:
    return value or _default[0]


@dataclass(frozen=True)
class Column:
    """A table or CSV column: its title and the field (dotted for nested) or a function."""

    title: str
    field: str | Callable[[Mapping[str, Any]], Any]
    key: bool = False  # an id to copy: never wrapped or cut

    def value(self, item: Mapping[str, Any]) -> Any:
        if callable(self.field):
            return self.field(item)
        found: Any = item
        for part in self.field.split("."):
            found = found.get(part) if isinstance(found, Mapping) else None
        return found


_INSTANT = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(Z|\+00:00)")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        instant = _INSTANT.fullmatch(value)  # a table shows times to the second, in UTC
        return f"{instant[1]} {instant[2]}Z" if instant else value
    if isinstance(value, Mapping | list | tuple):
        if isinstance(value, Mapping):
            return ", ".join(f"{k}:{v}" for k, v in value.items()) or "-"
        return " ".join(str(v) for v in value) or "-"
    return str(value)


def _console() -> Console:
    terminal = sys.stdout.isatty()
    # Off a terminal nothing is wrapped: a line per row, whatever its length.
    return Console(
        highlight=False, emoji=False, soft_wrap=True, width=None if terminal else 1_000_000
    )


def _table(items: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> Table:
    terminal = sys.stdout.isatty()
    table = Table(box=box.SIMPLE_HEAD if terminal else None, pad_edge=False)
    for column in columns:
        width = max((len(_text(column.value(i))) for i in items), default=0)
        if column.key:
            table.add_column(column.title, no_wrap=True, min_width=max(width, len(column.title)))
        else:
            table.add_column(column.title, overflow="fold")
    for item in items:
        table.add_row(*(_text(column.value(item)) for column in columns))
    return table


def _csv(items: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([c.title for c in columns])
    for item in items:
        row = []
        for column in columns:
            value = column.value(item)
            if isinstance(value, Mapping | list | tuple):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            row.append("" if value is None else value)
        writer.writerow(row)


def _dump(data: Any, fmt: Format) -> None:
    if fmt is Format.json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def render_page(
    page: Mapping[str, Any], columns: Sequence[Column], output: Format | None, *, noun: str
) -> None:
    """Print one page of a list (``items``, ``total``, ``next``)."""
    fmt = _format(output)
    items = list(page.get("items", []))
    shaped = {"items": items, "total": page.get("total", len(items)), "next": page.get("next")}
    if fmt in (Format.json, Format.yaml):
        _dump(shaped, fmt)
        return
    if fmt is Format.csv:
        _csv(items, columns)
        return
    _console().print(_table(items, columns))
    err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)
    total = shaped["total"]
    summary = f"{len(items)} of {total} {noun}" if total != len(items) else f"{total} {noun}"
    if shaped["next"]:
        summary += f"; next page: --cursor {shaped['next']} (or --all)"
    err.print(summary)


def render_item(
    item: Mapping[str, Any], output: Format | None, *, fields: Sequence[Column]
) -> None:
    """Print one object: as a field/value table, or whole in json/yaml, or one csv row."""
    fmt = _format(output)
    if fmt in (Format.json, Format.yaml):
        _dump(dict(item), fmt)
    elif fmt is Format.csv:
        _csv([item], fields)
    else:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column("field", style="bold")
        table.add_column("value", no_wrap=False, overflow="fold")
        for column in fields:
            table.add_row(column.title, _text(column.value(item)))
        _console().print(table)


def render_done(
    item: Mapping[str, Any] | None,
    output: Format | None,
    message: str,
    *,
    fields: Sequence[Column] = (),
) -> None:
    """The answer of an action: ``message`` for people (table), the object it returned
    for programs (json, yaml, csv)."""
    fmt = _format(output)
    if fmt is Format.table or item is None:
        if fmt is Format.table:
            _console().print(message)
        else:
            _dump({"message": message}, fmt)
        return
    render_item(item, fmt, fields=fields or [Column(k, k) for k in item])
