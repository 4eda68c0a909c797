"""The rule file, the periods, and the `rules` / `analyze` commands."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from watcher.analysis.engine import rule_statements
from watcher.analysis.periods import PeriodError, parse_period
from watcher.analysis.rules import (
    RESOURCES,
    SECTIONS,
    RuleError,
    load_rules,
    packaged_rules_text,
)
from watcher.cli import cli
from watcher.config import load_config


def _config(rules_file: Path | None = None, **env: str):
    environ = dict(env)
    if rules_file is not None:
        environ["TURINGWATCH_ANALYSIS_RULES_FILE"] = str(rules_file)
    return load_config(None, environ=environ)


# -- rules ---------------------------------------------------------------------------------------


def test_every_rule_has_sql_and_every_sql_has_a_rule():
    rules = load_rules(_config())
    assert {r.id for r in rules.rules} == set(rule_statements())


def test_packaged_rules_are_complete_and_documented():
    rules = load_rules(_config())
    old_tool = {"low_compute_power", "low_concurrency", "jupyter_on_compute",
                "memory_oversubscription", "memory_underuse", "gpu_underuse", "cpu_underuse",
                "time_limit_underuse", "gpu_never_used", "try_splitting",
                "investigate_gpu_usage", "high_system_time"}
    added = {"gpu_no_process", "serial_many_cores", "short_jobs", "cpu_idle", "cpu_starved"}
    assert {r.id for r in rules.rules} == old_tool | added
    for rule in rules.rules:
        assert rule.enabled and rule.cause and rule.impact and rule.solution, rule.id
    assert rules.exempt["users"] == ["root"]
    assert rules.get("cpu_underuse").thresholds == {"max_efficiency": 0.5}


def test_a_site_file_overlays_only_what_it_names(tmp_path):
    site = tmp_path / "rules.toml"
    site.write_text(
        '[exempt]\nusers = ["root", "svc"]\n'
        "[rules.cpu_underuse]\nseverity = \"medium\"\nmin_runtime_s = 600\n"
        'exempt_qos = ["debug"]\n'
        "[rules.cpu_underuse.thresholds]\nmax_efficiency = 0.3\n"
        "[rules.jupyter_on_compute]\nenabled = false\n"
    )
    rules = load_rules(_config(site))
    cpu = rules.get("cpu_underuse")
    assert (cpu.severity, cpu.min_runtime_s) == ("medium", 600)
    assert cpu.thresholds["max_efficiency"] == 0.3
    assert cpu.exempt == {"qos": ["debug"]}
    assert cpu.title == "CPU underuse"  # untouched keys keep the packaged value
    assert not rules.get("jupyter_on_compute").enabled
    assert rules.get("low_concurrency").thresholds["max_busy_cores"] == 1.1
    assert rules.exempt["users"] == ["root", "svc"]
    assert rules.source == str(site)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[rules.cpu_overuse]\nenabled = true\n", "unknown rule 'cpu_overuse'"),
        ("[rules.cpu_underuse.thresholds]\nmax_eff = 0.3\n", "no threshold 'max_eff'"),
        ("[rules.cpu_underuse.thresholds]\nmax_efficiency = \"half\"\n", "must be like 0.5"),
        ("[rules.cpu_underuse]\nseverity = \"urgent\"\n", "severity must be one of"),
        ("[rules.cpu_underuse]\nenabeld = false\n", "unknown key 'enabeld'"),
        ("[rules.cpu_underuse]\nsuppressed_by = [\"nope\"]\n", "unknown rule 'nope'"),
        ("[rules.cpu_underuse]\nsection = \"gpu\"\n", "rule cpu_underuse: section is 'resources'"),
        ("[rules.gpu_underuse]\nresource = \"cpu\"\n", "rule gpu_underuse: resource is 'gpu'"),
        ("[rules.cpu_underuse]\nexempt_users = \"bob\"\n", "must be a list of strings"),
        ("[exempt]\ngroups = []\n", "unknown key exempt.groups"),
        ("[rules\n", "not valid TOML"),
    ],
)
def test_rule_file_errors_name_the_problem(tmp_path, text, message):
    site = tmp_path / "rules.toml"
    site.write_text(text)
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_rules(_config(site))


def test_every_rule_declares_its_section_and_resource():
    rules = load_rules(_config()).rules
    assert {r.section for r in rules} == set(SECTIONS)
    assert {r.resource for r in rules} <= set(RESOURCES)
    by_id = {r.id: r.resource for r in rules}
    assert (by_id["serial_many_cores"], by_id["try_splitting"], by_id["memory_underuse"],
            by_id["time_limit_underuse"]) == ("cpu", "gpu", "memory", "time")


def test_a_site_file_may_repeat_a_rule_section_but_not_change_it(tmp_path):
    site = tmp_path / "rules.toml"
    site.write_text('[rules.cpu_underuse]\nsection = "resources"\nresource = "cpu"\n')
    assert load_rules(_config(site)).get("cpu_underuse").resource == "cpu"


@pytest.mark.parametrize(
    ("line", "instead", "message"),
    [('resource = "cpu"\n', 'resource = "network"\n', "resource must be one of cpu, gpu"),
     ('section = "resources"\n', 'section = "storage"\n', "section must be one of resources"),
     ('resource = "cpu"\n', "", "resource must be a non-empty string")],
)
def test_an_unknown_section_or_resource_names_the_rule(monkeypatch, line, instead, message):
    # The first rule of the packaged file is cpu_underuse.
    text = packaged_rules_text().replace(line, instead, 1)
    monkeypatch.setattr("watcher.analysis.rules.packaged_rules_text", lambda: text)
    with pytest.raises(RuleError, match=f"rule cpu_underuse: {message}"):
        load_rules(_config())


def test_a_missing_rule_file_is_a_clear_error(tmp_path):
    with pytest.raises(RuleError, match="does not exist"):
        load_rules(_config(tmp_path / "missing.toml"))


# -- periods -------------------------------------------------------------------------------------


def test_period_forms():
    week = parse_period("2026-W47")
    assert (week.id, week.start.isoformat(), week.end.isoformat()) == (
        "2026-W47", "2026-11-16T00:00:00+00:00", "2026-11-23T00:00:00+00:00")
    day = parse_period("2026-11-22", tz="Europe/Budapest")
    assert (day.id, day.start.isoformat(), day.end.isoformat()) == (
        "2026-11-22", "2026-11-22T00:00:00+01:00", "2026-11-23T00:00:00+01:00")
    month = parse_period("2026-12")
    assert (month.start.date(), month.end.date()) == (date(2026, 12, 1), date(2027, 1, 1))
    # ISO weeks cross years: week 1 of 2025 starts in 2024, and 2026 has a week 53.
    assert parse_period("2025-W01").start.date().isoformat() == "2024-12-30"
    assert parse_period("2026-W53").end.date().isoformat() == "2027-01-04"


def test_current_and_previous_are_calendar_aligned():
    now = datetime(2026, 11, 22, 15, 30, tzinfo=UTC)  # a Sunday
    assert parse_period("current", "week", now=now).id == "2026-W47"
    assert parse_period(None, "week", now=now).id == "2026-W46"  # the default: previous
    assert parse_period("previous", "day", now=now).id == "2026-11-21"
    assert parse_period("previous", "month", now=datetime(2026, 1, 5, tzinfo=UTC)).id == "2025-12"


def test_a_time_zone_moves_the_boundary():
    # 23:30 UTC on Sunday is already Monday in Budapest: a different current week.
    now = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    assert parse_period("current", "week", "UTC", now=now).id == "2026-W47"
    assert parse_period("current", "week", "Europe/Budapest", now=now).id == "2026-W48"


@pytest.mark.parametrize("spec", ["2026-W54", "2026-13", "2026-02-30", "last week", "W47"])
def test_bad_periods_are_refused(spec):
    with pytest.raises(PeriodError):
        parse_period(spec)


def test_bad_kind_or_zone_is_refused():
    with pytest.raises(PeriodError, match="kind"):
        parse_period("current", "year")
    with pytest.raises(PeriodError, match="time zone"):
        parse_period("current", "week", "Mars/Olympus")


# -- commands ------------------------------------------------------------------------------------


def test_rules_command_lists_the_rules_in_force(tmp_path):
    site = tmp_path / "rules.toml"
    site.write_text("[rules.short_jobs]\nenabled = false\n")
    env = {"TURINGWATCH_ANALYSIS_RULES_FILE": str(site)}
    text = CliRunner().invoke(cli, ["rules"], env=env)
    assert text.exit_code == 0, text.output
    assert "short_jobs  [info, resources]  Many short jobs  (disabled)" in text.output
    assert "max_efficiency = 0.5" in text.output
    data = json.loads(CliRunner().invoke(cli, ["rules", "--format", "json"], env=env).output)
    assert data["source"] == str(site) and len(data["rules"]) == 17


def test_analyze_command_prints_json_findings(tmp_path):
    store = tmp_path / "store.duckdb"
    from watcher.store import Store

    with Store(store) as s:
        s.execute(
            "INSERT INTO jobs (cluster, job_id, job_id_display, user_name, state, start_time,"
            " end_time, time_limit_s, elapsed_s, nnodes, ncpus, req_mem_bytes, total_cpu_s)"
            " VALUES ('c', 7, '7', 'alice', 'COMPLETED', '2026-11-17 10:00:00+00',"
            " '2026-11-17 11:00:00+00', 86400, 3600, 1, 4, 1073741824, 3600)"
        )
    env = {"TURINGWATCH_STORE_PATH": str(store)}
    result = CliRunner().invoke(
        cli, ["analyze", "--period", "2026-W47", "--all-users", "--format", "json"], env=env
    )
    assert result.exit_code == 0, result.output
    findings = json.loads(result.output)
    assert [(f["rule"], f["job_id"], f["step"], f["user"]) for f in findings] == [
        ("cpu_underuse", 7, None, "alice"), ("time_limit_underuse", 7, None, "alice")]
    assert findings[0]["metrics"]["cpu_efficiency"] == 0.25
    text = CliRunner().invoke(cli, ["analyze", "--period", "2026-W47", "--all-users"], env=env)
    # the text form ranks users by waste; the findings' numbers stay in --format json
    alice = next(line.split() for line in text.output.splitlines() if line.startswith("alice"))
    # 4 cores for 1 h, 1 core-hour busy: 3 idle; cpu_underuse serious, time_limit_underuse info
    assert alice == ["alice", "1", "3.0", "0.0", "1", "0", "1"], text.output


def test_analyze_refuses_a_bad_period():
    result = CliRunner().invoke(cli, ["analyze", "--period", "last-week"])
    assert result.exit_code == 2 and "YYYY-Www" in result.output
