"""The request that would have fitted: jobs with known usage, and the exact sbatch options.

Stores are seeded with tests/test_analysis.py's Cluster (accounting rows, sessions, samples as
the watcher writes them); every expected request is worked out by hand next to its assertion
from the [advice] defaults: cpu_percentile 0.9, cpu_margin 1.1, mem_margin 1.2, mem_step 1 GiB,
time_margin 1.25, time_step 15 min, min_time 5 min.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from tests.test_analysis import GIB, T0, WEEK, Cluster
from watcher.analysis.advice import RULE_FIELDS, cores_needed, sentence_fields
from watcher.analysis.engine import analyze_job, analyze_period, analyze_session, rule_statements
from watcher.analysis.rules import RuleError, load_rules
from watcher.config import load_config
from watcher.store import Store
from watcher.units import number, size

HOUR = 3600


@pytest.fixture
def store() -> Store:
    s = Store(":memory:")
    yield s
    s.close()


@pytest.fixture
def cluster(store: Store) -> Cluster:
    return Cluster(store)


def _config(**advice: str):
    return load_config(None, environ={f"TURINGWATCH_ADVICE_{k.upper()}": v
                                      for k, v in advice.items()})


def advice_of(store: Store, job_id: int, rule: str, config=None) -> dict:
    reports = analyze_period(store, config or _config(), WEEK)
    found = [f for r in reports for f in r.findings if f.job_id == job_id and f.rule == rule]
    assert found, f"{rule} not found on job {job_id}"
    return found[0].metrics["advice"]


def _bursty_job(cluster: Cluster, *, cores: int = 8, total_cpu: float = 1.5 * HOUR) -> int:
    """Accounting says 1.5 busy cores on average; ten sample intervals say 1.0 (five), 2.0
    (three) and 2.4 (two) cores busy. The first sample carries no interval (no delta)."""
    job = cluster.job(cores=cores, total_cpu=total_cpu)
    sid = cluster.session(job, cores=cores)
    cluster.steps(sid, [1.0] + [1.0] * 5 + [2.0] * 3 + [2.4] * 2, cpus=cores)
    return job


# -- cores -------------------------------------------------------------------------------------


def test_cores_from_the_samples_quantile(store, cluster):
    job = _bursty_job(cluster)
    advice = advice_of(store, job, "cpu_underuse")
    # p90 of the ten intervals: rank 9 × 0.9 = 8.1 of the sorted values, between 2.4 and 2.4.
    # The margin covers the cores beyond the first: 1 + 1.4 × 1.1 = 2.54, rounded up: 3.
    assert advice["request"] == "--cpus-per-task=3"
    assert advice["scope"] == "job"
    assert "p90 of cores busy or waiting 2.40 over 10 samples" in advice["basis"]
    # Accounting's mean: 1.5 of 8 cores; 8 - 1.5 = 6.5 core-hours reserved and idle.
    assert advice["sentence"] == (
        f"Kept {number(1.5)} of 8 cores busy on average; {number(6.5)} core-hours reserved"
        " and idle.")


def test_cpu_settings_change_the_cores(store, cluster):
    job = _bursty_job(cluster)
    # A margin of 1.5: 1 + 1.4 × 1.5 = 3.1 -> 4.
    assert advice_of(store, job, "cpu_underuse", _config(cpu_margin="1.5"))["request"] == (
        "--cpus-per-task=4")
    # The median: rank 9 × 0.5 = 4.5, halfway between 1.0 and 2.0 = 1.5; 1 + 0.5 × 1.1 = 1.55 -> 2.
    median = advice_of(store, job, "cpu_underuse", _config(cpu_percentile="0.5"))
    assert median["request"] == "--cpus-per-task=2"
    assert median["basis"].startswith("p50 of cores busy or waiting 1.50")


def test_cores_from_accounting_alone(store, cluster):
    # 3 busy of 16 on average, never sampled: 1 + 2 × 1.1 = 3.2 -> 4.
    job = cluster.job(cores=16, total_cpu=3 * HOUR)
    advice = advice_of(store, job, "cpu_underuse")
    assert advice["request"] == "--cpus-per-task=4"
    assert advice["basis"].startswith("CPU time / elapsed 3 (accounting, no samples)")


def test_a_serial_job_is_told_one_core_not_two(store, cluster):
    # 1.2 busy cores of 8 on average: serial_many_cores says "ask for one core", and so does
    # its request (the margin alone would make 1 + 0.2 × 1.1 = 1.22 -> 2).
    job = cluster.job(cores=8, total_cpu=1.2 * HOUR)
    advice = advice_of(store, job, "serial_many_cores")
    assert advice["request"] == "--cpus-per-task=1"
    assert "one thing at a time" in advice["basis"]
    # A step that ran one thing at a time, at 1.02 cores now and then: low_concurrency, 1 core.
    serial = cluster.job(cores=4, total_cpu=HOUR, name="serial")
    sid = cluster.session(serial)
    cluster.steps(sid, [1.0] * 8 + [1.02] * 3)
    assert advice_of(store, serial, "low_concurrency")["request"] == "--cpus-per-task=1"
    assert [cores_needed(x, 1.1) for x in (0.2, 1.0, 1.05, 2.0, 2.4)] == [1, 1, 2, 3, 3]


def test_underuse_never_asks_for_more_cores_than_the_job_had(store, cluster):
    # 4 cores, 1.5 busy on average, but p90 of 2.4: 3 cores would be fine; with a margin of 3
    # it would be 1 + 1.4 × 3 = 5.2 -> 6 > 4: no request rather than a bigger one.
    job = _bursty_job(cluster, cores=4)
    advice = advice_of(store, job, "cpu_underuse", _config(cpu_margin="3"))
    assert advice["request"] is None
    assert "not fewer than the 4 cores it had" in advice["basis"]


def test_tasks_are_said_honestly(store, cluster):
    # An srun step of 2 tasks on one node: 3 cores become 2 tasks × 2 cores.
    job = _bursty_job(cluster)
    store.execute("UPDATE job_steps SET ntasks = 2, step = '0' WHERE job_id = ? AND step = 'extern'",
                  [job])
    assert advice_of(store, job, "cpu_underuse")["request"] == "--ntasks=2 --cpus-per-task=2"
    # On two nodes the split per node is not known: no request.
    store.execute("UPDATE jobs SET nnodes = 2 WHERE job_id = ?", [job])
    advice = advice_of(store, job, "cpu_underuse")
    assert advice["request"] is None and "2 nodes" in advice["basis"]


# -- memory ------------------------------------------------------------------------------------


def test_memory_from_the_peak(store, cluster):
    # 2.4 GiB × 1.2 = 2.88 GiB, rounded up to whole GiB: 3G.
    job = cluster.job(mem=8 * GIB, max_rss=int(2.4 * GIB), total_cpu=4 * HOUR)
    advice = advice_of(store, job, "memory_underuse")
    assert advice["request"] == "--mem=3G"
    assert advice["sentence"] == (
        f"Used at most {size(int(2.4 * GIB))} of the {size(8 * GIB)} requested per node;"
        f" {size(8 * GIB - int(2.4 * GIB))} stayed reserved and unused.")
    # 2,457.6 MiB × 1.2 = 2,949.12 MiB, in steps of 100 MiB: 3,000 MiB.
    config = _config(mem_step_bytes=str(100 * 1024**2))
    assert advice_of(store, job, "memory_underuse", config)["request"] == "--mem=3000M"
    # 2.4 GiB × 1.5 = 3.6 GiB -> 4G.
    assert advice_of(store, job, "memory_underuse", _config(mem_margin="1.5"))["request"] == (
        "--mem=4G")


def test_a_family_that_hit_its_memory_limit_is_never_told_to_ask_for_less(store, cluster):
    # One job of the family was killed at its 4 GiB; another used 2 GiB of 16 GiB.
    killed = cluster.job(mem=4 * GIB, max_rss=int(3.9 * GIB), total_cpu=4 * HOUR,
                         state="OUT_OF_MEMORY")
    roomy = cluster.job(mem=16 * GIB, max_rss=2 * GIB, total_cpu=4 * HOUR)
    other = cluster.job(mem=16 * GIB, max_rss=2 * GIB, total_cpu=4 * HOUR, name="other")
    reports = analyze_period(store, _config(), WEEK)
    found = {(f.job_id, f.rule): f for r in reports for f in r.findings}
    assert (roomy, "memory_underuse") not in found
    assert (other, "memory_underuse") in found  # another family: still told
    advice = found[(killed, "memory_oversubscription")].metrics["advice"]
    # The killed job needed at least its 4 GiB: 4 × 1.2 = 4.8 -> 5G, for the family of 2.
    assert (advice["request"], advice["scope"]) == ("--mem=5G", "family")
    assert advice["basis"].startswith("biggest peak of 2 runs 4.0")
    history = next(s for s in reports[0].sections if s.id == "resources").history
    for row in history.rows:
        assert not {"memory_underuse", "memory_oversubscription"} <= set(row["problems"]), row
    assert any("memory_oversubscription" in row["problems"] for row in history.rows)


def test_oversubscription_asks_for_more_even_without_a_margin(store, cluster):
    job = cluster.job(mem=4 * GIB, max_rss=4 * GIB, total_cpu=4 * HOUR, state="OUT_OF_MEMORY")
    advice = advice_of(store, job, "memory_oversubscription", _config(mem_margin="1"))
    assert advice["request"] == "--mem=5G"


# -- time --------------------------------------------------------------------------------------


def _family_runs(cluster: Cluster, minutes: list[int], *, limit: int = 4 * HOUR,
                 state: str = "COMPLETED") -> list[int]:
    return [cluster.job(elapsed=m * 60, limit=limit, total_cpu=4 * m * 60, state=state,
                        start=T0 + timedelta(hours=i)) for i, m in enumerate(minutes)]


def test_time_from_the_longest_completed_run_of_the_family(store, cluster):
    first, second = _family_runs(cluster, [30, 32])
    # 32 min × 1.25 = 40 min, rounded up to 15 min: 45 min.
    advice = advice_of(store, first, "time_limit_underuse")
    assert (advice["request"], advice["scope"]) == ("--time=00:45:00", "family")
    assert advice_of(store, second, "time_limit_underuse")["request"] == "--time=00:45:00"
    assert advice["sentence"].startswith("Ran for 30\u00a0min of its 4\u00a0h 00\u00a0min")
    # A margin of 2: 64 min -> 75 min.
    assert advice_of(store, first, "time_limit_underuse", _config(time_margin="2"))[
        "request"] == "--time=01:15:00"


def test_failed_runs_do_not_shorten_the_time_and_a_timeout_stops_it(store, cluster):
    first, _ = _family_runs(cluster, [30, 32])
    _family_runs(cluster, [70], state="FAILED")          # not completed: not counted
    assert advice_of(store, first, "time_limit_underuse")["request"] == "--time=00:45:00"
    _family_runs(cluster, [50], limit=50 * 60, state="TIMEOUT")
    advice = advice_of(store, first, "time_limit_underuse")
    assert advice["request"] is None
    assert "hit its limit after 50\u00a0min" in advice["basis"]


def test_time_beyond_a_day_reads_as_slurm_writes_it(store, cluster):
    # 30 h × 1.25 = 37.5 h = 1 day 13:30.
    (job,) = _family_runs(cluster, [30 * 60], limit=3 * 24 * HOUR)
    assert advice_of(store, job, "time_limit_underuse")["request"] == "--time=1-13:30:00"


# -- GPUs --------------------------------------------------------------------------------------


def test_gpus_actually_used(store, cluster):
    job = cluster.job(gpus=4, total_cpu=4 * HOUR)
    sid = cluster.session(job)
    cluster.steps(sid, [4.0] * 6)
    idle = [0.0] * 6
    cluster.gpus(sid, {0: [60.0] * 6, 1: idle, 2: idle, 3: idle},
                 processes={0: [True] * 6, 1: [False] * 6, 2: [False] * 6, 3: [False] * 6})
    reports = analyze_period(store, _config(), WEEK)
    unused = [f for r in reports for f in r.findings if f.rule == "gpu_no_process"]
    assert len(unused) == 3
    for finding in unused:
        assert finding.metrics["advice"]["request"] == "--gpus=1"
        assert "at most 1 of 4 GPUs" in finding.metrics["advice"]["basis"]


# -- where the advice goes ---------------------------------------------------------------------


def test_every_finding_has_advice_and_it_is_stored(store, cluster):
    job = _bursty_job(cluster)
    # Busy on its 2 cores for 2 hours: low_compute_power, a rule without a request.
    steady = cluster.job(name="steady", cores=2, elapsed=2 * HOUR, limit=3 * HOUR,
                         total_cpu=4 * HOUR)
    reports = analyze_period(store, _config(), WEEK)
    findings = [f for r in reports for f in r.findings]
    assert findings
    for f in findings:
        assert set(f.metrics["advice"]) == {"sentence", "request", "scope", "basis"}, f.rule
        assert "{" not in f.metrics["advice"]["sentence"]
    stored = {
        (row[0], row[1]): json.loads(row[2])["advice"]
        for row in store.query("SELECT job_id, rule, metrics FROM analysis_findings")
    }
    assert stored[(job, "cpu_underuse")]["request"] == "--cpus-per-task=3"
    # A null request stays a null, not a missing key.
    assert "request" in stored[(steady, "low_compute_power")]
    assert stored[(steady, "low_compute_power")]["request"] is None


def test_job_and_session_analyses_carry_the_same_advice(store, cluster):
    job = _bursty_job(cluster)
    (sid,) = [r[0] for r in store.query("SELECT session_id FROM sessions")]
    by_job = {f.rule: f.metrics["advice"] for f in analyze_job(store, _config(), job)}
    by_session = {f.rule: f.metrics["advice"] for f in analyze_session(store, _config(), [sid])}
    assert by_job["cpu_underuse"]["request"] == "--cpus-per-task=3"
    assert by_session["cpu_underuse"] == by_job["cpu_underuse"]


# -- the rule file -----------------------------------------------------------------------------


def test_sentence_placeholders_are_keys_the_rule_sql_writes():
    statements = rule_statements()
    for rule_id, fields in RULE_FIELDS.items():
        keys = set(re.findall(r"'([a-z_]+)',", statements[rule_id]))
        assert set(fields) <= keys, (rule_id, set(fields) - keys)
    for rule in load_rules(_config()).rules:
        assert rule.sentence and rule.id in RULE_FIELDS
        names = set(re.findall(r"{([a-z_]+)}", rule.sentence))
        assert names <= sentence_fields(rule.id), rule.id


def test_a_site_may_reword_a_sentence(tmp_path):
    site = tmp_path / "rules.toml"
    site.write_text('[rules.cpu_underuse]\nsentence = "Only {mean_busy_cores} cores busy."\n')
    rules = load_rules(load_config(None, environ={
        "TURINGWATCH_ANALYSIS_RULES_FILE": str(site)}))
    assert rules.get("cpu_underuse").sentence == "Only {mean_busy_cores} cores busy."
    assert rules.get("cpu_underuse").request == "cpus"
    assert rules.get("short_jobs").request is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[rules.cpu_underuse]\nsentence = "Kept {busy} cores."\n',
         "unknown placeholder {busy}"),
        ('[rules.cpu_underuse]\nsentence = "Kept {cores:.1f} cores."\n', "may not carry a format"),
        ('[rules.cpu_underuse]\nsentence = "Kept {cores cores."\n', "not a valid template"),
        ('[rules.cpu_underuse]\nrequest = "mem"\n', "request is 'cpus'"),
        ('[rules.cpu_underuse]\nsentence = ""\n', "sentence must be a non-empty string"),
    ],
)
def test_bad_sentences_and_requests_are_refused(tmp_path, text, message):
    site = tmp_path / "rules.toml"
    site.write_text(text)
    config = load_config(None, environ={"TURINGWATCH_ANALYSIS_RULES_FILE": str(site)})
    with pytest.raises(RuleError, match=re.escape(message)):
        load_rules(config)


def test_an_unknown_request_kind_is_refused(monkeypatch):
    from watcher.analysis.rules import packaged_rules_text

    text = packaged_rules_text().replace('request = "cpus"', 'request = "nodes"', 1)
    monkeypatch.setattr("watcher.analysis.rules.packaged_rules_text", lambda: text)
    with pytest.raises(RuleError, match="rule cpu_underuse: request must be one of cpus, mem"):
        load_rules(_config())


def test_a_sentence_says_one_core_not_one_cores():
    from watcher.analysis.advice import sentence

    text = sentence("Kept {a} of {cores} cores busy; {n} GPUs idle, 21 cores.", {"a": 1, "cores": 1, "n": 1}, {})
    assert text == "Kept 1 of 1 core busy; 1 GPU idle, 21 cores."
