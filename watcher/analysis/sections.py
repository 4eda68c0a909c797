"""The report sections: which columns their tables show, with headings and help for readers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from watcher.analysis.model import Table


@dataclass(frozen=True)
class Column:
    id: str
    heading: str
    help: str


@dataclass(frozen=True)
class SectionSpec:
    id: str
    title: str
    measures: str
    latest: tuple[Column, ...]
    history: tuple[Column, ...]


_JOB = Column(
    "job_id", "Job ID", "Slurm job id (array tasks as <array>_<task>); local runs: local:<session>"
)
_STEP = Column("step", "Step", "batch, extern, 0, 1 …; empty for the job as a whole")
_NAME = Column("job_name", "Name", "the job name")
_NODE = Column("node", "Node", "the node the numbers are from")
_PROBLEMS = Column("problems", "Problems", "rule ids found on this row (see the rule list)")
_FAMILY = (
    Column("job_name", "Job family", "jobs with the same name and submit line"),
    Column("submissions", "Submissions", "sbatch submissions; an array counts once"),
    Column("jobs", "Jobs", "jobs including every array task"),
    Column("last_job_id", "Latest job", "the most recent job of the family"),
)

SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec(
        id="resources",
        title="Resource usage",
        measures="How much of the allocated cores, memory, GPUs and time the jobs used.",
        latest=(
            _JOB, _STEP, _NAME, _NODE,
            Column("state", "State", "how the job ended"),
            Column("elapsed_s", "Elapsed (s)", "wall-clock run time"),
            Column("time_limit_fraction", "Time limit used", "elapsed / time limit"),
            Column("cores", "Cores", "allocated cores (step rows: cores available on the node)"),
            Column("cpu_efficiency", "CPU efficiency", "CPU time / (elapsed × cores)"),
            Column("mean_busy_cores", "Busy cores (mean)", "CPU time / elapsed"),
            Column("max_busy_cores", "Busy cores (max)", "the busiest sample interval"),
            Column("peak_memory_bytes", "Memory peak",
                   "highest memory on a node as the kernel charges it (cgroup or PSS, else RSS)"),
            Column("peak_rss_bytes", "RSS sum (peak)",
                   "resident memory summed over processes: a shared page once per process"),
            Column("requested_mem_bytes", "Memory requested", "requested memory per node"),
            Column("memory_fraction", "Memory used", "peak / request"),
            Column("gpus", "GPUs", "allocated GPUs"),
            Column("energy_wh", "Energy (Wh)", "estimated CPU energy plus measured GPU energy"),
            _PROBLEMS,
        ),
        history=(
            *_FAMILY,
            Column("core_hours", "Core-hours", "allocated cores × elapsed, summed"),
            Column("cpu_efficiency", "CPU efficiency", "busy core-hours / allocated core-hours"),
            Column("max_memory_fraction", "Memory used (max)", "the highest peak / request"),
            Column("avg_time_limit_fraction", "Time limit used (mean)", "elapsed / time limit"),
            _PROBLEMS,
        ),
    ),
    SectionSpec(
        id="gpu",
        title="GPU usage",
        measures="How busy each allocated GPU was over the run.",
        latest=(
            _JOB, _NAME, _NODE,
            Column("gpu_index", "GPU", "NVML index on the node"),
            Column("gpu_name", "Model", "GPU model"),
            Column("avg_util_pct", "Utilization (mean %)", "time-weighted mean utilization"),
            Column("idle_fraction", "Idle", "share of the time at 0 % utilization"),
            Column("low_fraction", "Low", "share of the time busy but below the low threshold"),
            Column("longest_idle_fraction", "Longest idle", "longest idle stretch / run"),
            Column("avg_sm_clock_mhz", "SM clock (MHz)", "mean SM clock"),
            Column("avg_power_w", "Power (W)", "mean power draw"),
            Column("energy_wh", "Energy (Wh)", "from the NVML energy counter, else power × time"),
            _PROBLEMS,
        ),
        history=(
            *_FAMILY,
            Column("gpu_hours", "GPU-hours", "allocated GPUs × elapsed, summed"),
            Column("gpu_avg_util_pct", "Utilization (mean %)", "time-weighted over the family"),
            Column("gpu_idle_fraction", "Idle", "share of GPU time at 0 %"),
            Column("gpu_low_fraction", "Low or idle", "share of GPU time below the low threshold"),
            _PROBLEMS,
        ),
    ),
    SectionSpec(
        id="system",
        title="System time ratio",
        measures="How much of the CPU time went to the kernel rather than the program.",
        latest=(
            _JOB, _STEP, _NAME, _NODE,
            Column("sys_samples", "Counted samples", "samples with noticeable system time"),
            Column("sys_10_33", "Ratio 10–33 %", "samples with system / user time in (10 %, 33 %]"),
            Column("sys_33_67", "Ratio 33–67 %", "samples in (33 %, 67 %]"),
            Column("sys_67_100", "Ratio 67–100 %", "samples in (67 %, 100 %]"),
            Column("sys_over_100", "Ratio > 100 %", "sum of the ratios above 100 %"),
            Column("sys_score", "Weighted samples",
                   "counted samples weighted by how much system time they had: the higher, the "
                   "more time the kernel took from the program"),
            Column("system_share", "System share", "system time / CPU time of the step"),
            _PROBLEMS,
        ),
        history=(
            *_FAMILY,
            Column("sys_samples", "Counted samples", "over the family"),
            Column("sys_score", "Weighted samples", "over the family"),
            _PROBLEMS,
        ),
    ),
)


def make_table(columns: tuple[Column, ...], rows: list[dict[str, Any]]) -> Table:
    return Table(
        columns=[c.id for c in columns],
        headings={c.id: c.heading for c in columns},
        help={c.id: c.help for c in columns},
        rows=[{c.id: row.get(c.id) for c in columns} for row in rows],
    )
