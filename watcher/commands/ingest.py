"""``turingwatch ingest``: load finished jobs' spools into the site's store."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from watcher.cli import AppContext, pass_app

log = logging.getLogger(__name__)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--keep", is_flag=True,
              help="Leave spools where they are (default: move them to loaded/ or quarantine/).")
@pass_app
def ingest(app: AppContext, paths: tuple[Path, ...], keep: bool) -> None:
    """Load spools (files, spool directories, or jobs' output directories) into the store at
    store.path, creating it if need be.

    Without PATHS, reads sampler.site_spool_dir, where jobs leave their spools when it is set.
    Loading a spool again replaces what it loaded before, so a crash mid-run loses nothing and
    duplicates nothing. In a spool directory, loaded spools move to its loaded/ subdirectory and
    spools that cannot be loaded to quarantine/, each with a <name>.reason file saying why; the
    others go on loading, and the command then fails with the number it could not load. Lines
    that are not spool lines are skipped and counted. Files named one by one and a job's output
    directory stay where they are.
    """
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
