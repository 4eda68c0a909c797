"""``turingwatch watch-script``: where watch.sh is, for ``. "$(turingwatch watch-script)"``."""

from __future__ import annotations

from pathlib import Path

import click

SCRIPT = "watch.sh"


class ScriptNotFound(click.ClickException):
    """watch.sh is not where the package expects it (a broken install)."""


def watch_script_path() -> Path:
    """``watcher/scripts/watch.sh`` when installed, else ``scripts/watch.sh`` at the top of the
    source tree (as the templates are found)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "scripts" / SCRIPT, package.parent / "scripts" / SCRIPT):
        if candidate.is_file():
            return candidate
    raise ScriptNotFound(f"{SCRIPT} not found next to {package} (is the install complete?)")


@click.command("watch-script")
def watch_script() -> None:
    """Print the path of watch.sh: source it near the top of a batch script to watch the whole
    job, every node, with a report card at its end:

    \b
    . "$(turingwatch watch-script)"
    """
    click.echo(str(watch_script_path()))
