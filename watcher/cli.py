"""The ``turingwatch`` command line.

Subcommands live in ``watcher/commands/`` and are imported only when invoked, so that
``turingwatch run`` does not pay for DuckDB, Jinja2 or Flask before the job starts.
Library code raises domain errors; they are turned into one-line messages here.
"""

from __future__ import annotations

import getpass
import importlib
import os
from typing import Any

import click

from watcher import __version__
from watcher.config import Config, ConfigError, load_config

# command name -> "module:attribute"
COMMANDS = {
    "run": "watcher.commands.run:run",
    "attach": "watcher.commands.attach:attach",
    "config": "watcher.commands.config:config",
    "import-accounting": "watcher.commands.accounting:import_accounting",
    "ingest": "watcher.commands.ingest:ingest",
    "analyze": "watcher.commands.analyze:analyze",
    "rules": "watcher.commands.analyze:rules",
    "mail": "watcher.commands.mail:mail",
    "intercepter": "watcher.commands.intercepter:intercepter",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


class AppContext:
    """Carried in ``ctx.obj``: the config is loaded on first use, errors become CLI errors."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(f"configuration: {exc}") from None
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
    type=click.Path(dir_okay=False),
    help="TOML config file (default: $TURINGWATCH_CONFIG, else /etc/turingwatch/turingwatch.toml).",
)
@click.version_option(__version__, prog_name="turingwatch")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Measure what batch jobs really use, and tell the people who ran them."""
    ctx.obj = AppContext(config_path)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="turingwatch")
