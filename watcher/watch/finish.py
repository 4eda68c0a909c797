"""The end of a watched job: gather every node's spool, load the store, write the reports."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from watcher import spool
from watcher.config import Config
from watcher.slurm.env import JobContext
from watcher.watch.session import STOP_MARKER, warn


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    (output_dir / STOP_MARKER).write_text(f"{job.job_id}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        open_spools = [p for p in _job_spools(output_dir, job, session_id) if not spool.has_ended(p)]
        if not open_spools:
            return
        time.sleep(0.5)
    warn(f"{len(open_spools)} node(s) did not finish in {timeout_s:.0f} s; reporting what they sent")


def _findings(
    config: Config, store: Any, sessions: list[str], elapsed_s: float
) -> tuple[list[dict[str, Any]], str | None]:
    """The analysis engine's findings for this job, and a note on rules too short to apply."""
    from watcher.analysis.engine import analyze_session
    from watcher.analysis.rules import load_rules
    from watcher.letters.formatting import by_name

    rules = load_rules(config).enabled
    by_id = {rule.id: rule for rule in rules}
    out = []
    for finding in analyze_session(store, config, sessions):
        row = finding.as_dict()
        rule = by_id.get(finding.rule)
        row["title"] = rule.title if rule else finding.rule
        row["solution"] = " ".join(rule.solution.split()) if rule else None
        row["summary"] = ", ".join(
            f"{_label(key)} {by_name(key, value)}"
            for key, value in finding.metrics.items()
            if key != "job_key" and not isinstance(value, dict | list)
        )
        out.append(row)
    waiting = sorted({r.min_runtime_s for r in rules if r.min_runtime_s > elapsed_s})
    note = (
        f"{sum(r.min_runtime_s > elapsed_s for r in rules)} of {len(rules)} rules judge only jobs "
        f"of at least {waiting[0]:.0f} s"
        if waiting
        else None
    )
    return out, note


_UNIT_SUFFIXES = ("_s", "_bytes", "_pct", "_w", "_wh", "_j", "_mhz", "_kwh")


def _label(metric: str) -> str:
    """'elapsed_s' -> 'elapsed': the formatted value already says its unit."""
    for suffix in _UNIT_SUFFIXES:
        if metric.endswith(suffix):
            metric = metric[: -len(suffix)]
            break
    return metric.replace("_", " ")


def finish_report(
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
) -> str | None:
    """Load the job's spools, write summary.json and report.html; return the text card."""
    from watcher.card.html import render_report_html
    from watcher.card.summary import build_summary
    from watcher.card.text import render_card
    from watcher.store import Store
    from watcher.store.spool_loader import load_spool

    if batch_host and job.in_slurm:
        wait_for_peers(output_dir, job, session_id, config.sampler.peer_wait_s)

    with Store(output_dir / "turingwatch.duckdb") as store:
        sessions = []
        for path in _job_spools(output_dir, job, session_id):
            try:
                sessions.append(load_spool(store, path).session_id)
            except Exception as exc:  # one bad node must not hide the others
                warn(f"skipping {path.name}: {exc}")
        time_limit, mem = store.execute(
            "SELECT time_limit_s, mem_requested_bytes FROM sessions WHERE session_id = ?",
            [session_id],
        ).fetchone() or (None, None)
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
        try:
            summary["findings"], summary["findings_note"] = _findings(
                config, store, sessions, outcome.elapsed_s
            )
        except Exception as exc:  # numbers without findings beat no report
            warn(f"analysis of this job failed: {exc}")
            summary["findings"], summary["findings_note"] = None, None

    if config.sampler.site_spool_dir:
        hand_over_spools(output_dir, job, session_id, config.sampler.site_spool_dir)
    summary["intercepter"] = _intercept_summary(intercept_stats)
    summary["watcher"] = watcher_usage
    series = {k: summary.pop(k) for k in ("timeline", "gpu_timeline")}
    atomic_write(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    html = render_report_html({**summary, **series})
    atomic_write(output_dir / "report.html", html)
    card = render_card(summary, output_dir=str(output_dir))
    if mail:
        _mail_card(config, job, summary, html, card)
    return card


def hand_over_spools(output_dir: Path, job: JobContext, session_id: str, site_dir: str) -> None:
    """Leave a copy of the job's spools where the site's `turingwatch ingest` picks them up.

    Each file appears whole or not at all (written under a dot name, then renamed), so the
    ingest never reads a half-copied spool.
    """
    from watcher.config import expand_path

    target = expand_path(site_dir)
    label = f"{job.cluster or 'local'}-{job.job_id if job.job_id is not None else session_id}"
    try:
        for path in _job_spools(output_dir, job, session_id):
            final = target / f"{label}.{path.name}"
            tmp = target / f".{final.name}.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, final)
    except OSError as exc:
        warn(f"could not leave the spools in {target}: {exc}")


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
