"""``turingwatch config``: inspect the effective configuration."""

from __future__ import annotations

import json

import click

from watcher.cli import AppContext, pass_app


@click.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_app
def show(app: AppContext, as_json: bool) -> None:
    """Print every setting, its value, and where the value came from."""
    rows = app.config.items()
    if as_json:
        click.echo(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}, indent=2))
        return
    if app.config.file is not None:
        click.echo(f"# config file: {app.config.file}")
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        click.echo(f"{key:<{width}}  {json.dumps(value):<40}  {source}")
