"""``turingwatch jobs``: one line per job, like reportseff, from the store (read-only).

The options for where the jobs come from and for colour are shared with ``turingwatch job``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from watcher import units
from watcher.cli import AppContext, pass_app
from watcher.commands.accounting import When

# efficiency -> colour: at least GOOD green, at least FAIR yellow, below red (reportseff's idea)
GOOD, FAIR = 0.7, 0.3
# column: (header, width, align); with their one-space gaps 100 columns, the user column included
COLUMNS = (
    ("job_id", "JobID", 11, "<"), ("user", "User", 8, "<"), ("name", "Name", 10, "<"),
    ("state", "State", 18, "<"), ("elapsed", "Elapsed", 10, ">"), ("time_eff", "TimeEff", 7, ">"),
    ("cpu_eff", "CPUEff", 6, ">"), ("mem_eff", "MemEff", 6, ">"), ("gpu_eff", "GPUEff", 6, ">"),
    ("idle", "IdleCoreH", 9, ">"),
)
# csv and json: every column the query gives, at full precision
FIELDS = ("cluster", "job_id", "job_id_display", "job_name", "user_name", "account", "partition",
          "state", "exit_code", "exit_signal", "end_text", "start_time", "end_time", "elapsed_s",
          "time_limit_s", "nnodes", "ncpus", "ngpus", "total_cpu_s", "max_rss_bytes",
          "req_mem_bytes", "time_eff", "cpu_eff", "mem_eff", "gpu_eff", "idle_core_hours",
          "idle_gpu_hours")


def source_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--store, --published, --cluster and --color, shared by ``job`` and ``jobs``."""
    fn = click.option("--color", "colour", type=click.Choice(["auto", "always", "never"]),
                      default="auto", show_default=True,
                      help="Colour the text: auto on a terminal unless NO_COLOR is set.")(fn)
    fn = click.option("--cluster", metavar="NAME", help="Only this cluster's jobs.")(fn)
    fn = click.option(
        "--published", "published", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
        help="Read what the server published in DIR (default when the store cannot be opened: "
        "server.publish_dir).")(fn)
    return click.option("--store", "store_path", metavar="PATH", type=click.Path(dir_okay=False),
                        help="The store to read (default: store.path); opened read-only.")(fn)


def use_colour(choice: str, stream: Any = None) -> bool:
    """Colour on a terminal, never with NO_COLOR (no-color.org), unless forced either way."""
    if choice != "auto":
        return choice == "always"
    stream = sys.stdout if stream is None else stream
    return not os.environ.get("NO_COLOR") and hasattr(stream, "isatty") and stream.isatty()


def efficiency_colour(value: float | None) -> str | None:
    if value is None:
        return None
    return "green" if value >= GOOD else "yellow" if value >= FAIR else "red"


def paint(text: str, colour: str | None, on: bool, *, bold: bool = False) -> str:
    return click.style(text, fg=colour, bold=bold) if on and (colour or bold) else text


@click.command("jobs")
@click.option("--since", type=When(), help="Jobs that ended after this (7d, 12h, 2026-11-20…).")
@click.option("--until", type=When(), help="Jobs that started before this.")
@click.option("--state", "states", multiple=True, metavar="STATE",
              help="Only jobs in this state (COMPLETED, FAILED, TIMEOUT…; repeatable or "
              "comma-separated).")
@click.option("--user", metavar="NAME", help="Only this user's jobs (others' only for admins).")
@click.option("--all-users", is_flag=True, help="Every user's jobs (the default for admins).")
@click.option("--name", metavar="GLOB", help="Only jobs whose name matches (train-*).")
@click.option("--sort", type=click.Choice(["end", "waste"]), default="end", show_default=True,
              help="end: the newest jobs, oldest first; waste: most idle core-hours first.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True,
              help="At most this many jobs (the newest, or the most wasteful).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text",
              show_default=True)
@source_options
@pass_app
def jobs(app: AppContext, since: datetime | None, until: datetime | None, states: tuple[str, ...],
         user: str | None, all_users: bool, name: str | None, sort: str, limit: int, fmt: str,
         store_path: str | None, published: Path | None, cluster: str | None, colour: str) -> None:
    """List jobs with their efficiencies, one line each, like reportseff.

    Efficiencies: time (elapsed of the limit), CPU (CPU time of elapsed × cores), memory (peak
    of requested), GPU (mean utilization, where the watcher sampled the GPUs). IdleCoreH: the
    core-hours reserved and left idle. Non-admins see their own jobs.
    """
    from watcher.analysis.lookup import JobFilter, JobLookupError, is_admin, list_jobs, open_source, viewer

    config = app.config
    me = viewer()
    admin = is_admin(config, me)
    if user and all_users:
        raise click.UsageError("--user and --all-users exclude each other")
    if (all_users or (user and user != me)) and not admin:
        raise JobLookupError(f"only root and web.admin_users may list other users' jobs; you are {me}")
    if all_users:
        who = None
    elif user:
        who = user
    else:
        who = None if admin else me
    wanted_states = tuple(s.strip() for part in states for s in part.split(",") if s.strip())
    source = open_source(config, store_path, published)
    with source.store:
        rows = list_jobs(source, JobFilter(
            user=who, states=wanted_states or None, name=name, since=since, until=until,
            cluster=cluster, sort=sort, limit=limit,
        ))
    for row in rows:
        row["end_text"] = row["end"]["text"]
    if fmt == "json":
        click.echo(json.dumps([{k: _plain(row[k]) for k in FIELDS} for row in rows], indent=2))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        writer.writerows([[_csv(row[k]) for k in FIELDS] for row in rows])
        click.echo(out.getvalue(), nl=False)
    else:
        on = use_colour(colour)
        for line in text_lines(rows, colour=on, with_user=who is None):
            click.echo(line, color=on)  # click strips colour off a pipe unless told


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _csv(value: Any) -> Any:
    value = _plain(value)
    return "" if value is None else value


def text_lines(rows: list[dict[str, Any]], *, colour: bool, with_user: bool) -> list[str]:
    """The table: a header, one line per job, a total of the idle core-hours."""
    columns = [c for c in COLUMNS if with_user or c[0] != "user"]
    if not rows:
        return ["no jobs match"]
    header = " ".join(f"{title:{align}{width}}" for _, title, width, align in columns)
    lines = [paint(header, None, colour, bold=True)]
    for row in rows:
        cells = []
        for key, _, width, align in columns:
            text, hue = _cell(key, row)
            if len(text) > width:
                text = text[: width - 1] + "…"
            cells.append(paint(f"{text:{align}{width}}", hue, colour))
        lines.append(" ".join(cells).rstrip())
    idle = sum(r["idle_core_hours"] or 0 for r in rows)
    gpu_idle = sum(r["idle_gpu_hours"] or 0 for r in rows)
    total = f"{units.plural(len(rows), 'job')}: {idle:,.1f} idle core-hours"
    if any(r["idle_gpu_hours"] is not None for r in rows):
        total += f", {gpu_idle:,.1f} idle GPU-hours"
    lines.append(total)
    return lines


def _cell(key: str, row: dict[str, Any]) -> tuple[str, str | None]:
    if key == "job_id":
        return row["job_id_display"], None
    if key == "user":
        return row["user_name"] or "", None
    if key == "name":
        return row["job_name"] or "", None
    if key == "state":
        end = row["end"]  # jobstate's phrase, made short for a column: "FAILED, SIGSEGV"
        text = end["text"].replace("exit code", "exit").replace("killed by ", "")
        return text, "red" if end["bad"] else "cyan" if end["running"] else "green"
    if key == "elapsed":
        return units.clock(row["elapsed_s"], missing="-"), None
    if key == "idle":
        idle = row["idle_core_hours"]
        return ("-" if idle is None else f"{idle:,.1f}"), "red" if (idle or 0) >= 1 else None
    value = row[key]
    if key == "time_eff":  # a limit far above the run is waste of the queue, not of cores
        return units.share(value, missing="-"), efficiency_colour(value) if value is not None else None
    return units.share(value, missing="-"), efficiency_colour(value)
