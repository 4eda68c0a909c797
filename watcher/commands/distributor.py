"""``turingwatch distributor``: sample busy nodes through small Slurm allocations."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from watcher.cli import AppContext, pass_app
from watcher.config import expand_path
from watcher.errors import TuringwatchError

log = logging.getLogger(__name__)



@click.command()
@click.option("--once", is_flag=True,
              help="One look at the queue, then exit; jobs already queued are left as they are.")
@click.option("--status", "show_status", is_flag=True,
              help="Print the state the running distributor last wrote, and exit.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="How --status prints.")
@click.option("--state-dir", default=None,
              help="Where distributor.state is written (default: distributor.state_dir).")
@click.option("--turingwatch", "turingwatch", default=None,
              help="The turingwatch command the scrape jobs run on the nodes "
                   "(default: this Python with -m watcher).")
@click.option("--scrape-command", default=None,
              help="A shell line the scrape jobs run instead of `turingwatch scrape` (tests).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Also serve the state as Prometheus metrics on this port.")
@pass_app
def distributor(
    app: AppContext, once: bool, show_status: bool, fmt: str, state_dir: str | None,
    turingwatch: str | None, scrape_command: str | None, metrics_port: int | None,
) -> None:
    """Sample the busiest nodes with 1-CPU Slurm jobs that run `turingwatch scrape`, for sites
    that give the service no root on compute nodes (docs/distributor.md). Runs until SIGTERM
    or SIGINT, and cancels its own jobs at start and at the end."""
    from watcher.distributor.loop import STATE_FILE, Distributor, read_state
    from watcher.slurm.commands import SlurmCommands

    directory = expand_path(state_dir or app.config.distributor.state_dir)
    if show_status:
        path = directory / STATE_FILE
        try:
            facts = read_state(path)
        except FileNotFoundError:
            raise TuringwatchError(f"no {path}: no distributor has run with this --state-dir") from None
        except (OSError, ValueError) as exc:
            raise TuringwatchError(f"cannot read {path}: {exc}") from None
        click.echo(json.dumps(facts, indent=2) if fmt == "json" else "\n".join(status_lines(facts)))
        return

    config = app.config
    settings = config.distributor
    directory.mkdir(parents=True, exist_ok=True)
    command = scrape_command or scrape_line(turingwatch, app.config_path, settings.time_s)
    dist = Distributor(settings, SlurmCommands.from_config(config.slurm), user=_me(),
                       job_command=command, state_dir=directory)  # fmt: skip
    stop = threading.Event()
    if not once:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    if metrics_port is not None:
        serve_metrics(dist, metrics_port)
    log.info("distributor: jobs named %s of %s, command %s", settings.job_name, dist.user, command)
    dist.run(stop, once=once)


def _me() -> str:
    """This process's user by its uid, not $USER: scancel -u must name whose jobs these are."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise TuringwatchError(f"uid {os.geteuid()} has no user name; Slurm needs one") from None


def scrape_line(turingwatch: str | None, config_path: str | None, duration_s: float) -> str:
    """The scrape jobs' shell line: ``<turingwatch> [--config F] scrape --duration N``."""
    words = shlex.split(turingwatch) if turingwatch else [sys.executable, "-m", "watcher"]
    if config_path:
        words += ["--config", str(Path(config_path).resolve())]
    return shlex.join([*words, "scrape", "--duration", str(int(duration_s))])


def status_lines(facts: dict[str, Any]) -> list[str]:
    failures = facts.get("failures") or {}
    lines = [
        f"distributor jobs named {facts.get('job_name')} of {facts.get('user')}, "
        f"since {facts.get('started_at')}, last look {facts.get('updated_at')}",
        f"jobs        {facts.get('submitted', 0)} submitted, {facts.get('running', 0)} running, "
        f"{facts.get('pending', 0)} pending, {facts.get('cancelled', 0)} cancelled",
        "failures    " + (", ".join(f"{k} {v}" for k, v in failures.items()) or "none"),
    ]
    for cause, message in (facts.get("errors") or {}).items():
        lines.append(f"error       {cause}: {message}")
    for node, seen in (facts.get("nodes") or {}).items():
        lines.append(f"node        {node}: sampled {seen.get('sampled_at')} (job {seen.get('job_id')})")
    return lines


def serve_metrics(dist: Any, port: int) -> None:
    """Serve the distributor's counters in Prometheus' text format (needs turingwatch[site])."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError:
        raise TuringwatchError("--metrics-port needs prometheus_client (turingwatch[site])") from None

    class Collector:
        def collect(self) -> Any:
            s = dist.snapshot   # replaced whole after each step: no half-updated counts
            yield CounterMetricFamily("turingwatch_distributor_submitted", "scrape jobs submitted",
                                      value=s["submitted"])  # fmt: skip
            yield CounterMetricFamily("turingwatch_distributor_cancelled", "scrape jobs cancelled",
                                      value=s["cancelled"])  # fmt: skip
            jobs = GaugeMetricFamily("turingwatch_distributor_jobs", "own jobs by state",
                                     labels=["state"])  # fmt: skip
            jobs.add_metric(["running"], s["running"])
            jobs.add_metric(["pending"], s["pending"])
            yield jobs
            failures = CounterMetricFamily("turingwatch_distributor_failures",
                                           "Slurm command failures by cause", labels=["cause"])
            for cause, count in s["failures"].items():
                failures.add_metric([cause], count)
            yield failures

    registry = CollectorRegistry()
    registry.register(Collector())
    start_http_server(port, registry=registry)
