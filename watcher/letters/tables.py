"""The rows a letter's tables show: one row per job (GPUs grouped), the waste column, worst first.

The report's tables (watcher/analysis/sections.py) keep every row the engine made: a job and
each of its steps, each GPU of a job, every column. A letter has room for a few rows, so here

* resource rows fold into one row per job (its steps' problems joined to it), with how the job
  ended and its idle core-hours;
* GPU rows fold into one row per job: "3 of 4 never used", the mean utilization, idle GPU-hours;
* history rows keep the families with a problem, with their idle core- or GPU-hours;
* rows are ordered by that waste, largest first, so the rows that make the cut are the ones
  that cost most;
* a row never names two rules that contradict each other (see CONTRADICTIONS).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from watcher.analysis.model import Table
from watcher.jobstate import end_state
from watcher.letters import waste

Row = dict[str, Any]
# Pairs of rules that cannot both be the advice for one row: the second wins. A family whose
# jobs both peak near their memory request and leave most of it unused must not be told to
# ask for less (its peaking jobs would die): the oversubscription is the advice.
CONTRADICTIONS = (("memory_underuse", "memory_oversubscription"),)
PROBLEM_COLUMNS = ("problems", "findings", "rules")

# The columns a letter shows, per (section, table kind); the report's other columns stay in the
# bundle and on the web site.
SHOWN: dict[tuple[str, str], tuple[str, ...]] = {
    # Who, what it cost, why: on a phone the first columns are what shows without scrolling.
    ("resources", "latest_concerning"): (
        "job_id", "job_name", "idle_core_hours", "problems", "end", "cores", "cpu_efficiency",
        "memory_fraction"),
    ("resources", "history"): (
        "job_name", "idle_core_hours", "problems", "jobs", "last_job_id", "core_hours",
        "cpu_efficiency", "max_memory_fraction"),
    ("gpu", "latest_concerning"): (
        "job_id", "job_name", "idle_gpu_hours", "problems", "gpus_used", "gpu_util_pct"),
    ("gpu", "history"): (
        "job_name", "idle_gpu_hours", "problems", "jobs", "last_job_id", "gpu_hours",
        "gpu_avg_util_pct"),
    ("system", "latest_concerning"): ("job_id", "step", "job_name", "system_share", "problems"),
    ("system", "history"): ("job_name", "problems", "jobs", "last_job_id"),
    ("ended", "ended_badly"): (
        "job_id", "job_name", "end", "elapsed_s", "time_limit_fraction", "memory_fraction"),
}
# Headings and help of the columns the letter adds or names in its own words.
HEADINGS = {
    "end": ("How it ended", "Slurm's state, with the exit code or the signal that ended it"),
    "idle_core_hours": ("Idle core-hours",
                        "reserved but unused: elapsed × cores − CPU time, in hours"),
    "idle_gpu_hours": ("Idle GPU-hours",
                       "reserved but unused: elapsed × GPUs × (1 − mean utilization), in hours"),
    "gpus_used": ("GPUs", "allocated GPUs, and how many of them never computed"),
    "gpu_util_pct": ("GPU utilization", "mean utilization of the job's GPUs"),
    "cpu_efficiency": ("CPU utilization", "CPU time / (elapsed × cores)"),
    "memory_fraction": ("Memory used", "memory peak / memory requested"),
    "max_memory_fraction": ("Memory used (max)", "the highest peak / request of the family"),
    "gpu_avg_util_pct": ("GPU utilization", "mean utilization of the family's GPUs, over time"),
    "system_share": ("Time in the kernel", "system time / CPU time: time spent in the kernel "
                     "(I/O, memory management) rather than in the program"),
}


def rule_ids(row: Mapping[str, Any]) -> list[str]:
    """The rule ids of a row's problems column: a list, as the engine gives it; a string
    joined with ", " (a hand-built report, an older report.json) is split."""
    for column in PROBLEM_COLUMNS:
        value = row.get(column)
        if value:
            ids = value if isinstance(value, list | tuple) else str(value).split(",")
            return [i.strip() for i in ids if i and i.strip()]
    return []


def consistent(ids: Sequence[str]) -> list[str]:
    """``ids`` without the loser of each contradicting pair both present."""
    out = list(dict.fromkeys(ids))
    for loser, winner in CONTRADICTIONS:
        if loser in out and winner in out:
            out.remove(loser)
    return out


def _set_problems(row: Row, ids: Sequence[str]) -> Row:
    row["problems"] = consistent(ids)
    for other in PROBLEM_COLUMNS[1:]:
        row.pop(other, None)
    return row


class JobRows:
    """The report's job rows by the id the tables show."""

    def __init__(self, jobs: Sequence[Mapping[str, Any]]) -> None:
        self.by_id = {str(j.get("job_id_display", j.get("job_id"))): j for j in jobs}

    def of(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.by_id.get(str(row.get("job_id")), {})


def _end(job: Mapping[str, Any], row: Mapping[str, Any]) -> Any:
    state = job.get("state", row.get("state"))
    if state is None and "exit_code" not in job:
        return None
    return end_state(state, job.get("exit_code"), job.get("exit_signal"))


def _by_job(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row.get("job_id")), []).append(row)
    return grouped


def resource_rows(table: Table, jobs: JobRows) -> list[Row]:
    """One row per job: the job's own row (else its first step's), every step's problems."""
    out = []
    for members in _by_job(table.rows).values():
        head = next((r for r in members if r.get("step") in (None, "")), members[0])
        job = jobs.of(head)
        row = dict(head)
        row["end"] = _end(job, head)
        row["idle_core_hours"] = waste.idle_core_hours(job) if job else None
        out.append(_set_problems(row, [i for r in members for i in rule_ids(r)]))
    return out


def gpu_rows(concerning: Table, every: Table, jobs: JobRows) -> list[Row]:
    """One row per job with a GPU problem, over all of the job's GPUs."""
    all_gpus = _by_job(every.rows)
    out = []
    for job_id, members in _by_job(concerning.rows).items():
        gpus = all_gpus.get(job_id, members)
        job = jobs.of(members[0])
        allocated = int(job.get("gpus") or len(gpus))
        never = sum(1 for g in gpus if not g.get("avg_util_pct"))
        utils = [g["avg_util_pct"] for g in gpus if isinstance(g.get("avg_util_pct"), int | float)]
        util = job.get("gpu_avg_util_pct")
        if util is None and utils:
            util = sum(utils) / len(utils)
        gpus_word = f"{allocated} GPU" + ("s" if allocated != 1 else "")
        if never and never >= allocated:
            used = "never used" if allocated == 1 else f"none of {allocated} used"
        elif never:
            used = f"{never} of {allocated} never used"
        else:
            used = gpus_word
        row: Row = {"job_id": members[0].get("job_id"), "job_name": members[0].get("job_name"),
                    "gpus_used": used, "gpu_util_pct": util,
                    "idle_gpu_hours": waste.idle_gpu_hours(job) if job else None}
        out.append(_set_problems(row, [i for r in members for i in rule_ids(r)]))
    return out


def history_rows(table: Table, section: str) -> list[Row]:
    out = []
    for family in table.rows:
        ids = rule_ids(family)
        if not ids:
            continue  # the letter shows the families to change; the web site has every one
        row = dict(family)
        row["idle_core_hours"] = waste.family_idle_core_hours(family)
        row["idle_gpu_hours"] = waste.family_idle_gpu_hours(family)
        if section == "gpu" and not row.get("gpu_hours"):
            continue
        out.append(_set_problems(row, ids))
    return out


def ended_badly(jobs: Sequence[Mapping[str, Any]]) -> list[Row]:
    """The period's jobs that did not end well, OUT_OF_MEMORY and TIMEOUT first."""
    out = []
    for job in jobs:
        state = end_state(job.get("state"), job.get("exit_code"), job.get("exit_signal"))
        if state.bad:
            out.append({**job, "job_id": job.get("job_id_display", job.get("job_id")),
                        "end": state})
    first = {"OUT_OF_MEMORY": 0, "TIMEOUT": 1}
    out.sort(key=lambda r: (first.get(r["end"].state, 2), -(r.get("elapsed_s") or 0)))
    return out


def _waste_key(column: str) -> Callable[[Row], float]:
    return lambda row: -(row.get(column) or 0.0)


def ordered(section: str, kind: str, rows: list[Row],
            severity: Callable[[Row], tuple[int, int]]) -> list[Row]:
    """Worst first: by the section's waste column, then by severity."""
    if kind == "ended_badly":
        return rows
    column = {"resources": "idle_core_hours", "gpu": "idle_gpu_hours"}.get(section)
    if column:
        return sorted(rows, key=lambda r: (_waste_key(column)(r), severity(r)))
    if section == "system" and kind == "latest_concerning":
        return sorted(rows, key=lambda r: (-(r.get("system_share") or 0.0), severity(r)))
    return sorted(rows, key=severity)


def letter_rows(section: str, kind: str, table: Table, every: Table | None,
                jobs: JobRows) -> list[Row]:
    """The rows of one of the report's tables as the letter shows them, before ordering."""
    if kind == "history":
        return history_rows(table, section)
    if section == "resources":
        return resource_rows(table, jobs)
    if section == "gpu" and every is not None:
        return gpu_rows(table, every, jobs)
    return [dict(r) for r in table.rows]   # a table this module does not know: as it is
