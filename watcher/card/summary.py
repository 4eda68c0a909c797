"""The report card's numbers for one job, from its watch sessions in the store.

The result is the documented ``summary.json`` (README, "summary.json"): plain JSON types only.
"""

from __future__ import annotations

import math
from typing import Any

from watcher.store import Store, named_statements
from watcher.units import duration


def _rows(store: Store, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    def fetch(cursor: Any) -> list[dict[str, Any]]:
        cursor.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return store.read(fetch)


def _num(value: Any, digits: int = 3) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    return value


# A core counts as busy once it is busier than this (so 0.4 cores reads as 1, 0.05 as 0).
_BUSY_CORE_SLACK = 0.1


def cores_distribution(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Share of observed time spent with 0, 1, 2 … cores busy (partly busy cores round up)."""
    weights: dict[int, float] = {}
    for row in timeline:
        cores, dt = row["cores_in_use"], row["dt"]
        if cores is None or not dt:
            continue
        level = max(0, math.ceil(cores - _BUSY_CORE_SLACK))
        weights[level] = weights.get(level, 0.0) + dt
    total = sum(weights.values())
    return [
        {"cores": level, "share": round(w / total, 4)}
        for level, w in sorted(weights.items())
        if total
    ]


def build_summary(
    store: Store,
    sessions: list[str],
    *,
    job_id: int | None,
    exit_code: int | None,
    exit_signal: int | None,
    elapsed_s: float,
    time_limit_s: int | None,
    mem_requested_bytes: int | None,
    top_processes: int = 5,
) -> dict[str, Any]:
    q = named_statements("watcher.card", "summary.sql")
    p = {"sessions": sessions}
    steps = _rows(store, q["steps"], p)
    nodes = _rows(store, q["nodes"], p)
    timeline = _rows(store, q["timeline"], p)
    gpus = _rows(store, q["gpus"], p)
    top = _rows(store, q["top_processes"], {**p, "limit": top_processes})

    cores = sum(n["cores_available"] or 0 for n in nodes) or None
    user = sum(s["cpu_user_s"] or 0.0 for s in steps)
    system = sum(s["cpu_system_s"] or 0.0 for s in steps)
    efficiency = (user + system) / (cores * elapsed_s) if cores and elapsed_s > 0 else None
    # Run-queue wait of the job's threads; None when no step's was measured.
    waits = [s["cpu_wait_s"] for s in steps if s.get("cpu_wait_s") is not None]
    wait = sum(waits) if waits else None
    # Memory: the RSS sum, and the peak as the kernel charges it (cgroup or PSS) on the node
    # where it was highest, with its source. None: no sample found a process of the job.
    peak = max((n["peak_rss_bytes"] for n in nodes if n["peak_rss_bytes"] is not None), default=None)
    top_node = max((n for n in nodes if n["peak_memory_bytes"] is not None),
                   key=lambda n: n["peak_memory_bytes"], default=None)
    peak_memory = top_node["peak_memory_bytes"] if top_node else None
    not_measured = why_not_measured(nodes, elapsed_s)

    by_step_procs: dict[str, list[dict[str, Any]]] = {}
    for proc in top:
        by_step_procs.setdefault(proc["step"], []).append(
            {
                "pid": proc["pid"],
                "comm": proc["comm"],
                "node": proc["node"],
                "cpu_s": _num(proc["cpu_s"]),
                "peak_rss_bytes": proc["peak_rss_bytes"],
                "peak_pss_bytes": proc["peak_pss_bytes"],
                "cmdline": proc["cmdline"],
            }
        )

    summary = {
        "job_id": job_id,
        "exit_code": exit_code,
        "exit_signal": exit_signal,
        "elapsed_s": _num(elapsed_s),
        "time_limit_s": time_limit_s,
        "time_limit_share": _num(elapsed_s / time_limit_s, 4) if time_limit_s else None,
        "cores_available": cores,
        "cpu_user_s": _num(user),
        "cpu_system_s": _num(system),
        "cpu_efficiency": _num(min(efficiency, 1.0), 4) if efficiency is not None else None,
        "cpu_wait_s": _num(wait),
        "cores_in_use": {
            "mean": _num((user + system) / elapsed_s, 2) if elapsed_s > 0 else None,
            # Cores' worth of the job's threads that waited for a CPU, on average.
            "waiting_mean": _num(wait / elapsed_s, 2) if wait is not None and elapsed_s > 0 else None,
            "distribution": cores_distribution(timeline),
        },
        "peak_rss_bytes": peak,
        "peak_memory_bytes": peak_memory,
        "memory_source": top_node["memory_source"] if top_node else None,
        "mem_requested_bytes": mem_requested_bytes,
        "mem_used_share": _num(peak_memory / mem_requested_bytes, 4)
        if mem_requested_bytes and peak_memory is not None
        else None,
        "not_measured": not_measured,
        "nodes": [
            {
                "node": n["node"],
                "mode": n["mode"],
                "cores_available": n["cores_available"],
                "peak_rss_bytes": n["peak_rss_bytes"],
                "peak_memory_bytes": n["peak_memory_bytes"],
                "memory_source": n["memory_source"],
                "samples": n["samples"],
                "measured_samples": n["measured_samples"],
            }
            for n in nodes
        ],
        "steps": [
            {
                "step": s["step"],
                "nodes": s["nodes"],
                "cpu_user_s": _num(s["cpu_user_s"]),
                "cpu_system_s": _num(s["cpu_system_s"]),
                "cpu_wait_s": _num(s.get("cpu_wait_s")),
                "cpus_available": s["cpus_available"],
                "cpu_efficiency": _num(
                    (s["cpu_user_s"] + s["cpu_system_s"]) / (s["cpus_available"] * elapsed_s), 4
                )
                if s["cpus_available"] and elapsed_s > 0
                else None,
                "peak_rss_bytes": s["peak_rss_bytes"],
                "peak_memory_bytes": s["peak_memory_bytes"],
                "memory_source": s["memory_source"],
                "cgroup_peak_bytes": s["cgroup_peak_bytes"],
                "largest_process_rss_bytes": s["largest_process_rss_bytes"],
                "read_bytes": s["read_bytes"],
                "write_bytes": s["write_bytes"],
                "minor_faults": s["minor_faults"],
                "major_faults": s["major_faults"],
                "max_processes": s["max_processes"],
                "observed_s": _num(s["observed_s"]),
                "samples": s["samples"],
                "processes": by_step_procs.get(s["step"], []),
            }
            for s in steps
        ],
        "gpus": [
            {
                "node": g["node"],
                "index": g["gpu_index"],
                "uuid": g["gpu_uuid"],
                "name": g["gpu_name"],
                "samples": g["samples"],
                "mean_util_pct": _num(g["mean_util_pct"], 1),
                "max_util_pct": _num(g["max_util_pct"], 1),
                "peak_mem_used_bytes": g["peak_mem_used_bytes"],
                "mem_total_bytes": g["mem_total_bytes"],
                "mean_power_w": _num(g["mean_power_w"], 1),
                "energy_j": _num(g["energy_j"], 1),
                "no_process_share": _num(g["no_process_share"], 4),
                "max_temperature_c": _num(g["max_temperature_c"], 1),
            }
            for g in gpus
        ],
        "top_processes": [
            {
                "pid": t["pid"],
                "comm": t["comm"],
                "step": t["step"],
                "node": t["node"],
                "cpu_s": _num(t["cpu_s"]),
                "peak_rss_bytes": t["peak_rss_bytes"],
                "peak_pss_bytes": t["peak_pss_bytes"],
                "cmdline": t["cmdline"],
            }
            for t in top[:top_processes]
        ],
        "timeline": [
            {
                "node": r["node"],
                "t": _num(r["t"]),
                "cores_in_use": _num(r["cores_in_use"], 3),
                "rss_bytes": r["rss_bytes"],
                "memory_bytes": r["memory_bytes"],
            }
            for r in timeline
        ],
        "gpu_timeline": _rows(store, q["gpu_timeline"], p),
    }
    return _blank_unmeasured(summary) if not_measured else summary


def why_not_measured(nodes: list[dict[str, Any]], elapsed_s: float) -> str | None:
    """Why no sample measured the job, in words; None when one did.

    A sample round that found none of the job's processes (the command had not started yet, or
    had ended; only the watcher or a slurmstepd was there) measured nothing: zeros from it would
    read as a job that used nothing.
    """
    if any(n["measured_samples"] for n in nodes):
        return None
    rounds = sum(n["samples"] for n in nodes)
    interval = min((n["interval_s"] for n in nodes if n.get("interval_s")), default=None)
    took = _spoken(elapsed_s)
    if rounds == 0:
        return f"the watcher could not take a sample (see its warnings); the job ran {took}"
    if interval is None or elapsed_s <= 2 * interval:
        every = f" (one every {_spoken(interval)})" if interval else ""
        return f"the job ended after {took}, before a sample found it{every}"
    return f"no sample found a process of the job in {rounds} rounds over {took}"


def _spoken(seconds: float) -> str:
    """'0.02 s', '4.5 s', '12 min' (units.duration): short runs keep their fraction of a second."""
    return duration(seconds) if seconds >= 60 else f"{round(seconds, 2):g} s"


# What only samples can tell: without one, these are unknown, not zero (summary.json: null).
_SAMPLED = ("cpu_user_s", "cpu_system_s", "cpu_efficiency", "cpu_wait_s", "peak_rss_bytes",
            "peak_memory_bytes", "memory_source", "mem_used_share")
_STEP_SAMPLED = ("cpu_user_s", "cpu_system_s", "cpu_wait_s", "cpu_efficiency", "peak_rss_bytes",
                 "peak_memory_bytes", "memory_source", "cgroup_peak_bytes",
                 "largest_process_rss_bytes", "read_bytes", "write_bytes", "minor_faults",
                 "major_faults")


def _blank_unmeasured(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary of a job no sample measured: what samples give is null (elapsed, exit status,
    cores, limits and findings from accounting stay)."""
    for key in _SAMPLED:
        summary[key] = None
    summary["cores_in_use"] = {key: None for key in summary["cores_in_use"]} | {"distribution": []}
    for step in summary["steps"]:
        for key in _STEP_SAMPLED:
            step[key] = None
    summary["timeline"] = []
    return summary

