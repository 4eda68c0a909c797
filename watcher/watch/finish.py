"""The end of a watched job, on the batch host (or an attach run outside the job).

In order: ask the other nodes' watchers to finish and wait for their spools to close; load
every node's spool into the job's own store; build the card's numbers and findings; hand the
spools to the site's sinks; write ``summary.json`` and ``report.html``; mail the card if asked.
A failure in one step costs that step only (one node's bad spool, a sink, the mail); the job's
outcome is never changed here.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watcher import spool
from watcher.config import Config
from watcher.files import atomic_write
from watcher.slurm.env import JobContext
from watcher.watch.session import STOP_MARKER, warn
from watcher.watch.sinks import SpoolSink, configured_sinks

# The job's reports hold its command lines and numbers: its owner's only (README: sharing).
OUTPUT_MODE = 0o600


def _job_spools(output_dir: Path, job: JobContext, session_id: str) -> list[Path]:
    """This job's spools: every node's for a Slurm job, only our own for a local run."""
    mine = []
    for path in spool.spool_files(output_dir):
        head = spool.read_header(path)
        if head is None:
            continue
        session = head["session"]
        if session["session_id"] == session_id or (
            job.job_id is not None and session.get("job_id") == job.job_id
        ):
            mine.append(path)
    return mine


def wait_for_peers(output_dir: Path, job: JobContext, session_id: str, timeout_s: float) -> None:
    """Ask the other nodes' watchers to finish, and give them a moment to close their spools."""
    # Replaced, never written through: a link planted as STOP must not truncate its target.
    atomic_write(output_dir / STOP_MARKER, f"{job.job_id}\n", mode=OUTPUT_MODE)
    deadline = time.monotonic() + timeout_s
    while True:  # looked at once at least: sampler.peer_wait_s may be 0
        open_spools = [p for p in _job_spools(output_dir, job, session_id) if not spool.has_ended(p)]
        if not open_spools:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    warn(f"{len(open_spools)} node(s) did not finish in {timeout_s:.0f} s; reporting what they sent")


def finish_job(
    config: Config,
    *,
    output_dir: Path,
    job: JobContext,
    session_id: str,
    outcome: Any,
    batch_host: bool,
    intercept_stats: dict[str, Any] | None = None,
    watcher_usage: dict[str, Any] | None = None,
    mail: bool = False,
    show: Callable[[str], None] | None = None,
) -> str | None:
    """Load the job's spools, write summary.json and report.html; return the text card.

    ``show`` gets the card as soon as it exists, before report.html is drawn: at a time limit
    Slurm sends SIGKILL ``KillWait`` seconds after SIGTERM, and the card is what the user reads.
    """
    from watcher.card.ending import describe_job
    from watcher.card.findings import job_findings
    from watcher.card.html import render_report_html
    from watcher.card.summary import build_summary
    from watcher.card.text import render_card
    from watcher.store import Store
    from watcher.store.spool_loader import load_spool

    if batch_host and job.in_slurm:
        wait_for_peers(output_dir, job, session_id, config.sampler.peer_wait_s)

    spools = _job_spools(output_dir, job, session_id)
    store_path = output_dir / "turingwatch.duckdb"
    _refuse_links(store_path, store_path.with_name(store_path.name + ".wal"))
    with Store(store_path) as store:
        sessions = []
        for path in spools:
            try:
                sessions.append(load_spool(store, path).session_id)
            except Exception as exc:  # one bad node must not hide the others
                warn(f"skipping {path.name}: {exc}")
        time_limit, mem, command = store.one(
            "SELECT time_limit_s, mem_requested_bytes, command FROM sessions WHERE session_id = ?",
            [session_id],
        ) or (None, None, None)
        summary = build_summary(
            store,
            sessions,
            job_id=job.job_id,
            exit_code=outcome.exit_code,
            exit_signal=outcome.exit_signal,
            elapsed_s=outcome.elapsed_s,
            time_limit_s=time_limit,
            mem_requested_bytes=mem,
            top_processes=config.sampler.top_processes,
        )
        describe_job(summary, job_name=job.job_name, command=command,
                     started=outcome.started, ended=outcome.ended)
        try:
            summary["findings"], summary["findings_note"] = job_findings(
                config, store, sessions, outcome.elapsed_s
            )
        except Exception as exc:  # numbers without findings beat no report
            warn(f"analysis of this job failed: {exc}")
            summary["findings"], summary["findings_note"] = None, None

    hand_over(spools, job, session_id, configured_sinks(config))
    summary["intercepter"] = _intercept_summary(intercept_stats)
    summary["watcher"] = watcher_usage
    series = {k: summary.pop(k) for k in ("timeline", "gpu_timeline")}
    atomic_write(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n", mode=OUTPUT_MODE)
    card = render_card(summary, output_dir=str(output_dir))
    if show is not None and card:
        show(card)
    html = render_report_html({**summary, **series})
    atomic_write(output_dir / "report.html", html, mode=OUTPUT_MODE)
    if mail:
        _mail_card(config, job, summary, html, card)
    return card


def _refuse_links(*paths: Path) -> None:
    """DuckDB follows links: one planted as the job's store or its log is refused instead."""
    for path in paths:
        if path.is_symlink():
            raise PermissionError(errno.EPERM, "a symlink, not the job's store", str(path))


def hand_over(spools: list[Path], job: JobContext, session_id: str, sinks: list[SpoolSink]) -> None:
    """Give every node's spool of this job to each sink."""
    label = f"{job.cluster or 'local'}-{job.job_id if job.job_id is not None else session_id}"
    for sink in sinks:
        sink.deliver(spools, label=label)


def _intercept_summary(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    if not stats:
        return None
    from watcher.watch import intercept

    return {**stats, "text": intercept.format_summary(stats)}


def _mail_card(config: Config, job: JobContext, summary: dict[str, Any], html: str, text: str) -> None:
    try:
        from watcher.mailer import send_report_card

        what = f"job {job.job_id}" if job.job_id is not None else "your run"
        send_report_card(
            config,
            job.user_name,
            f"[{config.site.name}] report card for {what}",
            html,
            text,
        )
    except Exception as exc:  # the mail is a courtesy; the files are written
        warn(f"could not mail the report card: {exc}")
