"""``turingwatch intercepter``: where the malloc recycler is, and what it saved."""

from __future__ import annotations

import json
from pathlib import Path

import click

from watcher.watch.intercept import ENV_STATS, collect_stats, format_summary, library_path


@click.command()
@click.option("--path", "show_path", is_flag=True, help="Print only the library's path.")
@click.option(
    "--stats",
    "stats_prefix",
    type=click.Path(path_type=Path),
    help=f"Summarise the statistics files under this prefix or directory (what {ENV_STATS} named).",
)
@click.option("--json", "as_json", is_flag=True, help="With --stats: print the totals as JSON.")
def intercepter(show_path: bool, stats_prefix: Path | None, as_json: bool) -> None:
    """The LD_PRELOAD library that recycles large allocations (run --recycle-malloc uses it).

    To use it yourself, then see what it saved:

    \b
        export TURINGWATCH_INTERCEPT_STATS=/tmp/stats
        LD_PRELOAD=$(turingwatch intercepter --path) CMD
        turingwatch intercepter --stats /tmp/stats
    """
    if stats_prefix is not None:
        totals = collect_stats(stats_prefix)
        click.echo(json.dumps(totals, indent=2) if as_json else format_summary(totals))
        return
    path = library_path()
    if show_path:
        click.echo(str(path))
        return
    click.echo(f"library: {path}")
    click.echo(f"use:     LD_PRELOAD={path} {ENV_STATS}=/tmp/stats CMD")
