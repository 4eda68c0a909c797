"""``turingwatch server`` (the site store's one writer) and ``turingwatch status`` (what it knows)."""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.request
from typing import Any

import click

from watcher.cli import AppContext, pass_app
from watcher.config import Config, expand_path
from watcher.errors import TuringwatchError

log = logging.getLogger(__name__)


@click.command()
@pass_app
def server(app: AppContext) -> None:
    """Run the server in the foreground until SIGTERM: ingest over HTTP, the accounting import,
    period analyses and bundles, mail, publishing (docs/server.md). Logs go to stderr (the
    journal under systemd)."""
    from watcher.server.daemon import serve

    serve(app.config)


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def status(app: AppContext, fmt: str) -> None:
    """What the server knows: live sessions, last import and analysis, ingest rate, refusals,
    senders' spool backlog, periods and bundles."""
    facts = fetch_status(app.config)
    if fmt == "json":
        click.echo(json.dumps(facts, indent=2))
        return
    for line in status_lines(facts):
        click.echo(line)


def server_url(config: Config) -> str:
    """Where the server answers: server.url, else http:// on server.listen."""
    if config.server.url:
        return config.server.url.rstrip("/")
    host, _, port = config.server.listen.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return f"http://{host}:{port}"


def fetch_status(config: Config) -> dict[str, Any]:
    url = server_url(config) + "/api/v1/status"
    context = None
    if url.startswith("https:"):
        ca = config.server.tls_ca_file
        context = ssl.create_default_context(cafile=str(expand_path(ca)) if ca else None)
    try:
        with urllib.request.urlopen(url, timeout=config.server.send_timeout_s, context=context) as got:
            return json.loads(got.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TuringwatchError(f"no answer from the server at {url}: {reason} (is `turingwatch "
                               "server` running? server.url and server.listen say where)") from None


def status_lines(facts: dict[str, Any]) -> list[str]:
    s, ingest, journal = facts["server"], facts["ingest"], facts["journal"]
    lines = [
        f"server      pid {s['pid']} on {s['listen']} since {s['started_at']} ({s['credentials']})",
        f"store       {s['store']}",
        f"live        {facts['sessions_live']} sessions on {facts['nodes_live']} nodes",
        f"ingest      {ingest['lines']} lines stored ({ingest['lines_per_s']}/s), "
        f"{ingest['duplicates']} duplicates",
        "refused     " + (", ".join(f"{k} {v}" for k, v in sorted(ingest["rejected"].items())) or "none"),
        f"journal     {journal['batches']} batches waiting, {journal['bytes']} bytes, "
        f"oldest {journal['lag_s']} s",
        f"import      last {facts['last_import'] or 'never'}",
        f"analysis    last {facts['last_analysis'] or 'never'}",
    ]
    backlog = facts["sender_spool_bytes"]
    waiting = {node: n for node, n in backlog.items() if n}
    lines.append("senders     " + (f"{len(waiting)} nodes hold {sum(waiting.values())} undelivered bytes"
                                   if waiting else f"{len(backlog)} nodes, nothing undelivered"))
    for name, task in facts["tasks"].items():
        state = f"error: {task['last_error']}" if task["last_error"] else (task["last"] or "ok")
        lines.append(f"task        {name}: every {task['interval_s']:g} s, {task['runs']} runs, {state}")
    for p in facts["periods"]:
        lines.append(f"period      {p['period']}: {p['users']} users, {p['jobs']} jobs, "
                     f"{p['findings']} findings (analysed {p['analysed_at']})")
    lines.append("bundles     " + (", ".join(facts["bundles"]) or "none"))
    d = facts.get("distributor")
    if d:
        errors = "; ".join(f"{k}: {v}" for k, v in (d.get("errors") or {}).items()) or "no errors"
        lines.append(f"distributor {d.get('running', 0)} scrape jobs running, {d.get('pending', 0)} pending,"
                     f" {d.get('submitted', 0)} submitted, {len(d.get('nodes') or {})} nodes sampled"
                     f" (updated {d.get('updated_at')}; {errors})")
    return lines
