"""The node scraper (docs/scrape.md): every job of a node from one scan, one session each.

Fast tests run on the recorded /proc tree of two jobs (tests/fixtures/proc/README.md) and the
hand-built cgroup v2 tree; the ``slurm`` one scrapes the local cluster as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest

from watcher.analysis.engine import analyze_period
from watcher.analysis.periods import parse_period
from watcher.commands.scrape import parse_duration
from watcher.config import load_config
from watcher.records import GpuReading, SampleRecord, StepSample
from watcher.sampling.node_jobs import NodeGpus, NodeJobs
from watcher.slurm.commands import parse_squeue_jobs_times
from watcher.spool import SpoolWriter
from watcher.store import Store
from watcher.store.spool_loader import load_spool
from watcher.watch.scrape import Scraper

FIXTURES = Path(__file__).parent / "fixtures"
JOB14 = FIXTURES / "proc/linuxproc-job14"   # jobs 14 and 15 of alice (uid 1001), linuxproc
HYBRID = str(FIXTURES / "cgroup/hybrid-recorded")   # no job cgroups there


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def spool_of(spool_dir: Path, job_id: int) -> Path:
    (path,) = [p for p in spool_dir.glob("*.jsonl") if f".{job_id}." in p.name]
    return path


# -- attribution -------------------------------------------------------------------------------


def test_two_jobs_from_one_scan_by_job_and_step():
    jobs = NodeJobs(str(JOB14), HYBRID).scan()
    assert sorted(jobs) == [14, 15]
    # 11639 left job 14's stepd tree (setsid) and is found by its environment.
    assert jobs[14].found.pids == {"batch": [11636, 11637, 11639, 11640, 11643], "0": [11655, 11656]}
    assert jobs[14].found.stepds == {"batch": [11632], "0": [11650]}
    assert jobs[15].found.pids == {"batch": [12655, 12656]}
    assert jobs[14].uid == jobs[15].uid == 1001
    # The sampler gets the scan's bytes, and each step's stepd as "children only".
    batch = jobs[14].steps["batch"]
    assert set(batch.children_only) == {11632} and batch.stats is not None


def test_two_jobs_of_a_cgroup_v2_node():
    jobs = NodeJobs(str(FIXTURES / "proc/cgroup-node"), str(FIXTURES / "cgroup/v2")).scan()
    assert jobs[4242].found.pids == {"batch": [2002, 2003], "0": [2011, 2012], "extern": [2021]}
    assert jobs[4242].found.method == "cgroup-v2"
    assert jobs[777].found.pids == {"batch": [3002]}


def test_the_scan_reads_the_process_table_once_per_round(monkeypatch):
    jobs = NodeJobs(str(JOB14), HYBRID)
    calls = []
    scan = jobs.files.scan_stats
    monkeypatch.setattr(jobs.files, "scan_stats", lambda: calls.append(1) or scan())
    jobs.scan()
    assert calls == [1]


def _retitle(proc: Path, uid: int) -> None:
    for pid in (12651, 12655, 12656):
        status = proc / str(pid) / "status"
        text = status.read_text().replace("1001\t1001\t1001\t1001", f"{uid}\t{uid}\t{uid}\t{uid}")
        status.write_text(text)


def test_an_ordinary_user_sees_only_its_own_jobs(tmp_path):
    proc = tmp_path / "proc"
    shutil.copytree(JOB14, proc)
    _retitle(proc, 1002)   # job 15 is bob's now
    assert sorted(NodeJobs(str(proc), HYBRID, uid=1001).scan()) == [14]
    assert sorted(NodeJobs(str(proc), HYBRID, uid=1002).scan()) == [15]
    assert NodeJobs(str(proc), HYBRID, uid=4321).scan() == {}
    assert sorted(NodeJobs(str(proc), HYBRID, uid=None).scan()) == [14, 15]


# -- sessions ----------------------------------------------------------------------------------


def _fake_job(proc: Path, job: int, stepd: int) -> None:
    """A copy of job 15 (stepd 12651 -> 12655 -> 12656) as ``job``, pids from ``stepd``."""
    renumber = {12651: stepd, 12655: stepd + 1, 12656: stepd + 2}
    for old, new in renumber.items():
        shutil.copytree(proc / str(old), proc / str(new))
        fields = (proc / str(new) / "stat").read_text().split(" ")
        fields[0] = str(new)
        fields[3] = str(renumber.get(int(fields[3]), fields[3]))
        (proc / str(new) / "stat").write_text(" ".join(fields))
    (proc / str(stepd) / "cmdline").write_bytes(f"slurmstepd: [{job}.batch]\0".encode())
    env = (proc / "12655/environ").read_bytes().replace(b"SLURM_JOB_ID=15\0", f"SLURM_JOB_ID={job}\0".encode())
    (proc / str(stepd + 1) / "environ").write_bytes(env)


def test_jobs_that_start_and_end_open_and_close_sessions_within_one_round(tmp_path):
    proc = tmp_path / "proc"
    shutil.copytree(JOB14, proc)
    out = tmp_path / "spools"
    scraper = Scraper(spool_dir=out, jobs=NodeJobs(str(proc), HYBRID), interval_s=10, cluster="c")
    scraper.round()
    assert sorted(scraper.sessions) == [14, 15]
    _fake_job(proc, 16, 13000)           # job 16 starts
    for pid in (12651, 12655, 12656):   # job 15 ends
        shutil.rmtree(proc / str(pid))
    scraper.round()
    assert sorted(scraper.sessions) == [14, 16]
    ended = lines(spool_of(out, 15))
    assert ended[-1]["k"] == "end" and ended[-1]["end"]["ended_by"] == "job left this node"
    assert [line["k"] for line in ended] == ["session", "sample", "end"]
    started = lines(spool_of(out, 16))
    assert [line["k"] for line in started] == ["session", "sample"]
    header = started[0]["session"]
    assert (header["mode"], header["job_id"], header["user_name"]) == ("node", 16, "alice")
    # The job's own environment names the node and cluster, as for its in-job watcher.
    assert header["node"] == "vm" and header["cluster"] == "turingwatch"
    assert header["cores_available"] == 1
    scraper.close_all("scraper stopped")
    assert scraper.sessions == {}
    for job in (14, 16):
        assert lines(spool_of(out, job))[-1]["end"]["ended_by"] == "scraper stopped"
    samples = [line for line in lines(spool_of(out, 14)) if line["k"] == "sample"]
    assert len(samples) == 2
    steps = {row[0] for row in samples[0]["steps"]}
    assert steps == {"batch", "0"}


def test_bounded_run_ends_every_session(tmp_path):
    out = tmp_path / "spools"
    scraper = Scraper(spool_dir=out, jobs=NodeJobs(str(JOB14), HYBRID), interval_s=0.2)
    started = time.monotonic()
    scraper.run(duration_s=0.5)
    assert time.monotonic() - started < 3
    assert scraper.rounds >= 2
    for job in (14, 15):
        assert lines(spool_of(out, job))[-1]["k"] == "end"


def test_gpus_are_read_once_and_kept_per_job():
    class Gpus:
        status = "ok"

        def __init__(self):
            self.calls = []

        def sample(self, pids):
            self.calls.append(set(pids))
            blank = dict(gpu_name="H", util_pct=50.0, mem_util_pct=1.0, mem_used_bytes=1,
                         mem_total_bytes=2, power_w=1.0, energy_j=1.0, temperature_c=30.0,
                         sm_clock_mhz=1.0, throttle_reasons=0)
            return [GpuReading(0, "u0", job_pids=sorted({1, 2} & self.calls[-1]), other_pids=1, **blank),
                    GpuReading(1, "u1", job_pids=sorted({3} & self.calls[-1]), other_pids=0, **blank),
                    GpuReading(2, "u2", job_pids=[], other_pids=0, **blank)]

    gpus = NodeGpus(Gpus())
    gpus.read({1, 2, 3})
    first, second = gpus.for_job(), gpus.for_job()
    assert [(r.gpu_index, r.job_pids, r.other_pids) for r in first.sample([1])] == [(0, [1], 2)]
    assert [(r.gpu_index, r.job_pids, r.other_pids) for r in second.sample([2, 3])] == [
        (0, [2], 2), (1, [3], 0)]
    assert len(gpus.gpu.calls) == 1


def test_parse_duration_and_squeue_times():
    assert parse_duration("90") == 90 and parse_duration("10m") == 600 and parse_duration("2h") == 7200
    with pytest.raises(click.BadParameter):
        parse_duration("soon")
    times = parse_squeue_jobs_times("14|1:00:00|2026-11-22T10:00:00\n15|UNLIMITED|N/A\n\n")
    assert times[14].time_limit_s == 3600 and times[15].time_limit_s is None
    assert times[15].started_at is None


# -- the analysis counts a job once ------------------------------------------------------------

T0 = datetime(2026, 11, 17, 8, 0, tzinfo=UTC).timestamp()
WEEK = parse_period("2026-W47", "week", "UTC")


def _spool(path: Path, mode: str, busy_cores: float, rss: int, *, node: str = "n1") -> Path:
    writer = SpoolWriter(path)
    writer.write_session({
        "session_id": f"{mode}-{node}-555", "job_id": 555, "cluster": "c", "node": node,
        "mode": mode, "user_name": "alice", "command": "./solver", "started_at": T0,
        "interval_s": 10.0, "cores_available": 4, "mem_requested_bytes": 8 << 30,
        "time_limit_s": 3600, "gpu_status": "disabled", "watcher_version": "test", "meta": {},
    })
    for seq in range(30):
        step = StepSample("batch", 2, 2, busy_cores * 10 * (seq + 1), 0.0, rss, rss, 7, "solver",
                          0, 0, 0, 0, 0, 0, 4, "cpuset", None, rss, "rss", None)
        writer.write_sample(SampleRecord(seq, T0 + 10 * (seq + 1), [step], [], [], []))
    writer.write_end(T0 + 310, {"exit_code": 0, "exit_signal": None})
    writer.close()
    return path


def _judge(tmp_path: Path, spools: list[Path]):
    store = Store(str(tmp_path / f"s{len(list(tmp_path.glob('*.duckdb')))}.duckdb"))
    try:
        for path in spools:
            load_spool(store, path)
        reports = analyze_period(store, load_config(None, environ={}), WEEK)
        return ([sorted((f.rule, f.job_id, f.step, f.node) for f in r.findings) for r in reports],
                [r.totals for r in reports])
    finally:
        store.close()


def test_in_job_sessions_win_over_the_scrapers_for_that_job_and_node(tmp_path):
    # The in-job watcher saw one busy core of four; the scraper (told apart by its mode only)
    # claims four, with other memory: were both counted, the job would be judged otherwise.
    run = _spool(tmp_path / "run.jsonl", "run", 1.0, 1 << 30)
    node = _spool(tmp_path / "node.jsonl", "node", 4.0, 6 << 30)
    alone = _judge(tmp_path, [run])
    assert alone[0] and any(rule == "low_concurrency" for rule, *_ in alone[0][0])
    assert _judge(tmp_path, [run, node]) == alone
    # On a node without an in-job watcher the scraper's sessions count.
    other = _spool(tmp_path / "node2.jsonl", "node", 4.0, 6 << 30, node="n2")
    assert _judge(tmp_path, [run, node, other]) != alone
    scraped = _judge(tmp_path, [node])
    assert scraped != alone and not any(rule == "low_concurrency" for rule, *_ in scraped[0][0])


# -- on the local cluster ----------------------------------------------------------------------


def _listpids(env: dict[str, str], job: int) -> dict[str, set[int]]:
    from watcher.slurm.commands import parse_listpids

    out = subprocess.run(["scontrol", "listpids", str(job)], env=env, capture_output=True,
                         text=True, timeout=30).stdout
    return {step: set(pids) for step, pids in parse_listpids(out, job).items()}


def _wait_running(env: dict[str, str], job: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the one node may be busy with other tests' jobs
        state = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"], env=env,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        if state == "RUNNING":
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job} is not running after {timeout} s")


@pytest.mark.slurm
def test_scrape_two_users_jobs_on_the_cluster(slurm_cluster, turingwatch_command, tmp_path):
    if os.getuid() != 0:
        pytest.skip("the scraper sees every user's jobs as root only")
    script = "#!/bin/bash\nsleep 300 &\nsrun -n1 --overlap sleep 300 &\nwait\n"
    env = slurm_cluster.env
    mine = slurm_cluster.sbatch(script, "-J", "tw-scrape", "-t", "10", cwd=slurm_cluster.make_job_dir())
    alices = slurm_cluster.sbatch(script, "-J", "tw-scrape", "-t", "10", cwd=slurm_cluster.make_job_dir(),
                                  as_user=True)
    try:
        for job in (mine, alices):
            _wait_running(env, job)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                {"batch", "0"} <= _listpids(env, job).keys() for job in (mine, alices)):
            time.sleep(0.5)
        out = tmp_path / "spools"
        (tmp_path / "empty.toml").write_text("")
        subprocess.run([*turingwatch_command.argv, "scrape", "--interval", "1", "--duration", "3",
                        "--spool-dir", str(out), "--no-send", "--no-gpu"],
                       env={**env, **turingwatch_command.env, "TURINGWATCH_CONFIG": str(tmp_path / "empty.toml")},
                       check=True, timeout=120)
        listed = {job: _listpids(env, job) for job in (mine, alices)}
        for job, owner in ((mine, "root"), (alices, slurm_cluster.user)):
            got = lines(spool_of(out, job))
            header = got[0]["session"]
            assert header["mode"] == "node" and header["user_name"] == owner
            assert header["time_limit_s"] == 600   # from squeue: 22.05 sets no end time
            assert got[-1]["k"] == "end"
            seen: dict[str, set[int]] = {}
            for line in got:
                for row in line.get("procs", []):
                    seen.setdefault(row[0], set()).add(row[1])
            # Every process listpids names (its stepds aside: they are not the job's) is the
            # scraper's, in that same step; and none of the other job's is.
            for step, pids in listed[job].items():
                tasks = {p for p in pids if _comm(p) not in (None, "slurmstepd")}
                assert tasks <= seen.get(step, set()), (job, step, tasks, seen)
            other = mine if job == alices else alices
            assert not {p for s in seen.values() for p in s} & {
                p for s in listed[other].values() for p in s}
    finally:
        subprocess.run(["scancel", str(mine), str(alices)], env=env, timeout=30)


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def test_a_service_user_scrapes_every_job_an_ordinary_user_only_their_own(monkeypatch):
    from types import SimpleNamespace

    from watcher.sampling import node_jobs

    me = SimpleNamespace(pw_name="twsvc", pw_uid=4321)
    monkeypatch.setattr(node_jobs.os, "getuid", lambda: 4321)
    monkeypatch.setattr(node_jobs.pwd, "getpwuid", lambda uid: me)
    assert node_jobs.node_uid_filter(["twsvc"]) is None       # the distributor's scrape jobs
    assert node_jobs.node_uid_filter(["other"]) == 4321
    monkeypatch.setattr(node_jobs.os, "getuid", lambda: 0)
    assert node_jobs.node_uid_filter() is None
