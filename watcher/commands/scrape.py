"""``turingwatch scrape``: sample every Slurm job on this node, one session per job."""

from __future__ import annotations

import logging
import os
import re
import signal
from pathlib import Path

import click

from watcher.cli import AppContext, pass_app

log = logging.getLogger(__name__)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration (seconds, or 10m, 2h, 1d)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def default_spool_dir() -> Path:
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "turingwatch" / "scrape"


@click.command()
@click.option("-i", "--interval", type=float, help="Seconds between rounds (default sampler.interval_s).")
@click.option("--duration", "duration", metavar="D",
              help="Stop after D (seconds, or 10m, 2h); default: run until SIGTERM or SIGINT.")
@click.option("--spool-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the sessions' spools go (default ~/.local/share/turingwatch/scrape).")
@click.option("--node", help="This node's name as Slurm knows it (default: from each job, else the host).")
@click.option("--no-gpu", is_flag=True, help="Do not sample GPUs.")
@click.option("--no-send", is_flag=True, help="Keep the spools here; do not send them to server.url.")
@pass_app
def scrape(
    app: AppContext,
    interval: float | None,
    duration: str | None,
    spool_dir: Path | None,
    node: str | None,
    no_gpu: bool,
    no_send: bool,
) -> None:
    """Sample every Slurm job on this node in one pass per interval.

    Each job gets a session of its own (mode "node", the job's owner as its user) in a spool
    under --spool-dir, sent to server.url while it runs. As root every job is seen; as another
    user only that user's jobs. A job that starts or ends is picked up, or closed, within one
    interval. SIGTERM or SIGINT ends every open session with its end line.
    """
    from watcher.files import private_dir
    from watcher.sampling.node_jobs import NodeGpus, NodeJobs, node_uid_filter
    from watcher.slurm.commands import SlurmCommands
    from watcher.watch.runner import name_this_process, sampling_interval
    from watcher.watch.scrape import Scraper, start_node_sending
    from watcher.watch.session import AlreadyWatched, _lock_node

    name_this_process()
    os.umask(0o077)  # spools hold command lines
    config = app.config
    duration_s = parse_duration(duration) if duration is not None else None
    interval_s = sampling_interval(interval, config.sampler.interval_s, logger=log)
    spool_dir = spool_dir or default_spool_dir()
    try:
        private_dir(spool_dir)
        lock = _lock_node(spool_dir / "scrape.lock")
    except AlreadyWatched as exc:
        raise click.ClickException(f"{exc}; one scraper per spool directory") from None
    except OSError as exc:
        raise click.ClickException(f"cannot use {spool_dir}: {exc.strerror or exc}") from None

    gpu = None
    if config.sampler.gpu and not no_gpu:
        from watcher.sampling.gpu import GpuSampler

        gpu = GpuSampler(None)  # every GPU of the node
    sender = sending = None
    if config.server.url and not no_send:
        try:
            from watcher.sending import SpoolSender, spools_under

            sender = SpoolSender(config.server, config.auth, remove_delivered=True)
            for leftover in spools_under([spool_dir]):  # what an earlier run could not deliver
                sender.add(leftover)
            sending = start_node_sending(sender, config.server.send_interval_s,
                                         2 * config.server.send_timeout_s)
        except Exception as exc:  # sampling goes on; the spools stay here
            log.warning("not sending to %s: %s; the spools stay in %s", config.server.url, exc, spool_dir)
            sender = None
    scraper = Scraper(
        spool_dir=spool_dir,
        jobs=NodeJobs(uid=node_uid_filter(config.auth.service_users), ignore_pids={os.getpid()}),
        interval_s=interval_s,
        node=node,
        cluster=config.slurm.cluster or None,
        gpus=NodeGpus(gpu),
        slurm=SlurmCommands.from_config(config.slurm),
        sender=sender,
        max_spool_bytes=config.server.max_spool_bytes if sender is not None else None,
    )

    def stop(_signum: int, _frame: object) -> None:
        scraper.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    log.info("scraping every %g s into %s", interval_s, spool_dir)
    scraper.run(duration_s)
    if sending is not None and not sending.join():  # bounded: 2 x server.send_timeout_s
        log.warning("not everything reached %s; the rest stays in %s for the next run",
                    config.server.url, spool_dir)
    os.close(lock)
