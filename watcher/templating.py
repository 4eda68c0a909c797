"""The one Jinja2 environment, for every template the product renders: the card's
``report.html`` and the period letters (HTML and plain text).

Templates are looked up in order: a site's override directory (same file names), then the
shipped ``templates/``; ``default:<name>`` always names the shipped one, so an override can
extend what it replaces (``{% extends "default:letter.html.j2" %}``). Installed, the shipped
templates sit inside the package (``watcher/templates``); in a source tree they are at the top
level beside ``watcher/``.

Settings, chosen once for all templates: HTML is autoescaped, ``*.txt.j2`` (the plain-text
letter) is not; an undefined name is an error (StrictUndefined), never an empty string; and
Jinja's default whitespace handling (no ``trim_blocks``/``lstrip_blocks``), because the
plain-text letter places every line break by hand with ``{%-`` and ``-%}``, and a site author
who copies a template gets what Jinja's documentation describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import jinja2

import watcher
from watcher import units
from watcher.errors import TuringwatchError
from watcher.markup import light_markdown, plain

_TEXT_SUFFIXES = (".txt.j2", ".txt")
_TEXT_CELL_MAX = 38


class TemplatesNotFound(TuringwatchError):
    """The shipped templates are not where the package expects them (a broken install)."""


def shipped_templates() -> Path:
    """``watcher/templates`` when installed, else ``templates/`` at the top of the source tree."""
    package = Path(watcher.__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise TemplatesNotFound(f"templates not found next to {package} (is the install complete?)")


def _autoescape(name: str | None) -> bool:
    # A template given as a string (name None) is HTML unless said otherwise.
    return name is None or not name.endswith(_TEXT_SUFFIXES)


# -- filters -----------------------------------------------------------------------------------


class _Badge(Protocol):
    title: str


class _Cell(Protocol):
    text: str
    badges: Sequence[_Badge]


class _Column(Protocol):
    heading: str
    numeric: bool


class _Table(Protocol):
    columns: Sequence[_Column]
    rows: Sequence[Sequence[_Cell]]


def text_table(table: _Table) -> str:
    """A table (a letter's TableView) as aligned plain-text columns, long cells shortened."""
    def short(text: str) -> str:
        return text if len(text) <= _TEXT_CELL_MAX else text[: _TEXT_CELL_MAX - 1] + "…"

    header = [c.heading for c in table.columns]
    # Badge lists are not shortened: they are the point of the row, and the last column.
    body = [
        [", ".join(b.title for b in cell.badges) if cell.badges else short(cell.text)
         for cell in row]
        for row in table.rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    numeric = [c.numeric for c in table.columns]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def _by_name(value: Any, name: str, missing: str = units.DASH) -> str:
    """``value|by_name("elapsed_s")``: the filter form of :func:`watcher.units.by_name`."""
    return units.by_name(name, value, missing=missing)


FILTERS = {
    "md": light_markdown,        # rule texts carry `code`, **bold** and [links](…)
    "plain": plain,              # the same texts for the plain-text letter
    "plural": units.plural,
    "text_table": text_table,
    "bytes": units.size,
    "duration": units.duration,
    "clock": units.clock,
    "pct": units.percent,
    "share": units.share,
    "number": units.number,
    "energy": units.energy,
    "by_name": _by_name,
}


# -- the environment ---------------------------------------------------------------------------


@lru_cache(maxsize=8)
def environment(override_dir: Path | str | None = None) -> jinja2.Environment:
    """The environment over the shipped templates, with ``override_dir`` (if any) in front.

    Callers read the override directory from their configuration and expand it; an empty
    string or None means none.
    """
    shipped = jinja2.FileSystemLoader(shipped_templates())
    loaders: list[jinja2.BaseLoader] = []
    if override_dir:
        loaders.append(jinja2.FileSystemLoader(str(override_dir)))
    loaders += [shipped, jinja2.PrefixLoader({"default": shipped}, delimiter=":")]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
        keep_trailing_newline=False,
    )
    env.filters.update(FILTERS)
    return env
