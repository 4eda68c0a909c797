"""The TL;DR: the period in a few sentences, then the few changes that matter most.

Everything here is computed from the report; the wording says what was measured, with the
numbers, so that a reader can check it against the tables further down.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watcher.analysis.model import SEVERITY_ORDER, Finding, RuleInfo, UserReport
from watcher.letters import waste
from watcher.units import duration, number, percent, plural, size

Job = Mapping[str, Any]


def _num(job: Job, key: str) -> float | None:
    value = job.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _gpu_busy_hours(job: Job) -> float | None:
    hours, util = _num(job, "gpu_hours"), _num(job, "gpu_avg_util_pct")
    return None if hours is None or util is None else hours * util / 100


@dataclass(frozen=True)
class Usage:
    """A used-versus-reserved pair of job numbers, and how to say it."""

    used: Callable[[Job], float | None]
    reserved: Callable[[Job], float | None]
    words: str                          # a sentence with {used}, {reserved} and {share}
    fmt: Callable[[Any], str]


CORES = Usage(lambda j: _num(j, "busy_core_hours"), lambda j: _num(j, "core_hours"),
              "Together they used {used} of the {reserved} core-hours they reserved ({share}).",
              number)
GPUS = Usage(_gpu_busy_hours, lambda j: _num(j, "gpu_hours"),
             "Their GPUs were busy for {used} of the {reserved} GPU-hours reserved ({share}).",
             number)
# The peak as the kernel charges it (cgroup, PSS); bundles from before it have the RSS sum only.
MEMORY = Usage(lambda j: _num(j, "peak_memory_bytes") if j.get("peak_memory_bytes") is not None
               else _num(j, "peak_rss_bytes"),
               lambda j: _num(j, "requested_mem_bytes"),
               "Their memory peaks add up to {used} of the {reserved} they requested ({share}).",
               size)
TIME = Usage(lambda j: _num(j, "elapsed_s"), lambda j: _num(j, "time_limit_s"),
             "Together they ran for {used} of the {reserved} they asked for ({share}).",
             duration)
# By the resource a rule declares in rules.toml; the other resources have no such pair.
USAGES = {"cpu": CORES, "gpu": GPUS, "memory": MEMORY, "time": TIME}


@dataclass(frozen=True)
class Advice:
    """One change the reader should make, with the evidence for it."""

    rule: RuleInfo
    jobs: int
    evidence: str | None     # "Together they used 370 of the 4,096 core-hours … (9%)."
    first_step: str          # the first sentence of the rule's solution
    anchor: str              # where the full explanation is in the letter
    used_share: float        # used / reserved behind the evidence; 1.0 when there is none
    sentence: str | None = None   # metrics["advice"] of the finding that costs most
    request: str | None = None    # the sbatch options that would have fitted it
    scope: str | None = None      # "job" or "family"


def problem_anchor(rule_id: str) -> str:
    return "problem-" + re.sub(r"[^a-z0-9]+", "-", rule_id.lower()).strip("-")


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


def measure(jobs: Sequence[Job], usage: Usage) -> tuple[str, float] | None:
    """The usage sentence over ``jobs`` (those with both numbers) and the used share."""
    pairs = [(usage.used(j), usage.reserved(j)) for j in jobs]
    pairs = [(u, r) for u, r in pairs if u is not None and r is not None]
    used, reserved = sum(u for u, _ in pairs), sum(r for _, r in pairs)
    if not pairs or reserved <= 0:
        return None
    share = used / reserved
    text = usage.words.format(used=usage.fmt(used), reserved=usage.fmt(reserved),
                              share=percent(100 * share))
    return text, share


class JobIndex:
    """The report's job rows by job key and by (cluster, job id), built once per report."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.by_key = {j.get("job_key"): j for j in jobs if j.get("job_key") is not None}
        self.by_id = {(j.get("cluster"), j.get("job_id")): j for j in jobs}

    def jobs_of(self, findings: Sequence[Finding]) -> list[Job]:
        """The job rows that the findings are about (by job key, else by job id)."""
        found: dict[int, Job] = {}
        for f in findings:
            job = self.by_key.get(f.metrics.get("job_key")) or self.by_id.get(
                (f.cluster, f.job_id))
            if job is not None:
                found[id(job)] = job
        return list(found.values())


def usage_of(rule: RuleInfo) -> Usage | None:
    """The used-versus-reserved pair of the resource the rule declares (gpu -> GPUS)."""
    return USAGES.get(rule.resource)


def evidence(rule: RuleInfo, findings: Sequence[Finding], jobs: JobIndex
             ) -> tuple[str | None, float]:
    """The numbers behind a rule: its resource's usage pair, over the jobs it flagged."""
    usage = usage_of(rule)
    said = measure(jobs.jobs_of(findings), usage) if usage else None
    return said if said else (None, 1.0)


def _job_waste(finding: Finding, jobs: JobIndex, rule: RuleInfo) -> float:
    """What the finding's job left idle, in the unit of the rule's resource."""
    job = jobs.by_key.get(finding.metrics.get("job_key")) or jobs.by_id.get(
        (finding.cluster, finding.job_id)) or {}
    if rule.resource == "gpu":
        return waste.idle_gpu_hours(job) or 0.0
    return waste.idle_core_hours(job) or 0.0


def costliest_advice(rule: RuleInfo, findings: Sequence[Finding], jobs: JobIndex
                     ) -> dict[str, Any] | None:
    """The analysis engine's ``metrics["advice"]`` of the finding whose job wasted most: the
    sentence and request the letter shows for the rule (None when no finding has one)."""
    best: tuple[float, dict[str, Any]] | None = None
    for finding in findings:
        said = finding.metrics.get("advice")
        if not isinstance(said, dict) or not said.get("sentence"):
            continue
        cost = _job_waste(finding, jobs, rule)
        if best is None or cost > best[0]:
            best = (cost, said)
    return best[1] if best else None


def fallback_rule(rule_id: str, severity: str) -> RuleInfo:
    """For a finding whose rule the rule set does not describe (renamed, or from a plug-in)."""
    return RuleInfo(
        id=rule_id, title=rule_id.replace("_", " ").capitalize(), section="other",
        severity=severity,  # type: ignore[arg-type]
        cause="", impact="", solution="", solution_type="other",
    )


def pick_advice(
    report: UserReport, rules: Mapping[str, RuleInfo], limit: int | None = 3
) -> list[Advice]:
    """The ``limit`` most important problems: most severe, then most jobs, then most waste.

    Waste is compared as the share of the reservation left unused, which is unit-free: a
    memory rule and a core rule of the same severity can be ranked against each other. One
    change per resource comes first (three rules that all say "fewer cores" are one change);
    the others fill the remaining places.
    """
    by_rule: dict[str, list[Finding]] = defaultdict(list)
    for finding in report.findings:
        by_rule[finding.rule].append(finding)
    advice = []
    index = JobIndex(report.jobs)
    for rule_id, found in by_rule.items():
        rule = rules.get(rule_id) or fallback_rule(rule_id, found[0].severity)
        jobs = {(f.cluster, f.job_id) for f in found if f.job_id is not None}
        said, share = evidence(rule, found, index)
        engine = costliest_advice(rule, found, index) or {}
        request = engine.get("request")
        advice.append(Advice(rule, len(jobs) or len(found), said, first_sentence(rule.solution),
                             problem_anchor(rule_id), share, engine.get("sentence"),
                             str(request) if request else None, engine.get("scope")))
    advice.sort(key=lambda a: (
        SEVERITY_ORDER.get(a.rule.severity, 9), -a.jobs, a.used_share, a.rule.id
    ))
    first, rest, seen = [], [], set()
    for item in advice:
        # A rule the rule set does not describe has no resource: it is a topic of its own.
        topic = item.rule.resource or f"rule:{item.rule.id}"
        (rest if topic in seen else first).append(item)
        seen.add(topic)
    return (first + rest)[:limit]


def headline(report: UserReport) -> list[str]:
    """A few sentences on the whole period, from the report's jobs and totals."""
    totals = report.totals
    count = totals.get("jobs")
    count = int(count) if isinstance(count, int | float) else len(report.jobs)
    flagged = len({(f.cluster, f.job_id) for f in report.findings if f.job_id is not None})
    if flagged:
        sentences = [f"You ran {plural(count, 'job')} in this period; checks found something "
                     f"to improve in {flagged:,} of them."]
    else:
        every = "Your job" if count == 1 else f"All {count:,} of your jobs"
        sentences = [f"{every} in this period used what {'it' if count == 1 else 'they'} "
                     "asked for."]
    for usage in (CORES, GPUS):
        said = measure(report.jobs, usage)
        if said:
            sentences.append(said[0])
    energy, co2 = totals.get("energy_kwh"), totals.get("co2_kg")
    if isinstance(energy, int | float) and energy > 0:
        line = f"They used about {number(float(energy))} kWh of electricity"
        if isinstance(co2, int | float) and co2 > 0:
            line += f", about {number(float(co2))} kg of CO₂"
        sentences.append(line + ".")
    return sentences
