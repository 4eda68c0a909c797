"""The analysis engine's findings for one job, as the card and ``summary.json`` show them.

Each finding reads as a sentence with the two or three numbers that matter and, where the
analysis knows it, the request that would have fitted (``--mem=3G``): the engine's advice
(``metrics["advice"]``, see docs/analysis.md). Findings from before the advice (older bundles,
rules without it) get a sentence built from the rule's title and its two leading metrics,
formatted as the card's headline numbers are (watcher.units).
"""

from __future__ import annotations

from typing import Any

from watcher.config import Config
from watcher.store import Store
from watcher.units import by_name

_UNIT_SUFFIXES = ("_s", "_bytes", "_pct", "_w", "_wh", "_j", "_mhz", "_kwh")
# Metrics that identify rather than measure: never one of a sentence's numbers.
_NOT_NUMBERS = {"job_key", "advice", "gpu_index", "samples", "counted_samples", "score"}
# How a metric reads in a sentence, where its name alone would not.
_WORDS = {"cpu_efficiency": "CPU efficiency", "cpu_s": "CPU time", "requested_bytes": "requested",
          "mean_busy_cores": "mean cores busy", "avg_util_pct": "mean utilization",
          "mean_util_pct": "mean utilization", "idle_fraction": "idle"}


def _label(metric: str) -> str:
    """'elapsed_s' -> 'elapsed': the formatted value already says its unit."""
    if metric in _WORDS:
        return _WORDS[metric]
    for suffix in _UNIT_SUFFIXES:
        if metric.endswith(suffix):
            metric = metric[: -len(suffix)]
            break
    return metric.replace("_", " ")


def advice_of(metrics: dict[str, Any]) -> tuple[str | None, str | None]:
    """(sentence, request) of a finding's advice, each None when it has none."""
    advice = metrics.get("advice")
    if not isinstance(advice, dict):
        return None, None
    return advice.get("sentence") or None, advice.get("request") or None


def fallback_sentence(title: str, metrics: dict[str, Any]) -> str:
    """'CPU underuse: CPU efficiency 12%, CPU time 38.2 s.' from the first two numbers the rule
    reports (its SQL lists the telling ones first)."""
    numbers = [
        f"{_label(key)} {by_name(key, value)}"
        for key, value in metrics.items()
        if key not in _NOT_NUMBERS and isinstance(value, int | float) and not isinstance(value, bool)
    ][:2]
    return f"{title}: {', '.join(numbers)}." if numbers else f"{title}."


def describe(row: dict[str, Any], title: str, solution: str | None) -> dict[str, Any]:
    """The finding's dict with ``title``, ``solution``, ``sentence`` and ``request`` added."""
    metrics = row.get("metrics") or {}
    sentence, request = advice_of(metrics)
    row["title"] = title
    row["solution"] = solution
    row["sentence"] = sentence or fallback_sentence(title, metrics)
    row["request"] = request
    row["advised"] = sentence is not None
    return row


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
        rule = by_id.get(finding.rule)
        out.append(describe(
            finding.as_dict(),
            rule.title if rule else finding.rule,
            " ".join(rule.solution.split()) if rule else None,
        ))
    waiting = sorted({r.min_runtime_s for r in rules if r.min_runtime_s > elapsed_s})
    note = (
        f"{sum(r.min_runtime_s > elapsed_s for r in rules)} of {len(rules)} rules judge only jobs "
        f"of at least {waiting[0]:.0f} s"
        if waiting
        else None
    )
    return out, note
