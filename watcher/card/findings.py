"""The analysis engine's findings for one job, as the card and ``summary.json`` show them."""

from __future__ import annotations

from typing import Any

from watcher.config import Config
from watcher.store import Store
from watcher.units import by_name

_UNIT_SUFFIXES = ("_s", "_bytes", "_pct", "_w", "_wh", "_j", "_mhz", "_kwh")


def _label(metric: str) -> str:
    """'elapsed_s' -> 'elapsed': the formatted value already says its unit."""
    for suffix in _UNIT_SUFFIXES:
        if metric.endswith(suffix):
            metric = metric[: -len(suffix)]
            break
    return metric.replace("_", " ")


def job_findings(
    config: Config, store: Store, sessions: list[str], elapsed_s: float
) -> tuple[list[dict[str, Any]], str | None]:
    """The findings for the job the sessions sampled, and a note on rules too short to apply."""
    from watcher.analysis.engine import analyze_session
    from watcher.analysis.rules import load_rules

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
