"""The Jinja2 environment over ``templates/``, shared by every HTML the product renders.

Installed, the templates sit inside the package (``watcher/templates``); in a source tree they
are at the top level beside ``watcher/``. A site overrides a template by putting a file of
the same name in a directory passed as ``extra_dirs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import jinja2

import watcher
from watcher.markup import light_markdown


def templates_dir() -> Path:
    package = Path(watcher.__file__).resolve().parent
    installed = package / "templates"
    return installed if installed.is_dir() else package.parent / "templates"


@cache
def environment(extra_dirs: Sequence[str] = ()) -> jinja2.Environment:
    """Autoescaping environment; ``extra_dirs`` come first so a site can override a template."""
    loader = jinja2.FileSystemLoader([*extra_dirs, str(templates_dir())])
    env = jinja2.Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(("html", "j2", "xml")),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md"] = light_markdown   # rule texts carry `code` and **bold**
    return env
