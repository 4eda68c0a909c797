"""The ``turingwatch`` command line.

Subcommands live in ``watcher/commands/`` and are imported only when invoked, so that
``turingwatch run`` does not pay for DuckDB, Jinja2 or Flask before the job starts.

This is the one error boundary of every command: a :class:`~watcher.errors.TuringwatchError`
(or a ``click.ClickException`` a command raises) becomes ``turingwatch <command>: <message>``
on stderr and the error's exit status (1, or 2 for configuration and usage errors). Anything
else is a bug and keeps its traceback. ``run`` handles its own configuration errors before they
get here: the job's command starts whatever the watcher's trouble. Logging is configured here
too, once, before the command runs (``watcher.logsetup``).
"""

from __future__ import annotations

import getpass
import importlib
import logging
import os
from typing import IO, Any, NoReturn

import click

from watcher import __version__
from watcher.config import Config, load_config
from watcher.errors import TuringwatchError
from watcher.logsetup import setup_logging

log = logging.getLogger(__name__)

# command name -> "module:attribute"
COMMANDS = {
    "run": "watcher.commands.run:run",
    "attach": "watcher.commands.attach:attach",
    "watch-script": "watcher.commands.watch_script:watch_script",
    "config": "watcher.commands.config:config",
    "import-accounting": "watcher.commands.accounting:import_accounting",
    "ingest": "watcher.commands.ingest:ingest",
    "analyze": "watcher.commands.analyze:analyze",
    "rules": "watcher.commands.analyze:rules",
    "mail": "watcher.commands.mail:mail",
    "intercepter": "watcher.commands.intercepter:intercepter",
    "server": "watcher.commands.server:server",
    "status": "watcher.commands.server:status",
    "scrape": "watcher.commands.scrape:scrape",
    "distributor": "watcher.commands.distributor:distributor",
    "web": "watcher.commands.web:web",
}
# Commands that log their progress as they work (INFO), shown on a terminal or the journal.
PROGRESS_COMMANDS = {"import-accounting", "analyze", "mail", "server", "distributor", "web"}


class CommandFailed(click.ClickException):
    """A known failure of one command, shown as ``turingwatch <command>: <message>``."""

    def __init__(self, command: str | None, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.command = command
        self.exit_code = exit_code

    def format_message(self) -> str:
        where = f"turingwatch {self.command}" if self.command else "turingwatch"
        return f"{where}: {self.message}"

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.format_message(), file=file, err=file is None)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError:
            raise  # click shows the usage with it
        except TuringwatchError as exc:
            _fail(ctx, exc, getattr(exc, "exit_code", 1))
        except click.ClickException as exc:
            if isinstance(exc, CommandFailed):
                raise
            _fail(ctx, exc, exc.exit_code, exc.format_message())


def _fail(ctx: click.Context, exc: Exception, exit_code: int, message: str | None = None) -> NoReturn:
    """Raise the one-line form of a known failure (its traceback only at -vv, for a report)."""
    log.debug("%s failed", ctx.invoked_subcommand, exc_info=exc)
    text = message if message is not None else str(exc) or type(exc).__name__
    raise CommandFailed(ctx.invoked_subcommand, text, exit_code) from exc


class AppContext:
    """Carried in ``ctx.obj``: the config is loaded on first use (a ConfigError reaches the
    CLI group, or ``run``, which goes on with the defaults)."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


pass_app = click.make_pass_decorator(AppContext)


def whose_jobs(user: str | None, all_users: bool) -> str | None:
    """The --user/--all-users choice: None for every user's jobs, else the one user.

    Root (the admin) gets every user by default, anyone else their own jobs; Slurm's own
    permissions still decide what sacct shows them.
    """
    if user and all_users:
        raise click.UsageError("--user and --all-users exclude each other")
    if all_users:
        return None
    if user:
        return user
    return None if os.geteuid() == 0 else getpass.getuser()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(),  # checked on reading, so `run` can still start its job
    help="TOML config file (default: $TURINGWATCH_CONFIG, else /etc/turingwatch/turingwatch.toml).",
)
@click.option(
    "-v", "--verbose", count=True,
    help="Say more on stderr: -v what each step does (INFO), -vv everything (DEBUG).",
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr, no warnings (wins over -v).")
@click.version_option(__version__, prog_name="turingwatch")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Measure what batch jobs really use, and tell the people who ran them."""
    setup_logging(verbose, quiet, progress=ctx.invoked_subcommand in PROGRESS_COMMANDS)
    ctx.obj = AppContext(config_path)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="turingwatch")
