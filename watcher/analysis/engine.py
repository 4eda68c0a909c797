"""The analysis engine: the rules of rules.toml run as DuckDB SQL over samples and accounting.

The pipeline, each step a ``.sql`` file next to this module, all in temp tables (``tw_*``) of
a private cursor from the store (so that two analyses, or an analysis and an ingest, never see
each other's):

1. ``scope.sql``: the jobs to judge and what is known about them (accounting, else sessions);
2. ``usage.sql``: what they used, from sample deltas over real timestamps, and per-job metrics;
3. ``advice.sql`` ``families``: what each job family needed (memory_underuse reads it);
4. ``rules.sql``: one statement per enabled rule, adding candidate findings;
5. ``findings.sql``: enabled flags, minimum runtimes, exemptions and suppression, for all rules;
6. ``advice.sql``, the rest: what the judged jobs needed, for the request each finding ends
   with (``advice.py`` rounds it into an sbatch option and writes the finding's sentence);
7. ``report.sql``: the rows of the report tables (period analyses only).

Python feeds parameters in, words the advice and hands the results out.
"""

from __future__ import annotations

import gc
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from watcher.analysis.advice import Adviser
from watcher.analysis.model import (
    SEVERITY_ORDER,
    Finding,
    Period,
    SectionReport,
    UserReport,
)
from watcher.analysis.rules import RuleSet, load_rules
from watcher.analysis.sections import SECTIONS, make_table
from watcher.config import AdviceSettings, Config
from watcher.errors import TuringwatchError
from watcher.store import Store, named_statements

Progress = Callable[[str], None]
_PACKAGE = "watcher.analysis"


class AnalysisError(TuringwatchError):
    """The analysis could not run (for example a rule whose SQL is missing)."""


def analyze_period(
    store: Store,
    config: Config,
    period: Period,
    user: str | None = None,
    progress: Progress | None = None,
) -> list[UserReport]:
    """Judge every job of ``period`` (of ``user`` only, when given), store the findings of the
    period (replacing an earlier run's) and return one report per user, sorted by user."""
    rules = load_rules(config)
    say = progress or (lambda _msg: None)
    with store.cursor() as conn:  # its own TEMP tables, dropped when it closes
        _prepare(conn, config, rules, session_mode=False, period=period, user=user)
        _run_pipeline(conn, rules, say)
        say("building reports")
        with _no_cyclic_gc():
            findings = _findings(conn, rules, config.advice, period.id, in_period_only=True)
            reports = _reports(conn, rules, period, findings)
        say("storing results")
        _persist(store, conn, rules, period, user, reports, findings)
        return reports


def analyze_session(store: Store, config: Config, session_ids: list[str]) -> list[Finding]:
    """The findings for the job(s) the given watcher sessions sampled: the report card's view.

    Works from the samples and ``sessions`` rows alone when the store has no accounting; uses
    accounting rows for the job when they are there. Exemptions do not apply. Nothing is stored.
    """
    rules = load_rules(config)
    with store.cursor() as conn:
        _prepare(conn, config, rules, session_mode=True, session_ids=session_ids)
        _run_pipeline(conn, rules, lambda _msg: None)
        return _findings(conn, rules, config.advice, None, in_period_only=False)


def analyze_job(
    store: Store, config: Config, job_id: int, cluster: str | None = None
) -> list[Finding]:
    """The findings for one Slurm job, from its samples and its accounting, whichever the store
    has (a job shorter than one sample has only accounting). Nothing is stored."""
    sessions = [
        row[0]
        for row in store.query(
            "SELECT session_id FROM sessions"
            " WHERE job_id = ? AND (?::VARCHAR IS NULL OR cluster = ?)",
            [job_id, cluster, cluster],
        )
    ]
    job_keys = [
        row[0]
        for row in store.query(
            "SELECT cluster || ':' || job_id FROM jobs"
            " WHERE job_id = ? AND (?::VARCHAR IS NULL OR cluster = ?)",
            [job_id, cluster, cluster],
        )
    ]
    rules = load_rules(config)
    with store.cursor() as conn:
        _prepare(conn, config, rules, session_mode=True, session_ids=sessions, job_keys=job_keys)
        _run_pipeline(conn, rules, lambda _msg: None)
        return _findings(conn, rules, config.advice, None, in_period_only=False)


# -- pipeline --------------------------------------------------------------------------------


def _prepare(
    conn: Any,
    config: Config,
    rules: RuleSet,
    *,
    session_mode: bool,
    period: Period | None = None,
    user: str | None = None,
    session_ids: Iterable[str] = (),
    job_keys: Iterable[str] = (),
) -> None:
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE tw_params AS SELECT ?::BOOLEAN AS session_mode,"
        " ?::TIMESTAMPTZ AS p_start, ?::TIMESTAMPTZ AS p_end, ?::VARCHAR AS p_user,"
        " ?::DOUBLE AS cpu_watts_per_core, ?::DOUBLE AS grid_co2_g_per_kwh,"
        " ?::TIMESTAMPTZ AS analysed_at, ?::VARCHAR AS scrape_job_name, ?::VARCHAR AS scrape_account,"
        " ?::DOUBLE AS cpu_percentile, ?::DOUBLE AS cpu_margin, ?::DOUBLE AS mem_margin,"
        " ?::DOUBLE AS mem_step_bytes, ?::DOUBLE AS time_margin, ?::DOUBLE AS time_step_s,"
        " ?::DOUBLE AS min_time_s",
        [
            session_mode,
            period.start if period else None,
            period.end if period else None,
            user,
            config.energy.cpu_watts_per_core,
            config.energy.grid_co2_g_per_kwh,
            datetime.now(UTC),
            # The distributor's own scrape jobs are no one's work: scope.sql leaves them out.
            config.distributor.job_name or None,
            config.distributor.account or None,
            config.advice.cpu_percentile,
            config.advice.cpu_margin,
            config.advice.mem_margin,
            config.advice.mem_step_bytes,
            config.advice.time_margin,
            config.advice.time_step_s,
            config.advice.min_time_s,
        ],
    )
    # usage.sql's quantile needs its fraction as a constant: a variable of this cursor is one.
    conn.execute("SET VARIABLE tw_cpu_percentile = ?", [config.advice.cpu_percentile])
    conn.execute("CREATE OR REPLACE TEMP TABLE tw_scope_sessions (session_id VARCHAR)")
    ids = [[s] for s in session_ids]
    if ids:
        conn.executemany("INSERT INTO tw_scope_sessions VALUES (?)", ids)
    conn.execute("CREATE OR REPLACE TEMP TABLE tw_scope_jobs (job_key VARCHAR)")
    keys = [[k] for k in job_keys]
    if keys:
        conn.executemany("INSERT INTO tw_scope_jobs VALUES (?)", keys)

    # Thresholds as one row, a column per <rule>__<key>: rule SQL reads them by name.
    names, values = ["_one"], [1]
    for rule in rules.rules:
        for key, value in rule.thresholds.items():
            names.append(f"{rule.id}__{key}")
            values.append(value)
    columns = ", ".join(f"? AS {name}" for name in names)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE tw_th AS SELECT {columns}", values)

    conn.execute(
        "CREATE OR REPLACE TEMP TABLE tw_rules (rule VARCHAR, severity VARCHAR,"
        " enabled BOOLEAN, min_runtime_s DOUBLE, request VARCHAR)"
    )
    conn.executemany(
        "INSERT INTO tw_rules VALUES (?, ?, ?, ?, ?)",
        [[r.id, r.severity, r.enabled, r.min_runtime_s, r.request] for r in rules.rules],
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE tw_exempt (rule VARCHAR, kind VARCHAR, value VARCHAR)"
    )
    exempt = [[None, kind, v] for kind, vs in rules.exempt.items() for v in vs]
    exempt += [[r.id, kind, v] for r in rules.rules for kind, vs in r.exempt.items() for v in vs]
    # Exemptions decide whom the site writes to about what; a report card answers the job's
    # owner about their own job (root's included), so it applies none.
    if exempt and not session_mode:
        conn.executemany("INSERT INTO tw_exempt VALUES (?, ?, ?)", exempt)
    conn.execute("CREATE OR REPLACE TEMP TABLE tw_suppress (rule VARCHAR, by_rule VARCHAR)")
    suppress = [[r.id, other] for r in rules.rules for other in r.suppressed_by]
    if suppress:
        conn.executemany("INSERT INTO tw_suppress VALUES (?, ?)", suppress)
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE tw_candidates (rule VARCHAR, job_key VARCHAR,"
        " step VARCHAR, node VARCHAR, gpu VARCHAR, metrics JSON)"
    )


def rule_statements() -> dict[str, str]:
    """The SQL of every rule, by rule id."""
    return named_statements(_PACKAGE, "rules.sql")


def _run_pipeline(conn: Any, rules: RuleSet, say: Progress) -> None:
    for file, label in (("scope.sql", "selecting jobs"), ("usage.sql", "measuring usage")):
        for name, sql in named_statements(_PACKAGE, file).items():
            say(f"{label}: {name}")
            conn.execute(sql)
    advice = named_statements(_PACKAGE, "advice.sql")
    conn.execute(advice.pop("families"))
    statements = rule_statements()
    say("applying rules")
    for rule in rules.enabled:
        if rule.id not in statements:
            raise AnalysisError(f"rule {rule.id} has no SQL in rules.sql")
        conn.execute(statements[rule.id])
    conn.execute(named_statements(_PACKAGE, "findings.sql")["findings"])
    for name, sql in advice.items():
        say(f"advice: {name}")
        conn.execute(sql)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Building millions of small dicts creates no cycles, but their allocations keep triggering
    full collections whose cost grows with the heap: pause the cycle collector meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _rows(conn: Any, sql: str) -> list[dict[str, Any]]:
    cursor = conn.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _findings(
    conn: Any,
    rules: RuleSet,
    settings: AdviceSettings,
    period_id: str | None,
    *,
    in_period_only: bool,
) -> list[Finding]:
    """The findings, each with its ``metrics["advice"]``. The metrics with the advice are also
    written to tw_finding_advice (by finding id), so that _persist stores them: as JSON text
    from here, because a JSON merge in SQL would drop the advice's null request."""
    where = "WHERE in_period" if in_period_only else ""
    order = " ".join(f"WHEN '{s}' THEN {n}" for s, n in SEVERITY_ORDER.items())
    rows = conn.execute(
        "SELECT rule, severity, user_name, job_id, step, cluster, node, gpu, job_name, account,"
        f" metrics, job_key, fid FROM tw_findings {where}"
        f" ORDER BY user_name, CASE severity {order} END, job_key, rule, step NULLS FIRST,"
        " node, gpu"
    ).fetchall()
    facts = _advice_facts(conn)
    rule_of = {r.id: r for r in rules.rules}
    adviser = Adviser(settings)
    findings, stored = [], []
    for r in rows:
        metrics = json.loads(r[10])
        rule = rule_of.get(r[0])
        if rule is not None:
            advice = adviser.advise(rule.id, rule.sentence, rule.request, metrics,
                                    facts.get(r[11]), r[11])
            metrics["advice"] = advice
            stored.append(f"[{r[12]},{json.dumps(metrics)}]")
        metrics["job_key"] = r[11]
        findings.append(Finding(
            rule=r[0], severity=r[1], user=r[2], job_id=r[3], step=r[4], cluster=r[5],
            node=r[6], gpu=r[7], job_name=r[8], account=r[9], period=period_id,
            metrics=metrics,
        ))
    # One JSON text for all of them: a Python list bound as a parameter converts element by
    # element (slowly), a string in one go.
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE tw_finding_advice AS"
        " SELECT (e->>0)::BIGINT AS fid, e->1 AS metrics FROM (SELECT unnest(?::JSON::JSON[]) AS e)",
        ["[" + ",".join(stored) + "]"],
    )
    return findings


def _advice_facts(conn: Any) -> dict[str, dict[str, Any]]:
    """tw_advice by job key: what advice.advise rounds into a request."""
    cursor = conn.execute("SELECT * FROM tw_advice")
    names = [d[0] for d in cursor.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


# -- reports ---------------------------------------------------------------------------------


def _reports(
    conn: Any, rules: RuleSet, period: Period, findings: list[Finding]
) -> list[UserReport]:
    sql = named_statements(_PACKAGE, "report.sql")
    by_user: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for part in ("jobs", "steps", "gpus", "history"):
        for row in _rows(conn, sql[part]):
            by_user[row["user_name"]][part].append(row)
    totals = {row["user_name"]: row for row in _rows(conn, sql["totals"])}
    findings_by_user: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        findings_by_user[f.user].append(f)
    section_of = {r.id: r.section for r in rules.rules}

    reports = []
    for user in sorted(u for u in by_user if u is not None):
        parts = by_user[user]
        user_findings = findings_by_user.get(user, [])
        problems = _problem_index(user_findings, section_of)
        sections = [_section(spec.id, parts, problems, section_of) for spec in SECTIONS]
        user_totals = {k: v for k, v in totals.get(user, {}).items() if k != "user_name"}
        user_totals["findings"] = {
            s: sum(1 for f in user_findings if f.severity == s) for s in SEVERITY_ORDER
        }
        jobs = [{k: v for k, v in row.items() if k != "user_name"} for row in parts["jobs"]]
        reports.append(UserReport(user, period, user_findings, sections, jobs, user_totals))
    return reports


def _problem_index(
    findings: list[Finding], section_of: dict[str, str]
) -> dict[tuple[str, str, Any], list[str]]:
    """(section, job_key, where) -> rule ids; where is None (job), (step, node) or a GPU."""
    index: dict[tuple[str, str, Any], list[str]] = defaultdict(list)
    for f in findings:
        key = f.metrics["job_key"]
        section = section_of[f.rule]
        if f.gpu is not None:
            index[(section, key, ("gpu", f.gpu))].append(f.rule)
        elif f.step is not None:
            index[(section, key, (f.step, f.node))].append(f.rule)
        else:
            index[(section, key, None)].append(f.rule)
    return index


def _section(
    section_id: str,
    parts: dict[str, list[dict[str, Any]]],
    problems: dict[tuple[str, str, Any], list[str]],
    section_of: dict[str, str],
) -> SectionReport:
    spec = next(s for s in SECTIONS if s.id == section_id)

    def tagged(row: dict[str, Any], where: Any) -> dict[str, Any]:
        rules = problems.get((section_id, row["job_key"], where), [])
        return {**row, "job_id": row["job_id_display"], "problems": sorted(set(rules))}

    rows = [tagged(row, where) for row, where in _latest_rows(section_id, parts)]
    history = [
        {**fam, "problems": [r for r in fam["rules"] or [] if section_of.get(r) == section_id]}
        for fam in parts["history"]
        if (section_id != "gpu" or fam["gpu_hours"])
        and (section_id != "system" or fam["sys_samples"])
    ]
    return SectionReport(
        id=spec.id,
        title=spec.title,
        measures=spec.measures,
        latest_concerning=make_table(spec.latest, [r for r in rows if r["problems"]]),
        all_latest=make_table(spec.latest, rows),
        history=make_table(spec.history, history),
    )


def _latest_rows(
    section_id: str, parts: dict[str, list[dict[str, Any]]]
) -> list[tuple[dict[str, Any], Any]]:
    """The section's rows of the period, each with where its findings attach (_problem_index)."""
    if section_id == "gpu":
        return [(g, ("gpu", g["gpu_uuid"])) for g in parts["gpus"]]
    if section_id == "system":
        return [(s, (s["step"], s["node"])) for s in parts["steps"] if s["sys_samples"]]
    # resources: each job, then its steps
    steps_by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for step in parts["steps"]:
        steps_by_job[step["job_key"]].append(step)
    rows: list[tuple[dict[str, Any], Any]] = []
    for job in parts["jobs"]:
        rows.append(({**job, "step": None, "node": job["peak_node"], "cores": job["ncpus"]}, None))
        for step in steps_by_job.get(job["job_key"], []):
            row = {**step, "cores": step["cpus_available"], "memory_fraction": None}
            rows.append((row, (step["step"], step["node"])))
    return rows


# -- storing ---------------------------------------------------------------------------------


def _persist(
    store: Store,
    cursor: Any,
    rules: RuleSet,
    period: Period,
    user: str | None,
    reports: list[UserReport],
    findings: list[Finding],
) -> None:
    scope = "*" if user is None else user
    with store.transaction(cursor) as conn:  # the cursor whose TEMP tables hold the results
        for table in ("analysis_findings", "analysis_jobs"):
            conn.execute(
                f"DELETE FROM {table}"
                " WHERE period_id = ? AND (?::VARCHAR IS NULL OR user_name = ?)",
                [period.id, user, user],
            )
        conn.execute(
            "INSERT INTO analysis_findings SELECT ?, f.rule, f.severity, f.user_name, f.job_key,"
            " f.cluster, f.job_id, f.step, f.node, f.gpu, f.job_name, f.account,"
            " coalesce(a.metrics, f.metrics)"
            " FROM tw_findings f LEFT JOIN tw_finding_advice a USING (fid) WHERE f.in_period",
            [period.id],
        )
        conn.execute(
            "INSERT INTO analysis_jobs SELECT ?, user_name, job_key, cluster, job_id, to_json(j)"
            " FROM tw_job_metrics j WHERE in_period",
            [period.id],
        )
        conn.execute(
            "INSERT OR REPLACE INTO analysis_runs (period_id, user_scope, period_start, period_end,"
            " rules_source, users, jobs, findings) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                period.id, scope, period.start, period.end, rules.source, len(reports),
                sum(len(r.jobs) for r in reports), len(findings),
            ],
        )
