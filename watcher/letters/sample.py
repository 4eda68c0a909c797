"""A made-up but realistic report: for letter previews, the tests and the benchmark.

It has the shape the analysis engine gives (the tables come from watcher.analysis.sections,
the job numbers carry the engine's keys, the findings name the shipped rules), and its numbers
come from a seeded generator, so every run sees the same letters.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from watcher.analysis.model import (
    SEVERITY_ORDER,
    Finding,
    Period,
    RuleInfo,
    SectionReport,
    UserReport,
)
from watcher.analysis.rules import packaged_rules
from watcher.analysis.sections import SECTIONS, make_table

SAMPLE_PERIOD = Period(
    "2026-W47", datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)
)
_NAMES = ("train_resnet.sh", "preprocess.py", "md_run", "assemble.sbatch", "jupyter",
          "blast_array", "render_frames", "fit_model.R", "cp2k.sh", "postprocess")
GIB = 2**30


GPU_NAMES = ("train_resnet.sh", "jupyter", "md_run")


def _job(rng: random.Random, job_id: int, start: datetime,
         names: tuple[str, ...] = _NAMES) -> dict[str, Any]:
    name = rng.choice(names)
    cores = rng.choice((1, 4, 8, 16, 32, 64))
    elapsed = rng.randint(300, 36 * 3600)
    limit = max(elapsed, rng.choice((4, 24, 48, 72)) * 3600)
    busy = min(cores, max(0.05, rng.betavariate(1.2, 2.5) * cores * rng.choice((0.2, 1, 1))))
    gpus = rng.choice((0, 1, 4)) if name in GPU_NAMES else 0
    requested = cores * rng.choice((2, 4, 8)) * GIB
    peak = int(requested * rng.uniform(0.03, 0.95))
    hours = elapsed / 3600
    util = round(rng.choice((0.0, rng.uniform(2, 30), rng.uniform(30, 97))), 1) if gpus else None
    energy = busy * 10 * hours + gpus * 250 * hours * ((util or 0) / 100 + 0.2)
    # A few jobs end badly, drawn from the id (not from rng: the other numbers stay the same).
    state, code, sig = "COMPLETED", 0, None
    if job_id % 11 == 0:
        state = "OUT_OF_MEMORY"
    elif job_id % 13 == 0:
        state, limit = "TIMEOUT", elapsed     # Slurm ended it at its limit
    elif job_id % 17 == 0:
        state, code = "FAILED", 2
    elif job_id % 19 == 0:
        state, code, sig = "FAILED", 0, 11
    return {
        "job_key": f"turing:{job_id}", "cluster": "turing", "job_id": job_id,
        "job_id_display": str(job_id), "job_name": name, "state": state,
        "exit_code": code, "exit_signal": sig, "cpu_s": round(busy * elapsed, 1),
        "submit_line": f"sbatch --cpus-per-task={cores} {name}",
        "start_time": start, "end_time": start + timedelta(seconds=elapsed),
        "elapsed_s": elapsed, "time_limit_s": limit, "time_limit_fraction": elapsed / limit,
        "nnodes": 1, "ncpus": cores, "gpus": gpus, "cpu_efficiency": round(busy / cores, 4),
        "mean_busy_cores": round(busy, 2), "peak_memory_bytes": peak, "memory_source": "cgroup",
        "peak_rss_bytes": peak, "peak_node": "node07",
        "requested_mem_bytes": requested, "memory_fraction": round(peak / requested, 4),
        "core_hours": round(cores * hours, 3), "busy_core_hours": round(busy * hours, 3),
        "gpu_hours": round(gpus * hours, 3), "gpu_avg_util_pct": util,
        "energy_wh": round(energy, 2), "co2_g": round(energy * 0.3, 1),
    }


def _rules_for(job: dict[str, Any]) -> list[str]:
    rules = []
    if job["ncpus"] > 1 and job["cpu_efficiency"] < 0.5:
        rules.append("cpu_underuse")
    if job["memory_fraction"] < 0.75 and job["requested_mem_bytes"] - job["peak_memory_bytes"] > GIB:
        rules.append("memory_underuse")
    if job["time_limit_fraction"] < 0.75 and job["time_limit_s"] - job["elapsed_s"] > 1800:
        rules.append("time_limit_underuse")
    if job["job_name"] == "jupyter":
        rules.append("jupyter_on_compute")
    util = job["gpu_avg_util_pct"]
    if util is not None:
        rules.append("gpu_never_used" if util == 0 else
                     "investigate_gpu_usage" if util < 30 else "")
    if job["job_id"] % 7 == 0:
        rules.append("high_system_time")
    return [r for r in rules if r]


@cache
def _shipped_rules() -> dict[str, RuleInfo]:
    """Severity and section as the shipped rules.toml declares them (a sample has no site)."""
    return {rule.id: rule for rule in packaged_rules().rules}


def _advice(rule: str, job: dict[str, Any]) -> dict[str, Any] | None:
    """What the analysis engine says about a finding (``metrics["advice"]``, see the advice
    interface in docs/letters.md), for the rules whose request is a number."""
    hours = job["elapsed_s"] / 3600
    if rule == "cpu_underuse":
        busy, cores = job["mean_busy_cores"], job["ncpus"]
        fits = max(1, math.ceil(busy * 1.1))
        return {"sentence": f"Kept {busy:.1f} of {cores} cores busy; "
                            f"{(cores - busy) * hours:,.1f} core-hours reserved and idle.",
                "request": f"--cpus-per-task={fits}", "scope": "job",
                "basis": f"cores busy {busy:.1f} × 1.1, rounded up"}
    if rule == "memory_underuse":
        peak, asked = job["peak_memory_bytes"] / GIB, job["requested_mem_bytes"] / GIB
        return {"sentence": f"Peaked at {peak:.1f} GiB of the {asked:.0f} GiB requested.",
                "request": f"--mem={max(1, math.ceil(peak * 1.2))}G", "scope": "job",
                "basis": "peak × 1.2, rounded up"}
    if rule == "time_limit_underuse":
        minutes = math.ceil(job["elapsed_s"] * 1.2 / 60 / 15) * 15
        return {"sentence": f"Ran {hours:.1f} h of the {job['time_limit_s'] / 3600:.0f} h "
                            "asked for.",
                "request": f"--time={minutes // 60:02d}:{minutes % 60:02d}:00", "scope": "job",
                "basis": "elapsed × 1.2, rounded up to 15 min"}
    if rule == "gpu_never_used":
        gpus = f"{job['gpus']} GPUs" if job["gpus"] > 1 else "GPU"
        return {"sentence": f"Kept none of its {gpus} busy; "
                            f"{job['gpu_hours']:.1f} GPU-hours reserved and idle.",
                "request": None, "scope": "job", "basis": "utilization 0 in every sample"}
    return None


def _finding(rule: str, job: dict[str, Any], user: str, period: Period) -> Finding:
    metrics: dict[str, Any] = {"job_key": job["job_key"]}
    if rule == "cpu_underuse":
        metrics.update(cpu_efficiency=job["cpu_efficiency"], cores=job["ncpus"],
                       mean_busy_cores=job["mean_busy_cores"], elapsed_s=job["elapsed_s"])
    elif rule == "memory_underuse":
        metrics.update(peak_memory_bytes=job["peak_memory_bytes"],
                       requested_bytes=job["requested_mem_bytes"],
                       memory_fraction=job["memory_fraction"], source="cgroup")
    elif rule == "time_limit_underuse":
        metrics.update(elapsed_s=job["elapsed_s"], time_limit_s=job["time_limit_s"])
    advice = _advice(rule, job)
    if advice:
        metrics["advice"] = advice
    info = _shipped_rules()[rule]
    return Finding(rule, info.severity, user, job["job_id"],
                   "batch" if rule == "high_system_time" else None, job["cluster"],
                   node="node07", gpu="GPU-0" if info.section == "gpu" else None,
                   job_name=job["job_name"], account="physics", period=period.id,
                   metrics=metrics)


def sample_report(user: str = "alice", jobs: int = 24, seed: int = 47,
                  period: Period = SAMPLE_PERIOD, names: tuple[str, ...] = _NAMES) -> UserReport:
    """A report for ``user`` with ``jobs`` jobs: three sections, every severity. ``names``
    are the job names drawn from (GPU_NAMES: a user of GPU jobs)."""
    rng = random.Random(f"{seed}:{user}")
    span = (period.end - period.start) / max(jobs, 1)
    all_jobs = [_job(rng, 4_100_000 + rng.randint(0, 899_999), period.start + span * i, names)
                for i in range(jobs)]
    rules = {job["job_key"]: _rules_for(job) for job in all_jobs}
    findings = [_finding(r, job, user, period) for job in all_jobs for r in rules[job["job_key"]]]
    findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], f.job_id or 0, f.rule))

    section_of = {rule.id: rule.section for rule in _shipped_rules().values()}

    def problems(jobs: list[dict[str, Any]], section: str) -> list[str]:
        """The rule ids found on ``jobs`` that belong to ``section``, as the engine lists them."""
        return sorted({r for j in jobs for r in rules[j["job_key"]] if section_of[r] == section})

    resources = [{**j, "job_id": j["job_id_display"], "step": None, "node": "node07",
                  "cores": j["ncpus"], "max_busy_cores": round(j["mean_busy_cores"] * 1.3, 2),
                  "problems": problems([j], "resources")} for j in all_jobs]
    gpus = [{**j, "job_id": j["job_id_display"], "node": "node07", "gpu_index": index,
             "gpu_name": "NVIDIA A100-SXM4-40GB", "avg_util_pct": j["gpu_avg_util_pct"],
             "idle_fraction": round(1 - j["gpu_avg_util_pct"] / 100, 4) / 2,
             "low_fraction": 0.1, "longest_idle_fraction": 0.2, "avg_sm_clock_mhz": 1410,
             "avg_power_w": 95.5, "problems": problems([j], "gpu")}
            for j in all_jobs for index in range(j["gpus"] or 0)]   # one row per GPU
    system = [{**j, "job_id": j["job_id_display"], "step": "batch", "node": "node07",
               "sys_samples": 40, "sys_10_33": 12, "sys_33_67": 20, "sys_67_100": 8,
               "sys_over_100": 0.0, "sys_score": 76.0, "system_share": 0.41,
               "problems": problems([j], "system")} for j in all_jobs if j["job_id"] % 7 == 0]
    families: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for job in all_jobs:
        families[(job["job_name"], job["submit_line"])].append(job)
    history = []
    for (name, _), members in sorted(families.items(), key=lambda kv: kv[0]):
        core_hours = sum(j["core_hours"] for j in members)
        history.append({
            "job_name": name, "submissions": len(members), "jobs": len(members) * 3,
            "last_job_id": members[-1]["job_id_display"], "core_hours": round(core_hours, 3),
            "cpu_efficiency": round(sum(j["busy_core_hours"] for j in members) / core_hours, 4),
            "max_memory_fraction": max(j["memory_fraction"] for j in members),
            "avg_time_limit_fraction": sum(j["time_limit_fraction"] for j in members)
            / len(members),
            "gpu_hours": sum(j["gpu_hours"] for j in members), "sys_samples": 0,
            "problems": problems(members, "resources"),
        })
    history.sort(key=lambda f: -f["core_hours"])
    rows = {"resources": resources, "gpu": gpus, "system": system}
    sections = [
        SectionReport(
            spec.id, spec.title, spec.measures,
            make_table(spec.latest, [r for r in rows[spec.id] if r["problems"]]),
            make_table(spec.latest, rows[spec.id]),
            make_table(spec.history, history if spec.id == "resources" else []),
        )
        for spec in SECTIONS
    ]
    core_hours = sum(j["core_hours"] for j in all_jobs)
    busy = sum(j["busy_core_hours"] for j in all_jobs)
    totals = {
        "jobs": len(all_jobs), "submissions": len(all_jobs),
        "core_hours": round(core_hours, 3), "busy_core_hours": round(busy, 3),
        "cpu_efficiency": round(busy / core_hours, 4) if core_hours else None,
        "gpu_hours": round(sum(j["gpu_hours"] for j in all_jobs), 3),
        "energy_kwh": round(sum(j["energy_wh"] for j in all_jobs) / 1000, 4),
        "co2_kg": round(sum(j["co2_g"] for j in all_jobs) / 1000, 4),
        "findings": {s: sum(1 for f in findings if f.severity == s) for s in SEVERITY_ORDER},
    }
    return UserReport(user, period, findings, sections, all_jobs, totals)


def fine_report(user: str = "carol", jobs: int = 12, seed: int = 47,
                period: Period = SAMPLE_PERIOD) -> UserReport:
    """A report of a user whose jobs were all fine: no finding, every job COMPLETED."""
    report = sample_report(user, jobs, seed, period)
    report.findings.clear()
    for job in report.jobs:   # busy as they asked: what a letter with nothing to change says
        cores = job["ncpus"]
        job.update(state="COMPLETED", exit_code=0, exit_signal=None, cpu_efficiency=0.92,
                   mean_busy_cores=round(0.92 * cores, 2),
                   busy_core_hours=round(0.92 * job["core_hours"], 3),
                   cpu_s=round(0.92 * cores * job["elapsed_s"], 1),
                   gpu_avg_util_pct=88.0 if job["gpus"] else None)
    report.totals.update(busy_core_hours=round(0.92 * report.totals["core_hours"], 3),
                         cpu_efficiency=0.92)
    for section in report.sections:
        section.latest_concerning.rows.clear()
        for table in (section.all_latest, section.history):
            for row in table.rows if table else []:
                row["problems"] = []
    report.totals["findings"] = {s: 0 for s in SEVERITY_ORDER}
    return report
