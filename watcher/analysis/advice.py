"""The advice a user can paste: each finding as a sentence with its numbers, and the sbatch
option that would have fitted the job (or its family), computed from what was measured.

advice.sql measures (the quantile of cores busy or waiting, the family's biggest memory peak
and longest completed run, the GPUs in use at once); this module applies the rounding that
turns those into options and writes the sentence from the rule's template (rules.toml
``sentence``), every number formatted by :mod:`watcher.units`, so that a letter's headline and
the finding round alike. The result is ``finding.metrics["advice"]``::

    {"sentence": "Kept 0.38 of 4 cores busy on average; 2.48 core-hours reserved and idle.",
     "request": "--cpus-per-task=2",   # or None when no request would be better
     "scope": "job" | "family",
     "basis": "p90 of cores busy or waiting 1.4 over 359 samples, the cores beyond one × 1.1,
               rounded up"}

The one promise: a request never makes things worse. An underuse finding never advises more
than the job had, a memory request is never below the biggest peak of the family, a time
limit never below its longest completed run; where no such request exists it is None and the
basis says why.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from watcher.config import AdviceSettings
from watcher.units import NA, by_name, clock, duration, number, size

# What a rule's `request` may name: the kind of sbatch option its advice ends with.
REQUEST_KINDS = ("cpus", "mem", "time", "gpus", "none")

# Numbers every sentence may use, derived from the job (the Waste interface, common.md).
COMMON_FIELDS = ("idle_core_hours", "idle_gpu_hours")

# The metrics keys each rule's SQL writes (rules.sql's json_object): what its sentence may use.
# tests/test_advice.py checks every name here against the rule's SQL.
RULE_FIELDS: dict[str, tuple[str, ...]] = {
    "cpu_underuse": ("cpu_efficiency", "cpu_s", "elapsed_s", "cores", "mean_busy_cores"),
    "cpu_idle": ("idle_fraction", "mean_busy_cores", "cores", "elapsed_s"),
    "cpu_starved": ("cores", "busy_cores", "waiting_cores", "wait_share", "cpu_efficiency",
                    "samples"),
    "low_concurrency": ("cores_available", "mean_busy_cores", "max_busy_cores",
                        "parallel_fraction", "samples"),
    "low_compute_power": ("cores", "gpus", "elapsed_s"),
    "serial_many_cores": ("cores", "mean_busy_cores", "cpu_s", "elapsed_s"),
    "memory_oversubscription": ("peak_memory_bytes", "requested_bytes", "memory_fraction",
                                "state"),
    "memory_underuse": ("peak_memory_bytes", "requested_bytes", "memory_fraction",
                        "unused_bytes"),
    "time_limit_underuse": ("elapsed_s", "time_limit_s", "time_limit_fraction"),
    "short_jobs": ("short_jobs", "median_elapsed_s"),
    "jupyter_on_compute": ("process_name", "processes"),
    "gpu_underuse": ("gpus_allocated", "max_in_use", "most_common_in_use", "seconds_at_max"),
    "gpu_no_process": ("gpu_index", "gpu_name", "samples", "avg_util_pct"),
    "gpu_never_used": ("gpu_index", "gpu_name", "samples", "samples_with_process"),
    "try_splitting": ("gpu_index", "longest_idle_s", "span_s", "idle_fraction"),
    "investigate_gpu_usage": ("gpu_index", "avg_util_pct", "low_fraction", "span_s"),
    "high_system_time": ("counted_samples", "score", "system_share"),
}

_FORMATTER = string.Formatter()


def sentence_fields(rule_id: str) -> frozenset[str]:
    """The placeholders a rule's sentence may use."""
    return frozenset(RULE_FIELDS.get(rule_id, ())) | frozenset(COMMON_FIELDS)


def sentence_problem(rule_id: str, template: str) -> str | None:
    """Why ``template`` cannot be the rule's sentence (None: it can): bad braces, a format
    spec (numbers are formatted by their unit, one way everywhere) or an unknown name."""
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        return f"sentence is not a valid template: {exc}"
    allowed = sentence_fields(rule_id)
    for _text, name, spec, conversion in parts:
        if name is None:
            continue
        if spec or conversion:
            return f"sentence placeholder {{{name}}} may not carry a format"
        if name not in allowed:
            return (f"sentence uses unknown placeholder {{{name}}} (one of "
                    f"{', '.join(sorted(allowed))})")
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _common(name: str, facts: Mapping[str, Any]) -> float | None:
    """idle_core_hours and idle_gpu_hours, as the Waste interface defines them (common.md)."""
    if name == "idle_core_hours":
        core_hours, busy = _num(facts.get("core_hours")), _num(facts.get("busy_core_hours"))
        return None if core_hours is None or busy is None else max(core_hours - busy, 0.0)
    gpu_hours, util = _num(facts.get("gpu_hours")), _num(facts.get("gpu_avg_util_pct"))
    return None if gpu_hours is None or util is None else max(gpu_hours * (1 - util / 100), 0.0)


@lru_cache(maxsize=256)
def _parsed(template: str) -> tuple[tuple[str, str | None], ...]:
    # A period has a few hundred thousand findings and some twenty templates: parse each once.
    return tuple((text, name) for text, name, _spec, _conv in _FORMATTER.parse(template))


def sentence(template: str, metrics: Mapping[str, Any], facts: Mapping[str, Any]) -> str:
    """The template with every placeholder formatted by its unit (watcher.units.by_name)."""
    out = []
    for text, name in _parsed(template):
        out.append(text)
        if name is not None:
            value = _common(name, facts) if name in COMMON_FIELDS else metrics.get(name)
            out.append(by_name(name, value, missing=NA))
    # "1 cores", "1 GPUs": the templates say the plural, the numbers sometimes say one.
    return _ONE.sub(lambda m: m.group(1) + _SINGULAR[m.group(2)], "".join(out))


_SINGULAR = {"cores": "core", "GPUs": "GPU", "jobs": "job", "samples": "sample",
             "core-hours": "core-hour", "GPU-hours": "GPU-hour"}
_ONE = re.compile(r"(?<![\d.,])(1 )(" + "|".join(map(re.escape, _SINGULAR)) + r")\b")


def _ceil(value: float) -> int:
    # round first: 2.5 × 1.2 is 3, not a hair above it (the same guard as advice.sql's).
    return math.ceil(round(value, 6))


def cores_needed(measured: float, margin: float) -> int:
    """Whole cores for a measured number of busy cores: the margin covers the work beyond one
    core (a single thread cannot use a second one), rounded up, at least 1."""
    if measured <= 1:
        return 1
    return max(1, _ceil(1 + (measured - 1) * margin))


def _mem_option(nbytes: int) -> str:
    gib, mib = 1 << 30, 1 << 20
    if nbytes % gib == 0:
        return f"--mem={nbytes // gib}G"
    return f"--mem={math.ceil(nbytes / mib)}M"


Advice = dict[str, Any]


# The rules whose finding is that the job ran one core's worth of work at a time, by their own
# thresholds (a demand up to 1.1 or 1.25 cores): they advise one core, as their solution says,
# and not the two that the margin would make of a measured 1.02.
_SERIAL = frozenset({"low_concurrency", "serial_many_cores"})


def _cpus(facts: Mapping[str, Any], settings: AdviceSettings, underuse: bool,
          serial: bool = False) -> Advice:
    demand, mean = _num(facts.get("demand_cores")), _num(facts.get("mean_busy_cores"))
    ncpus = facts.get("ncpus") or 0
    pct = f"p{round(settings.cpu_percentile * 100):g}"
    if demand is not None:
        measured = demand
        rounds = facts.get("demand_rounds") or 0
        basis = f"{pct} of cores busy or waiting {number(demand)} over {rounds:,} samples"
    elif mean is not None:
        measured = mean
        basis = f"CPU time / elapsed {number(mean)} (accounting, no samples)"
    else:
        return {"request": None, "scope": "job", "basis": "no CPU time measured"}
    if serial:
        need = 1
        basis += "; one thing at a time by the rule's measure: 1"
    else:
        need = cores_needed(measured, settings.cpu_margin)
        basis += f", the cores beyond one × {settings.cpu_margin:g}, rounded up: {need}"
    nnodes, ntasks = facts.get("nnodes") or 1, facts.get("ntasks")
    if nnodes > 1:
        return {"request": None, "scope": "job",
                "basis": basis + f"; not advised for a job on {nnodes} nodes (per node it "
                "depends on how its tasks were spread)"}
    if ntasks and ntasks > 1:
        if need < ntasks:
            return {"request": None, "scope": "job",
                    "basis": basis + f"; fewer than its {ntasks} tasks, so no --cpus-per-task "
                    "fits without changing the program"}
        per_task = math.ceil(need / ntasks)
        request, total = f"--ntasks={ntasks} --cpus-per-task={per_task}", ntasks * per_task
    else:
        request, total = f"--cpus-per-task={need}", need
    if underuse and ncpus and total >= ncpus:
        return {"request": None, "scope": "job",
                "basis": basis + f"; not fewer than the {ncpus} cores it had"}
    return {"request": request, "scope": "job", "basis": basis}


def _mem(facts: Mapping[str, Any], settings: AdviceSettings, underuse: bool) -> Advice:
    advice, needed = facts.get("mem_advice_bytes"), facts.get("mem_needed_bytes")
    jobs = facts.get("family_jobs") or 1
    scope = "family" if jobs > 1 else "job"
    if not advice or not needed:
        return {"request": None, "scope": scope, "basis": "no memory peak measured"}
    whose = f"biggest peak of {jobs} runs" if jobs > 1 else "peak"
    basis = (f"{whose} {size(needed)} × {settings.mem_margin:g}, rounded up to "
             f"{size(settings.mem_step_bytes)}")
    if facts.get("family_at_limit"):
        basis += " (a run that reached its limit counts as needing at least its request)"
    requested = facts.get("req_mem_per_node")
    if underuse and requested and advice >= requested:
        return {"request": None, "scope": scope,
                "basis": basis + f"; not below the {size(requested)} requested"}
    return {"request": _mem_option(int(advice)), "scope": scope, "basis": basis}


def _time(facts: Mapping[str, Any], settings: AdviceSettings, underuse: bool) -> Advice:
    advice, longest = facts.get("time_advice_s"), facts.get("longest_completed_s")
    jobs = facts.get("completed_jobs") or 0
    scope = "family" if (facts.get("family_jobs") or 1) > 1 else "job"
    if not advice or not longest:
        return {"request": None, "scope": scope, "basis": "no completed run to go by"}
    whose = f"longest of {jobs} completed runs" if jobs > 1 else "completed run"
    basis = (f"{whose} {duration(longest)} × {settings.time_margin:g}, rounded up to "
             f"{duration(settings.time_step_s)}, at least {duration(settings.min_time_s)}")
    timeout = _num(facts.get("longest_timeout_s"))
    if timeout is not None and timeout >= advice:
        return {"request": None, "scope": scope,
                "basis": basis + f"; a run of the family hit its limit after {duration(timeout)}"}
    limit = facts.get("time_limit_s")
    if underuse and limit and advice >= limit:
        return {"request": None, "scope": scope,
                "basis": basis + f"; not below the {clock(limit)} limit it had"}
    return {"request": f"--time={clock(advice)}", "scope": scope, "basis": basis}


def _gpus(facts: Mapping[str, Any], settings: AdviceSettings, underuse: bool) -> Advice:
    used = facts.get("gpus_used_per_node")
    nnodes = facts.get("nnodes") or 1
    allocated = facts.get("gpus") or 0
    per_node = allocated // nnodes if allocated else 0
    if used is None:
        return {"request": None, "scope": "job", "basis": "no GPU samples"}
    basis = f"at most {used} of {per_node or allocated} GPUs in use at once on a node"
    if used == 0:
        return {"request": None, "scope": "job",
                "basis": basis + "; leave the GPU request out for CPU-only work"}
    if underuse and per_node and used >= per_node:
        return {"request": None, "scope": "job",
                "basis": basis + "; not fewer than it had"}
    option = f"--gpus={used}" if nnodes == 1 else f"--gpus-per-node={used}"
    return {"request": option, "scope": "job", "basis": basis}


_REQUESTS = {"cpus": _cpus, "mem": _mem, "time": _time, "gpus": _gpus}
# The rules whose advice asks for more than the job had; every other request is a reduction.
_MORE = frozenset({"memory_oversubscription"})


class Adviser:
    """Advice for the findings of one analysis: the settings, and the requests already worked
    out (a job's request of one kind is the same for each of its findings of that kind)."""

    def __init__(self, settings: AdviceSettings) -> None:
        self.settings = settings
        self._requests: dict[tuple[str, bool, bool, str], Advice] = {}

    def advise(
        self,
        rule_id: str,
        template: str,
        request_kind: str | None,
        metrics: Mapping[str, Any],
        facts: Mapping[str, Any] | None,
        job_key: str = "",
    ) -> Advice:
        """The advice dict of one finding: its sentence and, for a rule with a request kind,
        the option that would have fitted (``facts``: its job's tw_advice row, None if absent)."""
        facts = facts or {}
        out: Advice = {"sentence": sentence(template, metrics, facts), "request": None,
                       "scope": "job", "basis": None}
        build = _REQUESTS.get(request_kind or "none")
        if build is not None and facts:
            underuse = rule_id not in _MORE
            serial = rule_id in _SERIAL
            key = (request_kind or "", underuse, serial, job_key)
            request = self._requests.get(key) if job_key else None
            if request is None:
                if request_kind == "cpus":
                    request = _cpus(facts, self.settings, underuse, serial)
                else:
                    request = build(facts, self.settings, underuse)
                if job_key:
                    self._requests[key] = request
            out.update(request)
        return out

