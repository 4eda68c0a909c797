"""``turingwatch run``: run a command and leave a report card of what it used."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from watcher.cli import AppContext, pass_app
from watcher.config import Config
from watcher.errors import ConfigError

MIN_INTERVAL_S = 0.5
log = logging.getLogger(__name__)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-i", "--interval", type=float, help="Seconds between samples (default 10, ≥ 0.5).")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the spool, store, report.html and summary.json.",
)
@click.option("--recycle-malloc", is_flag=True, help="Preload the large-allocation recycler.")
@click.option("--mail", is_flag=True, help="E-mail the report card to the job's user at the end.")
@click.option("--no-gpu", is_flag=True, help="Do not sample GPUs.")
@click.option("-q", "--quiet", is_flag=True, help="Write the reports but print no card.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def run(
    app: AppContext,
    interval: float | None,
    output: Path | None,
    recycle_malloc: bool,
    mail: bool,
    no_gpu: bool,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND, sample what it uses, print a report card, and exit with its status.

    \b
    turingwatch run -- ./simulate --steps 1000
    turingwatch run --interval 2 --output results/watch -- python train.py

    Nothing the watcher does can stop the command: if the configuration is broken or the
    output directory cannot be written, it says so on stderr and the command runs anyway.
    """
    from watcher.watch import runner

    try:
        config = app.config
    except ConfigError as exc:  # not through the CLI's error boundary: the command must start
        log.warning("configuration: %s; using the defaults", exc)
        config = Config()
    interval_s = config.sampler.interval_s if interval is None else interval
    if interval_s < MIN_INTERVAL_S:
        log.warning("--interval %s is below %s s; using %s", interval_s, MIN_INTERVAL_S, MIN_INTERVAL_S)
        interval_s = MIN_INTERVAL_S
    options = runner.RunOptions(
        command=list(command),
        interval_s=interval_s,
        output_dir=output,
        recycle_malloc=recycle_malloc,
        mail=mail,
        quiet=quiet,
        gpu=not no_gpu,
    )
    runner.exit_like(runner.run(config, options))
