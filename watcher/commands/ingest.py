"""``turingwatch ingest``: load finished jobs' spools into the site's store."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from watcher.cli import AppContext, pass_app

log = logging.getLogger(__name__)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--keep", is_flag=True, help="Leave loaded spools where they are (default: move to loaded/).")
@pass_app
def ingest(app: AppContext, paths: tuple[Path, ...], keep: bool) -> None:
    """Load spools (files, or directories of them) into the store at store.path.

    Without PATHS, reads sampler.site_spool_dir, where jobs leave their spools when it is
    set. Loading a spool again replaces what it loaded before, so a crash mid-run loses
    nothing and duplicates nothing; loaded files move to a loaded/ subdirectory.
    """
    from watcher import spool
    from watcher.config import expand_path
    from watcher.store import Store, StoreError
    from watcher.store.spool_loader import load_spool

    config = app.config
    if not paths:
        if not config.sampler.site_spool_dir:
            raise click.UsageError("give spool files or directories, or set sampler.site_spool_dir")
        paths = (expand_path(config.sampler.site_spool_dir),)
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.glob("*.jsonl") if not p.name.startswith("."))
            files += spool.spool_files(path)  # a job's output directory
        else:
            files.append(path)

    failed = 0
    with Store.site(config) as store:
        for path in files:
            try:
                loaded = load_spool(store, path)
            except StoreError as exc:
                failed += 1
                log.warning("skipped %s: %s", path, exc)
                continue
            if not loaded.ended:
                click.echo(f"{path.name}: job still running, {loaded.samples} samples so far")
                continue  # loaded for now; loaded again (replacing) once it has ended
            click.echo(f"{path.name}: {loaded.samples} samples")
            if not keep and path.parent.name != "spool":
                done = path.parent / "loaded"
                done.mkdir(exist_ok=True)
                path.rename(done / path.name)
    if failed:
        raise click.ClickException(f"{failed} spool(s) could not be loaded")
