"""The rule file: which rules run, with which thresholds, for whom.

The packaged ``rules.toml`` holds every rule with its documented defaults. A site rule file
(``[analysis] rules_file``) has the same shape and is laid over it key by key; it may tune,
disable or exempt rules but not add new ones, because a rule is SQL in this package. For the
same reason it may not move a rule to another ``section``, ``resource`` or ``request``: they say
what the rule's SQL measures (the section's tables are where its problems are shown; the
resource is whose used-versus-reserved numbers back its advice in a letter; the request is the
kind of sbatch option its advice ends with). It may reword a rule's ``sentence``, whose
placeholders must be numbers the rule has (watcher.analysis.advice).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from watcher.analysis.advice import REQUEST_KINDS, sentence_problem
from watcher.analysis.model import SEVERITY_ORDER, RuleInfo
from watcher.analysis.sections import SECTIONS as _SECTION_SPECS
from watcher.config import Config, NotText, expand_path, read_text_file
from watcher.errors import TuringwatchError

EXEMPT_KINDS = ("users", "accounts", "partitions", "qos", "job_names")
SECTIONS = tuple(spec.id for spec in _SECTION_SPECS)
# What a rule is about. The letters' advice backs cpu, gpu, memory and time rules with the
# jobs' used-versus-reserved numbers of that resource, and names one change per resource first.
RESOURCES = ("cpu", "gpu", "memory", "time", "io", "workflow")
SOLUTION_TYPES = ("code_or_request", "profiling", "consultation", "other")
_TEXT_KEYS = ("title", "section", "resource", "severity", "solution_type", "cause", "impact",
              "solution", "request", "sentence")
# What the rule's SQL measures: not a site's to change.
_FIXED_KEYS = ("section", "resource", "request")
_RULE_KEYS = {
    *_TEXT_KEYS,
    "enabled",
    "min_runtime_s",
    "suppressed_by",
    "thresholds",
    *(f"exempt_{kind}" for kind in EXEMPT_KINDS),
}
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")


class RuleError(TuringwatchError, ValueError):
    """The rule file is malformed or names a rule or key that does not exist."""


@dataclass(frozen=True)
class RuleSet:
    """The rules in force, in file order, and the exemptions that apply to all of them."""

    rules: list[RuleInfo]
    exempt: dict[str, list[str]] = field(default_factory=dict)
    source: str = "packaged defaults"

    def get(self, rule_id: str) -> RuleInfo:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    @property
    def enabled(self) -> list[RuleInfo]:
        return [r for r in self.rules if r.enabled]


def packaged_rules_text() -> str:
    return resources.files("watcher.analysis").joinpath("rules.toml").read_text("utf-8")


def packaged_rules() -> RuleSet:
    """The shipped rules with their defaults, without any site file (previews, samples)."""
    return _build(_parse(packaged_rules_text(), "packaged rules.toml"), "packaged defaults")


def load_rules(config: Config) -> RuleSet:
    """The packaged rules, overlaid with the site's rule file when one is configured."""
    base = _parse(packaged_rules_text(), "packaged rules.toml")
    source = "packaged defaults"
    if config.analysis.rules_file:
        path = expand_path(config.analysis.rules_file)
        base = _overlay(base, _parse(_read(path), str(path)), str(path))
        source = str(path)
    return _build(base, source)


def _read(path: Path) -> str:
    try:
        return read_text_file(path)
    except FileNotFoundError:
        raise RuleError(f"rule file {path} does not exist") from None
    except OSError as exc:
        raise RuleError(f"rule file {path} cannot be read: {exc.strerror}") from None
    except NotText as exc:
        raise RuleError(f"rule file {path} {exc}") from None


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{where} is not valid TOML: {exc}") from None
    unknown = set(data) - {"rules", "exempt"}
    if unknown:
        raise RuleError(f"{where}: unknown table [{sorted(unknown)[0]}]")
    return data


def _overlay(base: dict[str, Any], site: dict[str, Any], where: str) -> dict[str, Any]:
    merged = {"exempt": dict(base.get("exempt", {})), "rules": {}}
    for kind, values in site.get("exempt", {}).items():
        if kind not in EXEMPT_KINDS:
            raise RuleError(
                f"{where}: unknown key exempt.{kind} (one of {', '.join(EXEMPT_KINDS)})"
            )
        merged["exempt"][kind] = values
    site_rules = site.get("rules", {})
    for rule_id in site_rules:
        if rule_id not in base["rules"]:
            raise RuleError(f"{where}: unknown rule {rule_id!r}; see `turingwatch rules`")
    for rule_id, rule in base["rules"].items():
        change = site_rules.get(rule_id, {})
        for key in _FIXED_KEYS:
            if key in change and change[key] != rule.get(key):
                raise RuleError(
                    f"{where}: rule {rule_id}: {key} is {rule.get(key)!r} in the rule's SQL and "
                    "cannot be changed by a site file"
                )
        out = {**rule, **{k: v for k, v in change.items() if k != "thresholds"}}
        thresholds = dict(rule.get("thresholds", {}))
        for key, value in change.get("thresholds", {}).items():
            if key not in thresholds:
                raise RuleError(f"{where}: rule {rule_id} has no threshold {key!r}")
            if type(value) is not type(thresholds[key]) and not (
                isinstance(value, int | float) and isinstance(thresholds[key], int | float)
            ):
                raise RuleError(
                    f"{where}: {rule_id}.thresholds.{key} must be like {thresholds[key]!r}"
                )
            thresholds[key] = value
        out["thresholds"] = thresholds
        merged["rules"][rule_id] = out
    return merged


def _string_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{where} must be a list of strings, got {value!r}")
    return list(value)


def _build(data: dict[str, Any], source: str) -> RuleSet:
    rules: list[RuleInfo] = []
    ids = set(data.get("rules", {}))
    for rule_id, raw in data.get("rules", {}).items():
        where = f"{source}: rule {rule_id}"
        if not _IDENT.match(rule_id):
            raise RuleError(f"{where}: ids are lower_snake_case")
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise RuleError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        missing = [k for k in _TEXT_KEYS if not isinstance(raw.get(k), str) or not raw[k].strip()]
        if missing:
            raise RuleError(f"{where}: {missing[0]} must be a non-empty string")
        if raw["severity"] not in SEVERITY_ORDER:
            raise RuleError(f"{where}: severity must be one of {', '.join(SEVERITY_ORDER)}")
        if raw["section"] not in SECTIONS:
            raise RuleError(f"{where}: section must be one of {', '.join(SECTIONS)}")
        if raw["resource"] not in RESOURCES:
            raise RuleError(f"{where}: resource must be one of {', '.join(RESOURCES)}")
        if raw["solution_type"] not in SOLUTION_TYPES:
            raise RuleError(f"{where}: solution_type must be one of {', '.join(SOLUTION_TYPES)}")
        if raw["request"] not in REQUEST_KINDS:
            raise RuleError(f"{where}: request must be one of {', '.join(REQUEST_KINDS)}")
        problem = sentence_problem(rule_id, raw["sentence"])
        if problem:
            raise RuleError(f"{where}: {problem}")
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise RuleError(f"{where}: enabled must be true or false")
        min_runtime = raw.get("min_runtime_s", 0)
        runtime_ok = isinstance(min_runtime, int | float) and not isinstance(min_runtime, bool)
        if not runtime_ok or min_runtime < 0:
            raise RuleError(f"{where}: min_runtime_s must be a number >= 0")
        suppressed_by = _string_list(f"{where}: suppressed_by", raw.get("suppressed_by", []))
        for other in suppressed_by:
            if other not in ids or other == rule_id:
                raise RuleError(f"{where}: suppressed_by names unknown rule {other!r}")
        thresholds = raw.get("thresholds", {})
        for key, value in thresholds.items():
            if not _IDENT.match(key) or isinstance(value, bool) or not isinstance(
                value, int | float | str
            ):
                raise RuleError(f"{where}: threshold {key} must be a number or a string")
            if isinstance(value, int | float) and value < 0:
                raise RuleError(f"{where}: threshold {key} must be >= 0")
        exempt = {
            kind: _string_list(f"{where}: exempt_{kind}", raw.get(f"exempt_{kind}", []))
            for kind in EXEMPT_KINDS
        }
        rules.append(
            RuleInfo(
                id=rule_id,
                title=raw["title"].strip(),
                section=raw["section"],
                severity=raw["severity"],
                cause=raw["cause"].strip(),
                impact=raw["impact"].strip(),
                solution=raw["solution"].strip(),
                solution_type=raw["solution_type"],
                sentence=" ".join(raw["sentence"].split()),
                request=None if raw["request"] == "none" else raw["request"],
                enabled=enabled,
                resource=raw["resource"],
                thresholds=dict(thresholds),
                min_runtime_s=float(min_runtime),
                suppressed_by=tuple(suppressed_by),
                exempt={k: v for k, v in exempt.items() if v},
            )
        )
    raw_exempt = data.get("exempt", {})
    exempt = {
        kind: _string_list(f"{source}: exempt.{kind}", raw_exempt.get(kind, []))
        for kind in EXEMPT_KINDS
    }
    return RuleSet(rules=rules, exempt=exempt, source=source)
