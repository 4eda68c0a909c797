"""What the analysis engine hands to its readers: the report card, the letters, the bundle,
the web site and ``analyze --format json``.

Everything here is plain data (JSON-serialisable through :func:`to_json`), so a period bundle
written today can be read by the web site tomorrow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Severity = Literal["serious", "medium", "info"]
SEVERITY_ORDER: dict[str, int] = {"serious": 0, "medium": 1, "info": 2}


@dataclass(frozen=True)
class RuleInfo:
    """A rule as the reports explain it."""

    id: str                 # stable id, e.g. "cpu_underuse"
    title: str              # "CPU underuse"
    section: str            # analysis section it belongs to: "resources" | "gpu" | "system" | …
    severity: Severity
    cause: str
    impact: str
    solution: str
    solution_type: str      # "code_or_request" | "profiling" | "consultation" | "other"
    enabled: bool = True
    resource: str = ""      # what it is about: "cpu" | "gpu" | "memory" | "time" | …; "" unknown
    thresholds: dict[str, Any] = field(default_factory=dict)
    min_runtime_s: float = 0.0             # jobs that ran less are not judged by the rule
    suppressed_by: tuple[str, ...] = ()    # rules that, found on the same job, make it redundant
    # jobs never flagged: {"users": [...], "accounts": [...], "partitions": [...], "qos": [...],
    # "job_names": [...]}
    exempt: dict[str, list[str]] = field(default_factory=dict)
    # The finding in one sentence, {placeholders} for its numbers (analysis.advice formats them).
    sentence: str = ""
    # The kind of sbatch option its advice ends with: "cpus" | "mem" | "time" | "gpus"; None.
    request: str | None = None


@dataclass(frozen=True)
class Finding:
    """One problem found in one job (step is None) or one step."""

    rule: str
    severity: Severity
    user: str | None
    job_id: int | None
    step: str | None
    cluster: str | None = None
    node: str | None = None
    gpu: str | None = None       # GPU uuid or index when the finding is about one GPU
    job_name: str | None = None
    account: str | None = None
    period: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)   # the numbers behind the finding

    def as_dict(self) -> dict[str, Any]:
        """The documented JSON form: rule, severity, user, job_id, step, … and the metrics."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "metrics"}
        out["metrics"] = dict(self.metrics)
        return out


@dataclass(frozen=True)
class Period:
    id: str                 # "2026-W47", "2026-11-22", "2026-11"
    start: datetime         # inclusive
    end: datetime           # exclusive


@dataclass
class Table:
    """A table for a letter or a web page: column ids, their headings and help, and rows."""

    columns: list[str]
    headings: dict[str, str]
    help: dict[str, str]
    rows: list[dict[str, Any]]


@dataclass
class SectionReport:
    """One analysis section of one user's report."""

    id: str                                  # "resources" | "gpu" | "system" | …
    title: str
    measures: str                            # what the section measures, for the letter
    latest_concerning: Table
    all_latest: Table
    history: Table | None                    # across history, by job family; None if n/a


@dataclass
class UserReport:
    user: str
    period: Period
    findings: list[Finding]
    sections: list[SectionReport]
    jobs: list[dict[str, Any]]               # per job of the period: the numbers (see docs)
    totals: dict[str, Any]                   # core-hours used/allocated, GPU-hours, energy, …

    @property
    def analysis_id(self) -> str:
        return f"{self.period.id}:{self.user}"


def to_json(value: Any) -> Any:
    """Dataclasses, datetimes and containers to JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, Finding):
            return to_json(value.as_dict())
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value
