"""Fair CPU verdicts: a starved job, a running job, one finding per cause, an idle job.

The run-queue wait the sampler reads (schedstat) is carried through records, spool and store
into the analysis, which then tells a job that waited for a CPU from one that asked for too
many cores. Stores are seeded the way the watcher and the accounting import write them (see
tests/test_analysis.py); the sampler reads a fake /proc with schedstat files.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from tests.test_analysis import T0, WEEK, Cluster
from watcher import spool
from watcher.analysis.engine import analyze_period, analyze_session
from watcher.analysis.rules import load_rules
from watcher.card.findings import job_findings
from watcher.card.summary import build_summary
from watcher.card.text import render_card
from watcher.config import load_config
from watcher.letters.digest import pick_advice
from watcher.records import SampleRecord
from watcher.sampling import procfs
from watcher.sampling.sampler import Sampler, StepProcesses
from watcher.store import Store
from watcher.store.spool_loader import load_spool

CPU_RULES = {"cpu_underuse", "low_concurrency", "serial_many_cores", "cpu_starved", "cpu_idle"}
TICK = 1 / procfs.CLOCK_TICKS


@pytest.fixture
def store() -> Store:
    s = Store(":memory:")
    yield s
    s.close()


@pytest.fixture
def cluster(store: Store) -> Cluster:
    return Cluster(store)


@pytest.fixture
def config():
    return load_config(None, environ={})


def sampled(
    cluster: Cluster,
    session_id: str,
    busy: list[float],
    waiting: list[float] | None,
    *,
    cpus: int,
    step: str = "batch",
    interval: float = 10.0,
) -> None:
    """One sample per entry: ``busy`` cores and ``waiting`` cores' worth of threads in the run
    queue over the interval before it; cumulative counters, as the sampler writes them."""
    cpu = wait = 0.0
    rows = []
    for seq, cores in enumerate(busy):
        cpu += cores * interval
        if waiting is not None:
            wait += waiting[seq] * interval
        ts = T0 + timedelta(seconds=interval * (seq + 1))
        rows.append([session_id, seq, ts, step, cpu, wait if waiting is not None else None, cpus])
    cluster.store.write(lambda cur: cur.executemany(
        "INSERT INTO step_samples (session_id, seq, ts, step, node, nprocs, nthreads, cpu_user_s,"
        " cpu_system_s, rss_bytes, largest_rss_bytes, read_bytes, write_bytes, rchar, wchar,"
        " minor_faults, major_faults, cpu_wait_s, cpus_available)"
        " VALUES (?, ?, ?, ?, 'n1', 2, 2, ?, 0, 1000, 1000, 0, 0, 0, 0, 0, 0, ?, ?)",
        rows,
    ))


def cpu_findings(store: Store, config, job_id: int) -> dict[str, dict]:
    return {f.rule: f.metrics for r in analyze_period(store, config, WEEK) for f in r.findings
            if f.job_id == job_id and f.rule in CPU_RULES}


# -- a starved job -------------------------------------------------------------------------------


def test_a_starved_job_is_told_it_waited_not_to_ask_for_fewer_cores(store, cluster, config):
    # Two busy processes in a 2-core job, on cores that other work shares: 0.9 cores busy and
    # 1.0 core's worth of threads waiting in the run queue. Accounting agrees on the CPU time.
    starved = cluster.job(cores=2, total_cpu=0.9 * 3600)
    sampled(cluster, cluster.session(starved, cores=2), [0.9] * 30, [1.0] * 30, cpus=2)
    found = cpu_findings(store, config, starved)
    assert set(found) == {"cpu_starved"}
    metrics = found["cpu_starved"]
    assert metrics["cores"] == 2
    assert metrics["busy_cores"] == pytest.approx(0.9, abs=0.01)
    assert metrics["waiting_cores"] == pytest.approx(1.0, abs=0.01)
    assert metrics["wait_share"] == pytest.approx(1.0 / 1.9, abs=0.01)


def test_waiting_that_does_not_explain_the_gap_changes_nothing(store, cluster, config):
    # A serial program that also waited a little: busy + waiting = 0.8 of 2 cores (< 0.8 × 2).
    serial = cluster.job(cores=2, total_cpu=0.5 * 3600)
    sampled(cluster, cluster.session(serial, cores=2), [0.5] * 30, [0.3] * 30, cpus=2)
    assert set(cpu_findings(store, config, serial)) == {"low_concurrency"}
    # Two processes squeezed onto one of four cores: concurrent (not serial), but wanting only
    # two of the four cores, so the gap is underuse, with the waiting shown beside it.
    half = cluster.job(cores=4, total_cpu=1.0 * 3600)
    sampled(cluster, cluster.session(half, cores=4), [1.0] * 30, [1.0] * 30, cpus=4)
    found = cpu_findings(store, config, half)
    assert set(found) == {"cpu_underuse"}
    assert found["cpu_underuse"]["mean_waiting_cores"] == pytest.approx(1.0, abs=0.01)


def test_the_report_card_of_a_starved_job_says_so(store, cluster, config):
    sid = cluster.session(None, cores=2, elapsed=300)
    sampled(cluster, sid, [1.0] * 30, [1.0] * 30, cpus=2, step="local")
    rules = {f.rule for f in analyze_session(store, config, [sid])}
    assert rules & CPU_RULES == {"cpu_starved"}


# -- running jobs ---------------------------------------------------------------------------------


def test_a_running_job_without_samples_gets_no_cpu_finding(store, cluster, config):
    # sacct's TotalCPU of a running job counts only the steps that have ended: 0, or a little.
    nothing_yet = cluster.job(cores=16, state="RUNNING", elapsed=1800, total_cpu=0.0)
    a_little = cluster.job(cores=16, state="RUNNING", elapsed=1800, total_cpu=1.1 * 1800)
    for job in (nothing_yet, a_little):
        assert cpu_findings(store, config, job) == {}, job
    [report] = analyze_period(store, config, WEEK)
    assert {j["job_id"]: j["cpu_efficiency"] for j in report.jobs} == {nothing_yet: None,
                                                                      a_little: None}


def test_a_running_job_is_judged_from_its_samples_over_the_time_they_cover(store, cluster, config):
    # All 4 cores busy for the 20 minutes sampled so far; sacct's Elapsed (1 h at import) and
    # its TotalCPU (0: no step has ended) would make it look 3× less busy than it is.
    busy = cluster.job(cores=4, state="RUNNING", elapsed=3600, total_cpu=0.0)
    sampled(cluster, cluster.session(busy, elapsed=None), [4.0] * 120, [0.0] * 120, cpus=4)
    serial = cluster.job(cores=4, state="RUNNING", elapsed=3600, total_cpu=0.0)
    sampled(cluster, cluster.session(serial, elapsed=None), [1.0] * 120, [0.0] * 120, cpus=4)
    assert cpu_findings(store, config, busy) == {}
    assert set(cpu_findings(store, config, serial)) == {"low_concurrency"}
    rows = {j["job_id"]: j for r in analyze_period(store, config, WEEK) for j in r.jobs}
    assert rows[busy]["cpu_source"] == "samples"
    assert rows[busy]["cpu_efficiency"] == pytest.approx(1.0, abs=0.01)


def test_a_running_session_is_judged_up_to_its_last_sample(store, cluster, config):
    # A report card while the job still runs (no end line yet), long after its start: the
    # samples cover 10 minutes of 4 busy cores, not the weeks since T0.
    sid = cluster.session(None, cores=4, elapsed=None)
    sampled(cluster, sid, [4.0] * 60, [0.0] * 60, cpus=4, step="local")
    assert {f.rule for f in analyze_session(store, config, [sid])} & CPU_RULES == set()


# -- one finding per cause ------------------------------------------------------------------------


def test_one_busy_core_of_eight_gets_one_cpu_finding(store, cluster, config):
    sampled_job = cluster.job(cores=8, total_cpu=3600)
    sampled(cluster, cluster.session(sampled_job, cores=8), [1.0] * 30, [0.0] * 30, cpus=8)
    accounted = cluster.job(cores=8, total_cpu=3600)
    assert set(cpu_findings(store, config, sampled_job)) == {"low_concurrency"}
    assert set(cpu_findings(store, config, accounted)) == {"serial_many_cores"}
    # The letter gives one CPU advice for them, and names no rule that was hidden.
    rules = {r.id: r for r in load_rules(config).rules}
    [report] = analyze_period(store, config, WEEK)
    cpu_advice = [a.rule.id for a in pick_advice(report, rules, limit=10) if a.rule.resource == "cpu"
                  and a.rule.id != "low_compute_power"]
    assert sorted(cpu_advice) == ["low_concurrency", "serial_many_cores"]
    assert all(f.rule != "cpu_underuse" for f in report.findings)


def test_the_card_shows_one_cpu_finding_with_one_advice(store, cluster, config):
    sid = cluster.session(None, cores=8, elapsed=600)
    sampled(cluster, sid, [1.0] * 60, [0.0] * 60, cpus=8, step="local")
    rows, _note = job_findings(config, store, [sid], 600)
    cpu = [row for row in rows if row["rule"] in CPU_RULES]
    assert [row["rule"] for row in cpu] == ["low_concurrency"]
    assert cpu[0]["solution"].startswith("Either ask for a single core")


# -- an idle job ----------------------------------------------------------------------------------


def test_a_mostly_sleeping_job_gets_the_idle_finding_only(store, cluster, config):
    # Asleep 95 % of its run, one core busy for the rest.
    sleeper = cluster.job(cores=4, total_cpu=0.05 * 3000)
    sampled(cluster, cluster.session(sleeper), ([0.0] * 19 + [1.0]) * 15, [0.0] * 300, cpus=4)
    found = cpu_findings(store, config, sleeper)
    assert set(found) == {"cpu_idle"}
    assert found["cpu_idle"]["idle_fraction"] == pytest.approx(0.95, abs=0.01)
    assert found["cpu_idle"]["source"] == "samples"
    # Busy a third of the time: not idle, whatever its mean.
    bursty = cluster.job(cores=4, total_cpu=0.33 * 3000)
    sampled(cluster, cluster.session(bursty), ([0.0] * 2 + [1.0]) * 100, [0.0] * 300, cpus=4)
    assert "cpu_idle" not in cpu_findings(store, config, bursty)


def test_idle_from_accounting_alone_needs_a_mean_that_proves_it(store, cluster, config):
    # 0.005 busy cores on average: at most 5 % of the run can have had 0.1 cores busy.
    idle = cluster.job(cores=4, total_cpu=0.005 * 3600)
    # 0.05 busy cores on average could be 0.05 cores all the time, or half the time on 0.1.
    unknown = cluster.job(cores=4, total_cpu=0.05 * 3600)
    assert set(cpu_findings(store, config, idle)) == {"cpu_idle"}
    assert set(cpu_findings(store, config, unknown)) == {"cpu_underuse"}


def test_a_gpu_job_whose_cpu_waits_for_the_gpu_is_not_idle(store, cluster, config):
    job = cluster.job(cores=4, gpus=1, total_cpu=0.001 * 3600)
    sid = cluster.session(job)
    sampled(cluster, sid, [0.0] * 30, [0.0] * 30, cpus=4)
    cluster.gpus(sid, {0: [95.0] * 30})
    assert "cpu_idle" not in cpu_findings(store, config, job)


# -- the sampler's wait ---------------------------------------------------------------------------


class WaitProc:
    """A fake /proc whose processes have threads with schedstat files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, pid: int, ppid: int, *, utime: int = 0, cutime: int = 0,
            waits: dict[int, int] | None = None, start: int = 1000) -> None:
        """``waits``: run-queue ns by tid (the leader's tid is the pid); None: no schedstat."""
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        threads = len(waits) if waits else 1
        fields = ["S", ppid, pid, pid, 0, -1, 4194304, 0, 0, 0, 0, utime, 0, cutime, 0,
                  20, 0, threads, 0, start, 1 << 20, 100]
        (d / "stat").write_text(f"{pid} (work) " + " ".join(map(str, fields)) + " 0 0\n")
        (d / "io").write_text("rchar: 0\nwchar: 0\nsyscr: 0\nsyscw: 0\nread_bytes: 0\n"
                              "write_bytes: 0\ncancelled_write_bytes: 0\n")
        (d / "cmdline").write_bytes(b"work\0")
        shutil.rmtree(d / "task", ignore_errors=True)
        (d / "schedstat").unlink(missing_ok=True)
        if waits is None:
            return
        for tid, ns in waits.items():
            (d / "task" / str(tid)).mkdir(parents=True)
            (d / "task" / str(tid) / "schedstat").write_text(f"{10**9} {ns} 50\n")
        if pid in waits:
            (d / "schedstat").write_text(f"{10**9} {waits[pid]} 50\n")

    def drop(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid))


class Listed:
    def __init__(self, steps):
        self.current = steps

    def steps(self):
        return self.current


def _sampler(root: Path, steps) -> Sampler:
    return Sampler(Listed(steps), proc_root=str(root), clock=iter(range(100)).__next__)


def test_a_process_wait_is_the_sum_over_its_threads_exited_ones_included(tmp_path):
    proc = WaitProc(tmp_path)
    # The leader's own schedstat says 1 s; its threads together waited 6 s.
    proc.put(10, 1, utime=100, waits={10: 10**9, 11: 2 * 10**9, 12: 3 * 10**9})
    sampler = _sampler(tmp_path, {"0": StepProcesses([10])})
    first = sampler.sample()
    assert first.steps[0].cpu_wait_s == pytest.approx(6.0)
    assert first.processes[0].cpu_wait_s == pytest.approx(6.0)
    # Thread 12 exited; the others waited one more second each.
    proc.put(10, 1, utime=200, waits={10: 2 * 10**9, 11: 3 * 10**9})
    assert sampler.sample().steps[0].cpu_wait_s == pytest.approx(8.0)
    # Down to the leader alone (read through /proc/10/schedstat): the rest is kept.
    proc.put(10, 1, utime=300, waits={10: 2_500_000_000})
    assert sampler.sample().steps[0].cpu_wait_s == pytest.approx(8.5)


def test_a_reaped_child_keeps_its_wait_in_the_step(tmp_path):
    proc = WaitProc(tmp_path)
    proc.put(20, 1, utime=10, waits={20: 10**9})
    proc.put(21, 20, utime=500, waits={21: 4 * 10**9})
    sampler = _sampler(tmp_path, {"0": StepProcesses([20, 21])})
    assert sampler.sample().steps[0].cpu_wait_s == pytest.approx(5.0)
    # The child exits and its parent reaps it: its CPU moves into the parent's cutime, but no
    # process inherits a wait, so the step keeps the child's last reading.
    proc.drop(21)
    proc.put(20, 1, utime=10, cutime=510, waits={20: 10**9})
    sampler.source.current = {"0": StepProcesses([20])}
    step = sampler.sample().steps[0]
    assert step.cpu_user_s == pytest.approx(520 * TICK)
    assert step.cpu_wait_s == pytest.approx(5.0)


def test_no_schedstat_is_no_wait_not_zero(tmp_path):
    proc = WaitProc(tmp_path)
    proc.put(30, 1, utime=100, waits=None)
    record = _sampler(tmp_path, {"0": StepProcesses([30])}).sample()
    assert record.steps[0].cpu_wait_s is None and record.processes[0].cpu_wait_s is None


def test_the_wait_travels_through_the_spool_into_the_store(tmp_path):
    proc = WaitProc(tmp_path / "proc")
    (tmp_path / "proc").mkdir()
    proc.put(40, 1, utime=100, waits={40: 1_500_000_000})
    record: SampleRecord = _sampler(tmp_path / "proc", {"0": StepProcesses([40])}).sample()
    path = tmp_path / "spool" / "n1.1.jsonl"
    writer = spool.SpoolWriter(path)
    writer.write_session({"session_id": str(uuid.uuid4()), "job_id": None, "node": "n1",
                          "mode": "run", "started_at": 0.0, "interval_s": 10.0})
    writer.write_sample(record)
    writer.close()
    with Store(":memory:") as store:
        load_spool(store, path)
        assert store.one("SELECT cpu_wait_s FROM step_samples") == (pytest.approx(1.5),)
        assert store.one("SELECT cpu_wait_s FROM process_samples") == (pytest.approx(1.5),)


def test_the_card_and_summary_json_show_the_wait(store, cluster):
    sid = cluster.session(None, cores=2, elapsed=300)
    sampled(cluster, sid, [1.0] * 30, [1.0] * 30, cpus=2, step="local")
    summary = build_summary(store, [sid], job_id=None, exit_code=0, exit_signal=None,
                            elapsed_s=300.0, time_limit_s=None, mem_requested_bytes=None)
    assert summary["cpu_wait_s"] == pytest.approx(300.0)
    assert summary["cores_in_use"]["waiting_mean"] == pytest.approx(1.0)
    assert [step["cpu_wait_s"] for step in summary["steps"]] == [pytest.approx(300.0)]
    assert "waited 300.0 s for a CPU: 50% of the time its threads wanted to run" in render_card(summary)
    # Not measured (a spool from an older watcher): no figure, not a zero.
    old = cluster.session(None, cores=2, elapsed=300)
    sampled(cluster, old, [1.0] * 30, None, cpus=2, step="local")
    summary = build_summary(store, [old], job_id=None, exit_code=0, exit_signal=None,
                            elapsed_s=300.0, time_limit_s=None, mem_requested_bytes=None)
    assert summary["cpu_wait_s"] is None and "waited" not in render_card(summary)


def test_a_spool_from_before_the_wait_field_loads_without_a_wait(tmp_path):
    # Its session line names the fields it has; the loader maps them by name.
    fields = {part: [f for f in names if f != "cpu_wait_s"] for part, names in spool.FIELDS.items()}
    values = {"step": "local", "nprocs": 1, "nthreads": 1, "cpu_user_s": 5.0, "cpu_system_s": 0.0,
              "rss_bytes": 1, "largest_rss_bytes": 1, "read_bytes": 0, "write_bytes": 0,
              "rchar": 0, "wchar": 0, "minor_faults": 0, "major_faults": 0}
    session = {"session_id": "old-1", "job_id": None, "node": "n1", "mode": "run",
               "started_at": 0.0, "interval_s": 10.0}
    lines = [{"k": "session", "v": spool.SPOOL_VERSION, "session": session, "fields": fields},
             {"k": "sample", "seq": 0, "ts": 10.0, "procs": [], "gpus": [], "cmd": [],
              "steps": [[values.get(name) for name in fields["steps"]]]}]
    path = tmp_path / "n1.1.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with Store(":memory:") as store:
        load_spool(store, path)
        assert store.one("SELECT cpu_user_s, cpu_wait_s FROM step_samples") == (5.0, None)
