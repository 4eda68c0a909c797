"""What a job, a job family and a user left idle, and where a user stands among the period's users.

One definition for every letter (common to the card, the commands and the site):

* idle core-hours = (elapsed × allocated cores − CPU time) / 3600, never below 0;
* idle GPU-hours = elapsed × allocated GPUs × (1 − mean GPU utilization) / 3600.

A family row of the history table has no CPU time, only core-hours and the busy share, so its
idle core-hours are core-hours × (1 − CPU utilization): the same number, summed over the family.
The rank is job_defense_shield's: users ordered by idle core-hours, the one who left most idle
first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from watcher.analysis.model import UserReport

Row = Mapping[str, Any]


def _num(row: Row, key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def idle_core_hours(job: Row) -> float | None:
    """Of one job row of the report (``elapsed_s``, ``ncpus``, ``cpu_s``); None when unknown."""
    elapsed, cores, cpu = _num(job, "elapsed_s"), _num(job, "ncpus"), _num(job, "cpu_s")
    if elapsed is None or cores is None or cpu is None:
        return None
    return max(elapsed * cores - cpu, 0.0) / 3600


def idle_gpu_hours(job: Row) -> float | None:
    """Of one job row; 0 for a job without GPUs, None when its GPUs were not measured."""
    gpus, elapsed = _num(job, "gpus"), _num(job, "elapsed_s")
    if not gpus:
        return 0.0
    util = _num(job, "gpu_avg_util_pct")
    if elapsed is None or util is None:
        return None
    return elapsed * gpus * max(1 - util / 100, 0.0) / 3600


def family_idle_core_hours(family: Row) -> float | None:
    hours, used = _num(family, "core_hours"), _num(family, "cpu_efficiency")
    return None if hours is None or used is None else max(hours * (1 - used), 0.0)


def family_idle_gpu_hours(family: Row) -> float | None:
    hours, util = _num(family, "gpu_hours"), _num(family, "gpu_avg_util_pct")
    if not hours:
        return 0.0 if hours is not None else None
    return None if util is None else hours * max(1 - util / 100, 0.0)


@dataclass(frozen=True)
class Waste:
    """A user's idle core-hours and GPU-hours over the period."""

    core_hours: float
    gpu_hours: float

    def nodes(self, cores_per_node: int, period_hours: float) -> float:
        """As how many nodes of ``cores_per_node`` left idle for the whole period."""
        if cores_per_node <= 0 or period_hours <= 0:
            return 0.0
        return self.core_hours / (cores_per_node * period_hours)


def user_waste(jobs: Iterable[Row]) -> Waste:
    cores = gpus = 0.0
    for job in jobs:
        cores += idle_core_hours(job) or 0.0
        gpus += idle_gpu_hours(job) or 0.0
    return Waste(cores, gpus)


@dataclass(frozen=True)
class Standing:
    """Where one user stands: 1 is the user who left the most core-hours idle."""

    rank: int
    users: int
    idle_core_hours: float


def standings(reports: Iterable[UserReport]) -> dict[str, Standing]:
    """Every user's rank among the reports' users by idle core-hours (ties share a rank)."""
    idle = {r.user: user_waste(r.jobs).core_hours for r in reports}
    ordered = sorted(idle.values(), reverse=True)
    first_place: dict[float, int] = {}
    for place, value in enumerate(ordered, 1):
        first_place.setdefault(value, place)
    return {user: Standing(first_place[value], len(idle), value) for user, value in idle.items()}
