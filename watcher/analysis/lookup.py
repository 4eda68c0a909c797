"""One job, or a list of jobs, looked up in a store: what ``turingwatch job`` and ``jobs`` show.

Read-only from end to end: the store is opened read-only (the site store, or the server's
published ``snapshot.duckdb`` when the server holds the site store), every query is in
``lookup.sql``, and a job that was never analysed is judged by ``analyze_job``, which keeps its
work in TEMP tables of a private cursor and stores nothing. So a lookup can run beside the
server, and a crash leaves nothing behind.

The numbers follow seff and jobstats: CPU efficiency is CPU time over elapsed × cores, memory
the peak over what was requested, time the elapsed over the limit, GPU utilization the mean of
the samples; idle core-hours and GPU-hours as every reader of the project says them.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher.errors import StoreError, TuringwatchError
from watcher.jobstate import end_state, signal_name
from watcher.store import Store, named_statements

if TYPE_CHECKING:
    from watcher.config import Config

log = logging.getLogger(__name__)
_SQL = named_statements("watcher.analysis", "lookup.sql")
SORTS = ("end", "waste")


class JobLookupError(TuringwatchError):
    """A job or jobs cannot be shown: not in the store, or not the asker's to see."""


@dataclass(frozen=True)
class Source:
    """Where the jobs were read from, said in messages and in the JSON."""

    store: Store
    where: str          # "store /var/lib/turingwatch/site.duckdb" or "published snapshot …"
    published: bool


def open_source(config: Config, store_path: str | Path | None = None,
                published_dir: str | Path | None = None) -> Source:
    """The store to read, read-only: ``store_path`` or the configured store; when that cannot be
    opened (the server holds it, or it is absent), the current generation of ``published_dir``
    or ``server.publish_dir``. A given ``published_dir`` is read without trying the store."""
    from watcher.config import expand_path
    from watcher.store.publish import SNAPSHOT
    from watcher.store.published import current_generation

    first_error: StoreError | None = None
    if published_dir is None:
        path = expand_path(str(store_path)) if store_path else expand_path(config.store.path)
        try:
            if not path.exists():
                raise StoreError(f"store {path} does not exist")
            store = Store(path, read_only=True, memory_limit=config.store.memory_limit,
                          threads=config.store.threads)
            return Source(store, f"store {path}", False)
        except StoreError as exc:
            first_error = exc
            log.info("%s; trying the published snapshot", exc)
    publish = expand_path(str(published_dir or config.server.publish_dir))
    try:
        generation = current_generation(publish)
        snapshot = generation / SNAPSHOT
        if not snapshot.is_file():
            raise StoreError(f"{generation} holds no {SNAPSHOT}")
        store = Store(snapshot, read_only=True, memory_limit=config.store.memory_limit,
                      threads=config.store.threads)
    except StoreError as exc:
        if first_error is None:
            raise
        raise StoreError(f"{first_error}; and no published snapshot to read instead: {exc}") from exc
    return Source(store, f"published snapshot {snapshot}", True)


# -- who may look ------------------------------------------------------------------------------


def viewer() -> str:
    """The asking user's login, from the password database by real uid: not $USER or $LOGNAME
    (getpass reads those first), which anyone can set to another user's name."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no entry (a container): it can only match a job by number
        return str(os.getuid())


def is_admin(config: Config, who: str | None = None) -> bool:
    """Root, or one of ``web.admin_users``: they see every user's jobs."""
    who = who or viewer()
    return os.geteuid() == 0 or who in config.web.admin_users


def check_may_see(config: Config, owner: str, what: str) -> None:
    """Refuse another user's job to anyone but an admin."""
    me = viewer()
    if owner != me and not is_admin(config, me):
        raise JobLookupError(f"{what} is {owner}'s; only they and the admins may look at it")


# -- one job -----------------------------------------------------------------------------------


def _params(sql: str, values: dict[str, Any]) -> dict[str, Any]:
    """The named parameters ``sql`` uses, from ``values`` (DuckDB refuses unused ones)."""
    return {k: v for k, v in values.items() if f"${k}" in sql}


def _rows(store: Store, statement: str, /, **values: Any) -> list[dict[str, Any]]:
    sql = _SQL[statement]

    def run(cur: Any) -> list[dict[str, Any]]:
        result = cur.execute(sql, _params(sql, values))
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    return store.read(run)


def imported_until(store: Store, cluster: str | None = None) -> datetime | None:
    row = store.query(_SQL["imported_until"], {"cluster": cluster})
    return row[0][0] if row else None


def find_job(source: Source, text: str, cluster: str | None = None) -> dict[str, Any]:
    """The accounting row of job ``text`` (as Slurm prints it: 123, 123_4, 123+1, or raw)."""
    rows = _rows(source.store, "find_job", text=str(text).strip(), cluster=cluster)
    if not rows:
        until = imported_until(source.store, cluster)
        since = f" (imported until {until:%Y-%m-%d %H:%M %Z})" if until else " (no accounting imported)"
        raise JobLookupError(f"job {text} is not in {source.where}{since}")
    if len({r["cluster"] for r in rows}) > 1 and cluster is None:
        log.warning("job %s is in several clusters (%s): showing %s's; --cluster chooses", text,
                    ", ".join(sorted({r["cluster"] for r in rows})), rows[0]["cluster"])
    return rows[0]


def _ratio(part: Any, whole: Any) -> float | None:
    if part is None or not whole:
        return None
    return float(part) / float(whole)


def job_report(source: Source, config: Config, job: dict[str, Any], *,
               judge: bool = True) -> dict[str, Any]:
    """Everything ``turingwatch job`` shows, as the documented JSON object (docs/lookup.md)."""
    store = source.store
    cluster, job_id = job["cluster"], job["job_id"]
    nodes = _rows(store, "node_usage", job_id=job_id, cluster=cluster)
    gpus = _rows(store, "gpu_usage", job_id=job_id, cluster=cluster)
    ended = end_state(job["state"], job["exit_code"], job["exit_signal"])
    elapsed, cores = job["elapsed_s"], job["ncpus"]
    cpu_s = job["total_cpu_s"]
    if cpu_s is None and nodes:  # accounting without CPU time (a running job): the samples'
        cpu_s = sum(n["cpu_s"] or 0 for n in nodes)
    mem_peak = job["max_rss_bytes"]
    if mem_peak is None and nodes:
        mem_peak = sum(n["mem_peak_bytes"] or 0 for n in nodes) or None
    reserved = elapsed * cores if elapsed is not None and cores else None
    util = [g["util_pct"] for g in gpus if g["util_pct"] is not None]
    gpu_mean = sum(util) / len(util) if util else None
    report: dict[str, Any] = {
        "job_id": job["job_id_display"],
        "job_id_raw": job_id,
        "cluster": cluster,
        "name": job["job_name"],
        "user": job["user_name"],
        "account": job["account"],
        "partition": job["partition"],
        "qos": job["qos"],
        "state": ended.state,
        "end": {"text": ended.text, "bad": ended.bad, "running": ended.running},
        "exit_code": job["exit_code"],
        "exit_signal": job["exit_signal"],
        "signal": signal_name(job["exit_signal"]),
        "submit_time": _iso(job["submit_time"]),
        "start_time": _iso(job["start_time"]),
        "end_time": _iso(job["end_time"]),
        "elapsed_s": elapsed,
        "time_limit_s": job["time_limit_s"],
        "time_efficiency": _ratio(elapsed, job["time_limit_s"]),
        "nodes": job["nnodes"],
        "nodelist": job["nodelist"],
        "cores": cores,
        "cpu_time_s": cpu_s,
        "cpu_efficiency": _ratio(cpu_s, reserved),
        "idle_core_hours": max(reserved - cpu_s, 0) / 3600 if reserved and cpu_s is not None else None,
        "mem_requested_bytes": job["req_mem_bytes"],
        "mem_peak_bytes": mem_peak,
        "mem_efficiency": _ratio(mem_peak, job["req_mem_bytes"]),
        "gpus": job["ngpus"],
        "gpu_utilization": None if gpu_mean is None else gpu_mean / 100,
        "idle_gpu_hours": (elapsed * job["ngpus"] * max(1 - gpu_mean / 100, 0) / 3600
                           if gpu_mean is not None and elapsed is not None else None),
        "sampled": bool(nodes or gpus),
        "per_node": [
            {**n, "cpu_efficiency": _ratio(n["cpu_s"], (n["span_s"] or 0) * (n["cores"] or 0))}
            for n in nodes
        ],
        "per_gpu": [
            {**g, "utilization": None if g["util_pct"] is None else g["util_pct"] / 100}
            for g in gpus
        ],
        "source": source.where,
    }
    report["analysis"], report["findings"] = _findings(store, config, job, judge=judge)
    return report


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _findings(store: Store, config: Config, job: dict[str, Any], *,
              judge: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The findings of the job's latest analysis; else judged now (nothing stored); else none."""
    from watcher.analysis.rules import load_rules

    key = f"{job['cluster']}:{job['job_id']}"
    titles = {r.id: r for r in load_rules(config).rules}
    period = _rows(store, "analysed_period", job_key=key)
    if period and period[0]["period_id"] is not None:
        period_id = period[0]["period_id"]
        rows = _rows(store, "stored_findings", job_key=key, period_id=period_id)
        found = [(r["rule"], r["severity"], r["step"], r["node"], r["gpu"], json.loads(r["metrics"]))
                 for r in rows]
        status = {"status": "stored", "period": period_id}
    elif judge and job["start_time"] is not None:
        try:
            judged = judge_alone(store, config, job)
        except TuringwatchError as exc:  # a broken rule file: show the numbers, say why
            return {"status": "not analyzed", "period": None, "reason": str(exc)}, []
        found = [(f.rule, f.severity, f.step, f.node, f.gpu, f.metrics) for f in judged]
        status = {"status": "judged now", "period": None}
    else:
        why = "never started" if job["start_time"] is None else "not analyzed yet"
        return {"status": "not analyzed", "period": None, "reason": why}, []
    findings = []
    for rule, severity, step, node, gpu, metrics in found:
        info = titles.get(rule)
        advice = metrics.get("advice") if isinstance(metrics.get("advice"), dict) else {}
        findings.append({
            "rule": rule,
            "severity": severity,
            "title": info.title if info else rule,
            "sentence": advice.get("sentence"),
            "request": advice.get("request"),
            "solution": " ".join(info.solution.split()) if info else None,
            "step": step,
            "node": node,
            "gpu": gpu,
            "metrics": {k: v for k, v in metrics.items() if k not in ("advice", "job_key")},
        })
    return status, findings


_SAMPLE_TABLES = ("sample_rounds", "step_samples", "process_samples", "gpu_samples")


def judge_alone(store: Store, config: Config, job: dict[str, Any]) -> list[Any]:
    """``analyze_job`` on a private in-memory store that holds this job's rows only.

    The engine's pipeline reads whole sample tables: on a site store of a week (20 M samples)
    judging one job that way takes half a minute, on a copy of its own rows a fraction of a
    second, with the same findings. The site store is attached read-only and never written.
    """
    from watcher.analysis.engine import analyze_job

    if store.path == ":memory:":  # nothing to attach; the caller's own store (tests)
        return analyze_job(store, config, job["job_id"], job["cluster"])
    values = {"cluster": job["cluster"], "job_id": job["job_id"]}
    with Store(":memory:") as private:
        with private.cursor() as cur:
            literal = "'" + store.path.replace("'", "''") + "'"
            cur.execute(f"ATTACH {literal} AS tw_src (READ_ONLY)")
            try:
                for name in ("copy_jobs", "copy_job_steps", "copy_sessions"):
                    cur.execute(_SQL[name], _params(_SQL[name], values))
                for table in _SAMPLE_TABLES:
                    cur.execute(_SQL["copy_samples"].replace("{table}", table))
            finally:
                cur.execute("DETACH tw_src")
        return analyze_job(private, config, job["job_id"], job["cluster"])


# -- many jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFilter:
    """What ``turingwatch jobs`` keeps; None: any."""

    user: str | None = None
    states: tuple[str, ...] | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cluster: str | None = None
    sort: str = "end"
    limit: int = 100


def list_jobs(source: Source, wanted: JobFilter) -> list[dict[str, Any]]:
    """One row per job, as ``lookup.sql`` job_list makes it (one query, LIMIT in SQL)."""
    if wanted.sort not in SORTS:
        raise JobLookupError(f"--sort must be one of {', '.join(SORTS)}, not {wanted.sort!r}")
    states = [s.upper() for s in wanted.states] if wanted.states else None
    rows = _rows(
        source.store, "job_list", user=wanted.user, states=states, name=wanted.name,
        since=wanted.since, until=wanted.until, cluster=wanted.cluster, sort=wanted.sort,
        limit=wanted.limit,
    )
    for row in rows:
        ended = end_state(row["state"], row["exit_code"], row["exit_signal"])
        row["end"] = {"text": ended.text, "bad": ended.bad, "running": ended.running}
    return rows


# -- a period's users, ranked -------------------------------------------------------------------


def rank_users(reports: list[Any]) -> list[dict[str, Any]]:
    """One row per user of a period's reports, most waste (idle core-hours plus idle GPU-hours)
    first: what ``analyze``'s text form shows instead of every finding's numbers."""
    from watcher.analysis.model import SEVERITY_ORDER

    rows = []
    for report in reports:
        totals = report.totals
        idle_cores = max((totals.get("core_hours") or 0) - (totals.get("busy_core_hours") or 0), 0)
        idle_gpus = sum(
            (job.get("gpu_hours") or 0) * max(1 - job["gpu_avg_util_pct"] / 100, 0)
            for job in report.jobs if job.get("gpu_avg_util_pct") is not None
        )
        counts = {s: 0 for s in SEVERITY_ORDER}
        for finding in report.findings:
            counts[finding.severity] = counts.get(finding.severity, 0) + 1
        rows.append({
            "user": report.user, "jobs": totals.get("jobs", len(report.jobs)),
            "core_hours": totals.get("core_hours") or 0, "idle_core_hours": idle_cores,
            "idle_gpu_hours": idle_gpus, "findings": counts,
        })
    rows.sort(key=lambda r: (-(r["idle_core_hours"] + r["idle_gpu_hours"]),
                             -r["findings"]["serious"], r["user"]))
    return rows
