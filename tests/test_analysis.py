"""Every rule on constructed samples and accounting: a case that fires, a close one that does not.

The store is a real in-memory DuckDB store with the real schema; the builder below writes rows
the way the watcher and the accounting import do (cumulative counters, real timestamps).
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from watcher.analysis.engine import analyze_job, analyze_period, analyze_session
from watcher.analysis.periods import parse_period
from watcher.config import load_config
from watcher.store import Store

T0 = datetime(2026, 11, 17, 8, 0, tzinfo=UTC)  # a Tuesday of ISO week 2026-W47
WEEK = parse_period("2026-W47", "week", "UTC")
GIB = 1024**3


class Cluster:
    """Writes sessions, samples and accounting rows into a fresh store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ids = itertools.count(1000)

    def job(
        self,
        *,
        user: str = "alice",
        cores: int = 4,
        nodes: int = 1,
        gpus: int = 0,
        mem: int | None = 8 * GIB,
        elapsed: int = 3600,
        limit: int | None = 4 * 3600,
        state: str = "COMPLETED",
        total_cpu: float | None = None,
        max_rss: int | None = None,
        name: str = "job",
        account: str = "physics",
        partition: str = "cpu",
        qos: str = "normal",
        start: datetime = T0,
        array_job_id: int | None = None,
        steps: tuple[str, ...] = ("batch", "extern"),
    ) -> int:
        job_id = next(self._ids)
        end = None if state == "RUNNING" else start + timedelta(seconds=elapsed)
        self.store.execute(
            "INSERT INTO jobs (cluster, job_id, job_id_display, array_job_id, user_name, account,"
            " partition, qos, job_name, submit_line, state, start_time, end_time, time_limit_s,"
            " elapsed_s, nnodes, ncpus, ngpus, req_mem_bytes, total_cpu_s, max_rss_bytes)"
            " VALUES ('c', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                job_id, str(job_id), array_job_id, user, account, partition, qos, name,
                f"sbatch {name}.sh", state, start, end, limit, elapsed, nodes, cores, gpus, mem,
                total_cpu, max_rss,
            ],
        )
        for step in steps:
            self.store.execute(
                "INSERT INTO job_steps (cluster, job_id, step, state, start_time, end_time,"
                " elapsed_s, nnodes, ntasks, ncpus, max_rss_bytes)"
                " VALUES ('c', ?, ?, ?, ?, ?, ?, 1, 1, ?, NULL)",
                [job_id, step, state, start, end, elapsed, cores],
            )
        return job_id

    def session(
        self,
        job_id: int | None,
        *,
        node: str = "n1",
        cores: int | None = 4,
        mem: int | None = None,
        limit: int | None = None,
        user: str = "alice",
        start: datetime = T0,
        elapsed: float | None = 3600,
        exit_code: int | None = 0,
        exit_signal: int | None = None,
        interval: float = 10.0,
    ) -> str:
        session_id = str(uuid.uuid4())
        ended = None if elapsed is None else start + timedelta(seconds=elapsed)
        self.store.execute(
            "INSERT INTO sessions (session_id, job_id, cluster, node, mode, user_name, command,"
            " started_at, ended_at, interval_s, exit_code, exit_signal, cores_available,"
            " mem_requested_bytes, time_limit_s) VALUES (?, ?, 'c', ?, 'run', ?, 'python x.py',"
            " ?, ?, ?, ?, ?, ?, ?, ?)",
            [session_id, job_id, node, user, start, ended, interval, exit_code, exit_signal,
             cores, mem, limit],
        )
        return session_id

    def steps(
        self,
        session_id: str,
        busy: list[float],
        *,
        step: str = "batch",
        node: str = "n1",
        interval: float = 10.0,
        system_share: float = 0.0,
        rss: int | list[int] = 100 * 1024**2,
        cpus: int | None = 4,
        start: datetime = T0,
    ) -> None:
        """One sample per entry of ``busy`` (busy cores over the interval before the sample)."""
        user_s = sys_s = 0.0
        rows = []
        for seq, cores in enumerate(busy):
            user_s += cores * interval * (1 - system_share)
            sys_s += cores * interval * system_share
            mem = rss[seq] if isinstance(rss, list) else rss
            ts = start + timedelta(seconds=interval * (seq + 1))
            rows.append([session_id, seq, ts, step, node, user_s, sys_s, mem, mem, cpus])
        self.store.write(lambda cur: cur.executemany(
            "INSERT INTO step_samples (session_id, seq, ts, step, node, nprocs, nthreads,"
            " cpu_user_s, cpu_system_s, rss_bytes, largest_rss_bytes, read_bytes, write_bytes,"
            " rchar, wchar, minor_faults, major_faults, cpus_available)"
            " VALUES (?, ?, ?, ?, ?, 1, 1, ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, ?)",
            rows,
        ))

    def gpus(
        self,
        session_id: str,
        util: dict[int, list[float]],
        *,
        processes: dict[int, list[bool]] | None = None,
        interval: float = 10.0,
        power_w: float = 100.0,
        node: str = "n1",
    ) -> None:
        rows = []
        for index, series in util.items():
            procs = (processes or {}).get(index, [True] * len(series))
            for seq, (u, p) in enumerate(zip(series, procs, strict=True)):
                ts = T0 + timedelta(seconds=interval * (seq + 1))
                rows.append([session_id, seq, ts, node, index, f"GPU-{index}", u, power_w,
                             power_w * interval * (seq + 1), [4242] if p else []])
        self.store.write(lambda cur: cur.executemany(
            "INSERT INTO gpu_samples (session_id, seq, ts, node, gpu_index, gpu_uuid, util_pct,"
            " power_w, energy_j, job_pids, other_pids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            rows,
        ))

    def process(self, session_id: str, comm: str, samples: int = 3, step: str = "batch") -> None:
        for seq in range(samples):
            self.store.execute(
                "INSERT INTO process_samples (session_id, seq, ts, step, pid, ppid, start_ticks,"
                " comm, cpu_user_s, cpu_system_s, rss_bytes, minor_faults, major_faults,"
                " nthreads) VALUES (?, ?, ?, ?, 77, 1, 5, ?, 1, 0, 1000, 0, 0, 1)",
                [session_id, seq, T0 + timedelta(seconds=10 * (seq + 1)), step, comm],
            )


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


def findings_of(store: Store, config, job_id: int | None = None) -> set[tuple]:
    reports = analyze_period(store, config, WEEK)
    found = {(f.rule, f.step) for r in reports for f in r.findings if job_id in (None, f.job_id)}
    return found


def rules_of(store: Store, config, job_id: int) -> set[str]:
    return {rule for rule, _ in findings_of(store, config, job_id)}


# -- CPU ---------------------------------------------------------------------------------------


def test_cpu_underuse_fires_below_half_the_cores(store, cluster, config):
    busy = cluster.job(cores=4, total_cpu=1.9 * 3600)  # 1.9 of 4 cores
    fine = cluster.job(cores=4, total_cpu=2.1 * 3600)  # 2.1 of 4 cores
    assert "cpu_underuse" in rules_of(store, config, busy)
    assert "cpu_underuse" not in rules_of(store, config, fine)


def test_cpu_underuse_uses_samples_when_accounting_has_no_cpu_time(store, cluster, config):
    job = cluster.job(cores=4, state="RUNNING", elapsed=600)
    # 1.5 busy cores: parallel, so the finding is the generic one, not low concurrency.
    cluster.steps(cluster.session(job, elapsed=None), [1.5] * 60)
    f = next(f for r in analyze_period(store, config, WEEK) for f in r.findings
             if f.rule == "cpu_underuse")
    assert f.metrics["source"] == "samples"
    assert f.metrics["mean_busy_cores"] == pytest.approx(1.5, abs=0.01)


def test_low_concurrency_on_one_busy_core_of_four(store, cluster, config):
    serial = cluster.job(cores=4, total_cpu=3600)
    cluster.steps(cluster.session(serial), [1.0] * 30)
    parallel = cluster.job(cores=4, total_cpu=3600)
    cluster.steps(cluster.session(parallel), [1.0] * 25 + [3.0] * 5)  # 1/6 of the time on 3
    assert ("low_concurrency", "batch") in findings_of(store, config, serial)
    assert "low_concurrency" not in rules_of(store, config, parallel)


def test_idle_samples_count_as_time(store, cluster, config):
    # 10 s of one busy core, then 50 s idle: the mean is 1/6 core, not 1 (the old dedup bug).
    job = cluster.job(cores=1, total_cpu=None, state="RUNNING", elapsed=60)
    cluster.steps(cluster.session(job, elapsed=None, cores=1), [1.0] + [0.0] * 5, cpus=1)
    [report] = analyze_period(store, config, WEEK)
    # cumulative at the first sample (10 core-s) + nothing after, over the 60 s sampled
    assert report.jobs[0]["cpu_efficiency"] == pytest.approx(10 / 60, abs=0.01)
    # Every sampled interval idle: the idle finding tells it, not a generic underuse.
    assert {f.rule for f in report.findings} == {"cpu_idle"}


def test_cpus_available_fall_back_to_the_session_without_cpuset(store, cluster, config):
    job = cluster.job(cores=4, total_cpu=3600)
    cluster.steps(cluster.session(job, cores=4), [1.0] * 30, cpus=None)
    assert "low_concurrency" in rules_of(store, config, job)


def test_serial_many_cores_from_accounting_alone(store, cluster, config):
    serial = cluster.job(cores=16, total_cpu=1.1 * 3600)
    parallel = cluster.job(cores=16, total_cpu=1.5 * 3600)
    idle = cluster.job(cores=16, total_cpu=0.2 * 3600)
    assert "serial_many_cores" in rules_of(store, config, serial)
    assert "serial_many_cores" not in rules_of(store, config, parallel)
    assert rules_of(store, config, idle) & {"serial_many_cores", "cpu_underuse"} == {"cpu_underuse"}


def test_low_compute_power_is_hidden_by_cpu_underuse(store, cluster, config):
    small = cluster.job(cores=2, total_cpu=2 * 3600 * 0.9, elapsed=3600)
    larger = cluster.job(cores=16, total_cpu=16 * 3600 * 0.9, elapsed=3600)
    idle_small = cluster.job(cores=2, total_cpu=60, elapsed=3600)
    assert "low_compute_power" in rules_of(store, config, small)
    assert "low_compute_power" not in rules_of(store, config, larger)
    assert rules_of(store, config, idle_small) >= {"cpu_underuse"}
    assert "low_compute_power" not in rules_of(store, config, idle_small)


def test_high_system_time(store, cluster, config):
    heavy = cluster.job(cores=1, total_cpu=3600)
    cluster.steps(cluster.session(heavy, cores=1), [1.0] * 10, system_share=0.45, cpus=1)
    light = cluster.job(cores=1, total_cpu=3600)
    cluster.steps(cluster.session(light, cores=1), [1.0] * 10, system_share=0.2, cpus=1)
    assert ("high_system_time", "batch") in findings_of(store, config, heavy)
    assert "high_system_time" not in rules_of(store, config, light)


# -- memory and time -----------------------------------------------------------------------------


def test_memory_oversubscription_and_oom_state(store, cluster, config):
    near = cluster.job(mem=4 * GIB, max_rss=int(3.9 * GIB), total_cpu=4 * 3600)
    killed = cluster.job(mem=4 * GIB, max_rss=int(2 * GIB), total_cpu=4 * 3600,
                         state="OUT_OF_MEMORY")
    roomy = cluster.job(mem=4 * GIB, max_rss=int(3.5 * GIB), total_cpu=4 * 3600)
    assert "memory_oversubscription" in rules_of(store, config, near)
    assert "memory_oversubscription" in rules_of(store, config, killed)
    assert "memory_oversubscription" not in rules_of(store, config, roomy)


def test_a_job_killed_when_its_rss_sum_reached_the_request_oversubscribed(store, cluster, config):
    # jobacct_gather's OverMemoryKill (no memory cgroup) kills a step whose RSS sum passes the
    # request, and the job ends CANCELLED: its charged peak (PSS, sampled every few seconds)
    # may never have come near the request, but Slurm's measure did.
    killed = cluster.job(mem=1 * GIB, max_rss=int(1.1 * GIB), total_cpu=3600, state="CANCELLED")
    sid = cluster.session(killed)
    cluster.steps(sid, [1.0] * 10, rss=int(0.6 * GIB))
    store.execute("UPDATE step_samples SET mem_bytes = rss_bytes // 2, mem_source = 'pss'"
                  " WHERE session_id = ?", [sid])
    done = cluster.job(mem=1 * GIB, max_rss=int(1.1 * GIB), total_cpu=3600)
    done_sid = cluster.session(done)
    cluster.steps(done_sid, [1.0] * 10, rss=int(0.6 * GIB))
    store.execute("UPDATE step_samples SET mem_bytes = rss_bytes // 2, mem_source = 'pss'"
                  " WHERE session_id = ?", [done_sid])
    assert "memory_oversubscription" in rules_of(store, config, killed)
    assert "memory_underuse" not in rules_of(store, config, killed)
    # A job that completed was not killed: shared pages counted twice are no finding.
    assert "memory_oversubscription" not in rules_of(store, config, done)


def test_memory_peak_of_a_running_step_is_not_lost(store, cluster, config):
    # MaxRSS is NULL for running steps; the sampled peak still counts (the old NULL-max bug).
    job = cluster.job(mem=4 * GIB, state="RUNNING", elapsed=600)
    cluster.steps(cluster.session(job, elapsed=None), [4.0] * 10, rss=int(3.95 * GIB))
    assert "memory_oversubscription" in rules_of(store, config, job)


def test_memory_underuse_is_judged_per_job_not_per_helper_step(store, cluster, config):
    wasteful = cluster.job(mem=8 * GIB, max_rss=1 * GIB, total_cpu=4 * 3600)
    # Another job family: within one, memory is advised for its biggest job (test_advice.py).
    fitting = cluster.job(mem=8 * GIB, total_cpu=4 * 3600, name="fits")
    sid = cluster.session(fitting)
    cluster.steps(sid, [4.0] * 10, step="0", rss=int(6.5 * GIB))
    cluster.steps(sid, [0.0] * 10, step="batch", rss=5 * 1024**2)  # a launcher step
    cluster.steps(sid, [0.0] * 10, step="extern", rss=1024**2)
    assert ("memory_underuse", None) in findings_of(store, config, wasteful)
    assert "memory_underuse" not in rules_of(store, config, fitting)


def test_memory_underuse_ignores_small_absolute_waste(store, cluster, config):
    job = cluster.job(mem=1 * GIB, max_rss=100 * 1024**2, total_cpu=4 * 3600)
    assert "memory_underuse" not in rules_of(store, config, job)


def test_time_limit_underuse(store, cluster, config):
    early = cluster.job(elapsed=30, limit=3600, total_cpu=120)
    close = cluster.job(elapsed=3000, limit=3600, total_cpu=4 * 3000)
    failed = cluster.job(elapsed=30, limit=3600, total_cpu=120, state="FAILED")
    assert "time_limit_underuse" in rules_of(store, config, early)
    assert "time_limit_underuse" not in rules_of(store, config, close)
    assert "time_limit_underuse" not in rules_of(store, config, failed)


def test_short_jobs_need_many_of_them(store, cluster, config):
    for _ in range(9):
        cluster.job(user="bob", elapsed=60, limit=7200, total_cpu=4 * 60)
    assert not any(f.rule == "short_jobs" for r in analyze_period(store, config, WEEK)
                   for f in r.findings)
    last = cluster.job(user="bob", elapsed=60, limit=7200, total_cpu=4 * 60,
                       start=T0 + timedelta(hours=1))
    short = [f for r in analyze_period(store, config, WEEK) for f in r.findings
             if f.rule == "short_jobs"]
    assert [(f.job_id, f.metrics["short_jobs"]) for f in short] == [(last, 10)]


def test_job_without_samples_is_analysed_from_accounting(store, cluster, config):
    job = cluster.job(cores=4, elapsed=3, limit=3600, total_cpu=2.0)
    reports = analyze_period(store, config, WEEK)
    assert {f.rule for f in reports[0].findings if f.job_id == job} == {"time_limit_underuse"}
    assert reports[0].jobs[0]["samples"] == 0


# -- processes and GPUs --------------------------------------------------------------------------


def test_jupyter_on_compute(store, cluster, config):
    lab = cluster.job(total_cpu=4 * 3600)
    cluster.process(cluster.session(lab), "jupyter-lab")
    plain = cluster.job(total_cpu=4 * 3600)
    cluster.process(cluster.session(plain), "python3")
    assert ("jupyter_on_compute", "batch") in findings_of(store, config, lab)
    assert "jupyter_on_compute" not in rules_of(store, config, plain)


def test_gpu_no_process_and_never_used(store, cluster, config):
    idle = cluster.job(gpus=1, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(idle), {0: [0.0] * 10}, processes={0: [False] * 10})
    opened = cluster.job(gpus=1, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(opened), {0: [0.0] * 10})
    busy = cluster.job(gpus=1, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(busy), {0: [80.0] * 10})
    gpu_rules = {"gpu_no_process", "gpu_never_used"}
    assert rules_of(store, config, idle) & gpu_rules == {"gpu_no_process"}
    assert rules_of(store, config, opened) & gpu_rules == {"gpu_never_used"}
    assert not rules_of(store, config, busy) & {"gpu_no_process", "gpu_never_used", "gpu_underuse"}


def test_gpus_in_use_are_counted_per_sample(store, cluster, config):
    # Both GPUs busy together: not underuse (the old per-process count said 1 of 2).
    both = cluster.job(gpus=2, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(both), {0: [90.0] * 10, 1: [90.0] * 10})
    one = cluster.job(gpus=2, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(one), {0: [90.0] * 10, 1: [0.0] * 10},
                 processes={1: [False] * 10})
    assert "gpu_underuse" not in rules_of(store, config, both)
    found = rules_of(store, config, one)
    assert "gpu_no_process" in found and "gpu_underuse" not in found  # suppressed
    store.execute("DELETE FROM gpu_samples")
    mostly_one = cluster.job(gpus=2, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(mostly_one), {0: [90.0] * 10, 1: [50.0] * 2 + [0.0] * 8},
                 processes={1: [True] * 2 + [False] * 8})
    assert "gpu_underuse" in rules_of(store, config, mostly_one)


def test_try_splitting_and_investigate(store, cluster, config):
    split = cluster.job(gpus=1, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(split), {0: [0.0] * 30 + [95.0] * 70})
    spread = cluster.job(gpus=1, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(spread), {0: ([0.0] * 2 + [95.0] * 8) * 10})
    starved = cluster.job(gpus=1, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(starved), {0: [5.0] * 95 + [60.0] * 5})
    fed = cluster.job(gpus=1, total_cpu=4 * 3600)
    cluster.gpus(cluster.session(fed), {0: [5.0] * 85 + [60.0] * 15})
    assert "try_splitting" in rules_of(store, config, split)
    assert "try_splitting" not in rules_of(store, config, spread)
    assert "investigate_gpu_usage" in rules_of(store, config, starved)
    assert "investigate_gpu_usage" not in rules_of(store, config, fed)


def test_gpu_energy_from_the_counter_and_co2(store, cluster, config, monkeypatch):
    job = cluster.job(gpus=1, total_cpu=3600, elapsed=100)
    cluster.gpus(cluster.session(job), {0: [90.0] * 10}, power_w=200.0)
    cfg = load_config(None, {"TURINGWATCH_ENERGY_GRID_CO2_G_PER_KWH": "400"})
    [report] = analyze_period(store, cfg, WEEK)
    row = report.jobs[0]
    # counter deltas: 9 intervals × 10 s × 200 W = 18000 J = 5 Wh; CPU: 3600 s × 10 W = 10 Wh
    assert row["gpu_energy_wh"] == pytest.approx(5.0)
    assert row["cpu_energy_wh"] == pytest.approx(10.0)
    assert row["co2_g"] == pytest.approx(15 / 1000 * 400, abs=0.1)


# -- rules file, exemptions, periods, persistence ------------------------------------------------


def test_exemptions_and_disabled_rules(store, cluster, config, tmp_path):
    job = cluster.job(cores=4, total_cpu=600, account="teaching")
    assert "cpu_underuse" in rules_of(store, config, job)
    rules = tmp_path / "rules.toml"
    rules.write_text('[rules.cpu_underuse]\nexempt_accounts = ["teaching"]\n'
                     '[rules.time_limit_underuse]\nenabled = false\n')
    cfg = load_config(None, {"TURINGWATCH_ANALYSIS_RULES_FILE": str(rules)})
    assert "cpu_underuse" not in rules_of(store, cfg, job)


def test_root_is_skipped_by_default(store, cluster, config):
    cluster.job(user="root", cores=4, total_cpu=60)
    assert analyze_period(store, config, WEEK)[0].findings == []


def test_period_bounds_and_rerun_replaces(store, cluster, config):
    inside = cluster.job(total_cpu=60)
    cluster.job(total_cpu=60, start=T0 + timedelta(days=7))  # next week
    first = analyze_period(store, config, WEEK)
    again = analyze_period(store, config, WEEK)
    assert [r.jobs for r in first] == [r.jobs for r in again]
    assert [j["job_id"] for j in first[0].jobs] == [inside]
    stored = store.execute(
        "SELECT count(*) FROM analysis_findings WHERE period_id = '2026-W47'"
    ).fetchone()[0]
    assert stored == len(first[0].findings) > 0


def test_report_sections_and_history(store, cluster, config):
    old = cluster.job(name="train", total_cpu=60, start=T0 - timedelta(days=14))
    new = cluster.job(name="train", total_cpu=4 * 3600)
    [report] = analyze_period(store, config, WEEK)
    resources = next(s for s in report.sections if s.id == "resources")
    assert [r["job_id"] for r in resources.all_latest.rows if r["step"] is None] == [str(new)]
    [family] = resources.history.rows
    assert family["jobs"] == 2 and family["last_job_id"] == str(new)
    assert "cpu_underuse" in family["problems"]  # from the older job of the family
    assert old != new


# -- the report card (no accounting) ------------------------------------------------------------


def test_analyze_session_without_accounting(store, cluster, config):
    sid = cluster.session(555, cores=4, mem=4 * GIB, limit=3600, elapsed=300)
    cluster.steps(sid, [1.0] * 30)
    findings = analyze_session(store, config, [sid])
    # One core busy of four: low concurrency, the more specific cause, hides CPU underuse.
    cpu = {(f.rule, f.step) for f in findings if f.rule in ("cpu_underuse", "low_concurrency")}
    assert cpu == {("low_concurrency", "batch")}
    assert {f.job_id for f in findings} == {555}


def test_analyze_session_of_a_local_run(store, cluster, config):
    sid = cluster.session(None, cores=8, elapsed=600)
    cluster.steps(sid, [1.0] * 60, step="local", cpus=8)
    findings = analyze_session(store, config, [sid])
    assert {f.rule for f in findings} == {"low_concurrency"}
    assert all(f.job_id is None for f in findings)


def test_the_report_card_applies_no_exemptions(store, cluster, config):
    # root is exempt from period letters by default, but still gets its own job's card.
    sid = cluster.session(None, cores=8, elapsed=600, user="root")
    cluster.steps(sid, [1.0] * 60, step="local", cpus=8)
    assert {f.rule for f in analyze_session(store, config, [sid])} == {"low_concurrency"}
    assert all(not report.findings for report in analyze_period(store, config, WEEK))


def test_gpu_and_system_sections_tag_their_rows(store, cluster, config):
    job = cluster.job(gpus=1, total_cpu=4 * 3600, limit=4000, mem=None)
    sid = cluster.session(job)
    cluster.steps(sid, [4.0] * 10, system_share=0.6)
    cluster.gpus(sid, {0: [0.0] * 10}, processes={0: [False] * 10})
    [report] = analyze_period(store, config, WEEK)
    sections = {s.id: s for s in report.sections}
    [gpu_row] = sections["gpu"].latest_concerning.rows
    assert (gpu_row["gpu_index"], gpu_row["problems"]) == (0, ["gpu_no_process"])
    [sys_row] = sections["system"].latest_concerning.rows
    assert (sys_row["step"], sys_row["problems"]) == ("batch", ["high_system_time"])
    assert sections["system"].history.rows[0]["problems"] == ["high_system_time"]
    assert sections["resources"].latest_concerning.rows == []  # nothing of that section
    assert report.totals["findings"] == {"serious": 1, "medium": 0, "info": 1}


def test_analyze_job_uses_samples_and_accounting_whichever_exist(store, cluster, config):
    unsampled = cluster.job(cores=4, elapsed=3, limit=3600, total_cpu=2.0)
    sampled = cluster.job(cores=4, total_cpu=3600, limit=4000, mem=None)
    cluster.steps(cluster.session(sampled), [1.0] * 30)
    assert [(f.rule, f.job_id) for f in analyze_job(store, config, unsampled)] == [
        ("time_limit_underuse", unsampled)]
    assert {(f.rule, f.step) for f in analyze_job(store, config, sampled, cluster="c")} == {
        ("low_concurrency", "batch")}
    assert analyze_job(store, config, 99999) == []


def test_the_distributors_scrape_jobs_are_left_out_by_name_and_account(store, cluster, config):
    # Its job name (distributor.job_name) by default; in distributor.account when one is set.
    scrape = cluster.job(user="svc", cores=1, total_cpu=6, name="turingwatch-scrape", account="ops")
    work = cluster.job(user="svc", cores=4, total_cpu=60)
    reports = analyze_period(store, config, WEEK)
    assert [j["job_id"] for r in reports for j in r.jobs] == [work]
    assert rules_of(store, config, scrape) == set()
    elsewhere = load_config(None, {"TURINGWATCH_DISTRIBUTOR_ACCOUNT": "monitoring"})
    assert rules_of(store, elsewhere, scrape) != set()   # the same name in another account


def test_exempt_job_names(store, cluster, config, tmp_path):
    job = cluster.job(cores=4, total_cpu=600, name="backup")
    assert "cpu_underuse" in rules_of(store, config, job)
    rules = tmp_path / "rules.toml"
    rules.write_text('[exempt]\njob_names = ["backup"]\n')
    cfg = load_config(None, {"TURINGWATCH_ANALYSIS_RULES_FILE": str(rules)})
    assert rules_of(store, cfg, job) == set()
