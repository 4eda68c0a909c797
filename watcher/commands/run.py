"""``turingwatch run``: run a command and leave a report card of what it used."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import click

from watcher.cli import AppContext, pass_app
from watcher.config import Config
from watcher.errors import ConfigError

log = logging.getLogger(__name__)


class _RunCommand(click.Command):
    """``run`` with a usage error, not a job, for an option it does not know.

    Without this, click's ``ignore_unknown_options`` would make ``run --ouput d -- cmd`` run the
    command ``--ouput``; click's own refusal reads "No such option: --ouput Did you mean
    --output?" in one breath, so the message is said again in the card's words.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            raise click.UsageError(_no_such_option(exc.option_name, self), ctx) from exc


def _no_such_option(name: str, command: click.Command) -> str:
    known = [opt for param in command.params for opt in getattr(param, "opts", [])
             if opt.startswith("--")]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else " (the command to run goes after --)"
    return f"no such option {name}{hint}"


# The option values are read as plain text and checked by the watcher, not by click: a value
# click refused (`-i 5x`, an output path that is a file) would stop the job from starting at
# all. An unknown option before the command is refused (a typo must not become the command).
@click.command(cls=_RunCommand, context_settings={"allow_interspersed_args": False})
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
@click.option(
    "--card",
    "card_to",
    metavar="PATH",
    help="Write the card to PATH ('-': stdout) instead of stderr.",
)
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
    card_to: str | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND, sample what it uses, leave a report card on stderr, and exit with its status.

    \b
    turingwatch run -- ./simulate --steps 1000
    turingwatch run --interval 2 --output results/watch -- python train.py
    turingwatch run -- python gen.py > out.csv      (the card stays on the terminal)

    Nothing the watcher does can stop the command: if the configuration is broken or the
    output directory cannot be written, it says so on stderr and the command runs anyway.
    Only an option it does not know, before the command, is refused (exit 2): a typo must
    not run as the command.
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
        command=list(command),
        interval_s=runner.sampling_interval(interval, config.sampler.interval_s, logger=log),
        output_dir=output,
        recycle_malloc=recycle_malloc,
        mail=mail,
        quiet=quiet,
        card_to=card_to,
        gpu=not no_gpu,
    )
    runner.exit_like(runner.run(config, options))

