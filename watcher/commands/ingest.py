"""``turingwatch ingest``: load finished jobs' spools into the site's store."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from watcher.cli import AppContext, pass_app
from watcher.config import Config

if TYPE_CHECKING:
    from watcher.sending import SpoolState

log = logging.getLogger(__name__)
# Seconds between two progress lines of --send.
_PROGRESS_EVERY_S = 2.0


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--keep", is_flag=True,
              help="Leave spools where they are (default: move them to loaded/ or quarantine/).")
@click.option("--send", is_flag=True,
              help="Deliver what the spools under PATHS hold undelivered to server.url instead "
                   "of loading them (directories are walked, links not followed).")
@pass_app
def ingest(app: AppContext, paths: tuple[Path, ...], keep: bool, send: bool) -> None:
    """Load spools (files, spool directories, or jobs' output directories) into the store at
    store.path, creating it if need be.

    Without PATHS, reads sampler.site_spool_dir, where jobs leave their spools when it is set.
    Loading a spool again replaces what it loaded before, so a crash mid-run loses nothing and
    duplicates nothing. In a spool directory, loaded spools move to its loaded/ subdirectory and
    spools that cannot be loaded to quarantine/, each with a <name>.reason file saying why; the
    others go on loading, and the command then fails with the number it could not load. Lines
    that are not spool lines are skipped and counted. Files named one by one and a job's output
    directory stay where they are.

    With --send, each spool's undelivered lines go to the server (its <spool>.sent file says how
    far it was delivered; nothing is moved), one line per spool says what was delivered or why
    not, and the command fails unless everything was.
    """
    if send:
        if keep:
            raise click.UsageError("--keep has no meaning with --send (it moves nothing)")
        _send(app.config, paths)
        return
    from watcher.config import expand_path
    from watcher.store import Store
    from watcher.store.ingest import SpoolTrust, find_spools, ingest_spools

    config = app.config
    if paths:
        spools = find_spools(named=paths)
    elif config.sampler.site_spool_dir:
        spools = find_spools(directories=[expand_path(config.sampler.site_spool_dir)])
    else:
        raise click.UsageError("give spool files or directories, or set sampler.site_spool_dir")
    trust = SpoolTrust(config.store.service_user)

    with Store.site(config, create=True) as store:
        report = ingest_spools(store, spools, trust=trust, keep=keep)

    for path, loaded in report.loaded:
        click.echo(f"{path.name}: {loaded.samples} samples{_skipped(loaded.skipped)}")
    for path, running in report.running:
        click.echo(f"{path.name}: job still running, {running.samples} samples so far"
                   f"{_skipped(running.skipped)}")
    for refused in report.refused:  # the reason names the spool
        where = f"; set aside in {refused.set_aside.parent}/" if refused.set_aside else ""
        log.warning("skipped %s%s", refused.reason, where)

    report.log_summary()
    if report.refused:
        raise click.ClickException(f"{len(report.refused)} spool(s) could not be loaded")


def _skipped(lines: int) -> str:
    return f", {lines} line(s) skipped as garbage" if lines else ""


def _send(config: Config, paths: tuple[Path, ...]) -> None:
    """Deliver the spools under ``paths`` to the server; fail unless all of it went."""
    from watcher import logsetup
    from watcher.sending import SpoolSender, spools_under
    from watcher.units import size

    if not paths:
        raise click.UsageError("--send needs the spools or directories to send")
    if not config.server.url:
        raise click.UsageError("--send needs server.url (in the config, or TURINGWATCH_SERVER_URL)")
    sender = SpoolSender(config.server, config.auth)  # a bad URL or key: the CLI says so
    spools = spools_under(paths)
    states = [sender.add(path) for path in spools]
    total = sender.pending_bytes()
    # Progress on a terminal only (a cron mail wants the result, not the way there); -q wins.
    if _isatty(sys.stderr) and logging.getLogger("watcher").getEffectiveLevel() <= logging.WARNING:
        logsetup.at_least(logging.INFO)
    said = [time.monotonic()]

    def progress(state: SpoolState) -> None:
        if time.monotonic() - said[0] >= _PROGRESS_EVERY_S:
            said[0] = time.monotonic()
            left = sender.pending_bytes()
            log.info("sending spool %d of %d: %s of %s delivered", states.index(state) + 1,
                     len(states), size(max(0, total - left)), size(total))

    sender.deliver(spools, progress=progress)
    failed = 0
    for state in states:
        line, ok = _sent_line(state)
        failed += not ok
        click.echo(f"{state.path}: {line}")
    if failed:
        raise click.ClickException(f"{failed} of {len(states)} spool(s) not fully delivered")


def _sent_line(state: SpoolState) -> tuple[str, bool]:
    """What became of one spool, and whether all of it is delivered now."""
    from watcher.units import plural, size

    parts = []
    if state.sent_lines:
        parts.append(f"delivered {plural(state.sent_lines, 'line')} ({size(state.sent_bytes)})")
        if state.duplicates:
            parts.append(f"{state.duplicates} already on the server")
    if state.skipped_lines or state.refusals:
        parts.append(f"{plural(state.skipped_lines, 'line')} refused and skipped "
                     f"({'; '.join(dict.fromkeys(state.refusals))})")
    if state.problem is not None:
        left = f"{size(state.undelivered)} left for a later try: " if state.undelivered else ""
        parts.append(f"not delivered: {left}{state.problem}")
        return ", ".join(parts), False
    if not parts:
        return "nothing to deliver (all of it was before)", True
    return ", ".join(parts), not (state.skipped_lines or state.refusals)


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
