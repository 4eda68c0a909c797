"""``turingwatch import-accounting``: jobs and steps from Slurm accounting into the store."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from watcher import logsetup
from watcher.cli import AppContext, pass_app, whose_jobs
from watcher.progress import ProgressBar
from watcher.units import plural

if TYPE_CHECKING:
    from watcher.accounting.importer import ImportResult

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([dhm])")
_UNIT = {"d": "days", "h": "hours", "m": "minutes"}
log = logging.getLogger(__name__)
_SHOWN = 10  # job ids a warning names


class When(click.ParamType):
    """A moment: 'now', '7d' / '12h' / '30m' ago, or an ISO date or time (this machine's
    time zone unless it names one)."""

    name = "TIME"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        now = datetime.now(UTC)
        if text == "now":
            return now
        ago = _AGO.fullmatch(text)
        if ago:
            return now - timedelta(**{_UNIT[ago.group(2)]: float(ago.group(1))})
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is not 'now', 7d/12h/30m, or an ISO date or time", param, ctx)
        return moment if moment.tzinfo else moment.astimezone()


@click.command("import-accounting")
@click.option("--since", type=When(), help="Start of the span (default: where the last import ended).")
@click.option("--until", type=When(), help="End of the span (default: now).")
@click.option("--user", metavar="NAME", help="Import only this user's jobs (default for non-root).")
@click.option("--all-users", is_flag=True, help="Import every user's jobs (default for root).")
@click.option(
    "--from-file",
    "source_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read sacct output (with its header) from this file, '-' for stdin, instead of "
    "running sacct.",
)
@click.option(
    "--timezone",
    metavar="ZONE",
    help="Time zone of the times in --from-file (default: this machine's).",
)
@click.option(
    "--print-command",
    is_flag=True,
    help="Print the sacct command for the span, to run on another host, and exit.",
)
@click.option(
    "-v", "--verbose", is_flag=True,
    help="A line per imported window, also when stderr is no terminal (as turingwatch -v).",
)
@pass_app
def import_accounting(
    app: AppContext,
    since: datetime | None,
    until: datetime | None,
    user: str | None,
    all_users: bool,
    source_file: str | None,
    timezone: str | None,
    print_command: bool,
    verbose: bool,
) -> None:
    """Import jobs and steps from sacct into the store.

    Incremental: each run starts where the last one ended (less slurm.import_overlap_minutes)
    and re-importing a span replaces what it held, so running jobs that have finished since
    get their end. Each window of slurm.import_chunk_days is stored all or nothing.
    """
    from watcher.accounting.importer import WindowResult, windows
    from watcher.accounting.importer import import_accounting as run_import
    from watcher.slurm.sacct import sacct_command, shell_line
    from watcher.store import Store

    config = app.config
    who = whose_jobs(user, all_users)
    _check_span(since, until)
    if print_command:
        end = (until or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        start = (since or end - timedelta(days=config.slurm.import_first_days)).astimezone(UTC)
        click.echo(shell_line(sacct_command(config.slurm.sacct, start, end, user=who)))
        click.echo(
            "# then: turingwatch import-accounting --from-file FILE --timezone UTC"
            f" --since {start.replace(microsecond=0).isoformat()} --until {end.isoformat()}"
            + (f" --user {who}" if who else " --all-users")
        )
        return

    if verbose:
        logsetup.at_least(logging.INFO)

    # On a terminal the windows move one bar; elsewhere (and with -v) each is an INFO line.
    # The count of windows is known only when --since is (else the importer finds the start).
    chunk = timedelta(days=config.slurm.import_chunk_days)
    total = (len(list(windows(since, until or datetime.now(UTC), chunk)))
             if since is not None and source_file is None else None)
    bar = ProgressBar("import-accounting", total=total)

    def progress(window: WindowResult) -> None:
        bar.advance(1, f"{_short(window.start)} .. {_short(window.end)}: {window.jobs} jobs")
        if verbose or not bar.shown:
            log.info("%s .. %s: %d jobs, %d steps (%.1f s)", _short(window.start),
                     _short(window.end), window.jobs, window.steps, window.seconds)

    with bar, Store.site(config, create=True) as store:  # a writer: the first makes the store
        result = run_import(
            store, config, since, until, user=who, source_file=source_file,
            timezone=timezone, progress=progress,
        )  # fmt: skip
    whose = "every user" if result.as_user is None else result.as_user
    click.echo(
        f"imported {result.jobs} jobs and {result.steps} steps of cluster {result.cluster}"
        f" ({whose}) in {len(result.windows)} window(s)"
    )
    for line in summary_notes(result):
        click.echo(line)
    if result.orphan_steps:
        log.warning("%s", orphans_warning(result))


def summary_notes(result: ImportResult) -> list[str]:
    """What the summary says about jobs that were stored but cannot be analysed (yet)."""
    notes = []
    if result.never_started:
        notes.append(f"{plural(result.never_started, 'job')} never started (ended while pending):"
                     " stored, not analysed")  # fmt: skip
    if result.pending:
        once = "it has" if result.pending == 1 else "they have"
        notes.append(f"{plural(result.pending, 'job')} still pending: stored, analysed once {once} run")
    return notes


def orphans_warning(result: ImportResult) -> str:
    """The warning for steps stored although neither the output nor the store has their job."""
    jobs = result.orphan_jobs
    shown = ", ".join(map(str, jobs[:_SHOWN]))
    if len(jobs) > _SHOWN:
        shown += f" and {len(jobs) - _SHOWN} more"
    return (
        f"{plural(result.orphan_steps, 'step')} stored without their job"
        f" ({'job' if len(jobs) == 1 else 'jobs'} {shown}): the output has no job line for them"
        " (sacct --state and -j N.step print steps alone) and the store does not hold the job;"
        " they are analysed once an import brings the job line"
    )


def _check_span(since: datetime | None, until: datetime | None) -> None:
    """--since must come before --until (now when not given): a usage error, exit 2."""
    if since is None:
        return
    end = until if until is not None else datetime.now(UTC)
    if since >= end:
        shown = end.isoformat(timespec="seconds") if until is not None else "now"
        raise click.UsageError(f"--since {since.isoformat(timespec='seconds')} is not before --until {shown}")


def _short(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")
