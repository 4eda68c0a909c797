"""``turingwatch run``: run a command and leave a report card of what it used."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from watcher.cli import AppContext, pass_app
from watcher.config import Config
from watcher.errors import ConfigError

log = logging.getLogger(__name__)


# The options are read as plain text and checked by the watcher, not by click: a value click
# refused (`-i 5x`, an output path that is a file) would stop the job from starting at all.
@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-i", "--interval", help="Seconds between samples (default 10, 0.5 to 3600).")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
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
    interval: str | None,
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
    except Exception as exc:  # not through the CLI's error boundary: the command must start
        # A ConfigError says what is wrong; anything else is a bug, named by its type.
        what = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        log.warning("configuration: %s; using the defaults", what)
        config = Config()
    options = runner.RunOptions(
        command=_without_unknown_options(list(command)),
        interval_s=runner.sampling_interval(interval, config.sampler.interval_s, logger=log),
        output_dir=output,
        recycle_malloc=recycle_malloc,
        mail=mail,
        quiet=quiet,
        gpu=not no_gpu,
    )
    runner.exit_like(runner.run(config, options))


def _without_unknown_options(command: list[str]) -> list[str]:
    """The command after ``--``, when options this turingwatch does not know came before it
    (``run --newer-option 2 -- CMD``, written for a later version): click passed them on as the
    command's first words, and the job would not start."""
    if command and command[0].startswith("-") and "--" in command:
        split = command.index("--")
        log.warning("unknown option(s) ignored: %s", " ".join(command[:split]))
        return command[split + 1:]
    return command
