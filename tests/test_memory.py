"""Memory as the kernel charges it (watcher/sampling/memory.py), and runs that measured nothing.

Readers on recorded and hand-built trees (tests/fixtures/cgroup/README.md, proc-samples), the
paced PSS meter on a fake clock, the sampler and `turingwatch run` on real forking processes,
spools from before the memory fields, and the card of a run no sample measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from watcher import spool
from watcher.analysis.engine import analyze_session
from watcher.card.summary import build_summary
from watcher.card.text import render_card
from watcher.config import load_config
from watcher.records import ProcessSample, SampleRecord, StepSample
from watcher.sampling import procfs
from watcher.sampling.cgroups import CgroupJobLayout
from watcher.sampling.memory import (
    MemoryCgroup,
    MemoryMeter,
    parse_pss,
    parse_stat_value,
    read_cgroup_memory,
)
from watcher.sampling.sampler import Sampler
from watcher.sampling.sources import TreeSource
from watcher.store import Store
from watcher.store.spool_loader import SpoolRefused, apply_lines, load_spool

FIXTURES = Path(__file__).parent / "fixtures"
CGROUP = FIXTURES / "cgroup"
REPO = Path(__file__).resolve().parent.parent
MiB = 2**20
KiB = 1024

# A Python job that allocates and touches `mib` MiB, forks two children that only read it
# ("shared") or each allocate as much of their own ("private"), and writes the PSS and RSS sums
# of the three processes, as the kernel counts them, while all three hold their memory.
FORKING_JOB = textwrap.dedent("""
    import json, os, sys, time
    MiB = 2**20
    kind, mib, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    def touch(n):
        b = bytearray(n * MiB)
        for i in range(0, len(b), 4096):
            b[i] = 1
        return b
    data = touch(mib) if kind == "shared" else None
    r, w = os.pipe()
    kids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            if kind == "shared":
                s = sum(data[i] for i in range(0, len(data), 4096))  # read only: pages stay shared
            else:
                mine = touch(mib)
            os.write(w, b"x")
            time.sleep(hold)
            os._exit(0)
        kids.append(pid)
    if kind != "shared":
        mine = touch(mib)
    for _ in kids:
        os.read(r, 1)
    time.sleep(min(1.0, hold / 3))
    pss = rss = 0
    for pid in [os.getpid(), *kids]:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
            elif line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
    with open("footprint.json", "w") as f:
        json.dump({"pss": pss, "rss": rss}, f)
    for k in kids:
        os.waitpid(k, 0)
""")


# -- readers -------------------------------------------------------------------------------------
def test_pss_of_a_recorded_smaps_rollup():
    parent = (FIXTURES / "proc-samples/smaps_rollup-fork-parent.txt").read_bytes()
    child = (FIXTURES / "proc-samples/smaps_rollup-fork-child.txt").read_bytes()
    assert parse_pss(parent) == 74185 * KiB
    assert parse_pss(child) == 71894 * KiB
    # The Rss line above it is not the Pss line; a rollup without one (or garbage) is None.
    assert parse_pss(parent.replace(b"\nPss:", b"\nXss:")) is None
    assert parse_pss(b"") is None and parse_pss(b"\nPss: many kB\n") is None


def test_cgroup_v1_recorded_from_the_kernel_counts_shared_pages_once():
    step = CGROUP / "v1-memory-recorded/memory/slurm/uid_1001/job_4343/step_0"
    reading = read_cgroup_memory(MemoryCgroup(str(step), "v1"))
    assert reading is not None
    assert reading.charged_bytes == 220897280 - 12288       # usage less total_inactive_file
    assert reading.peak_bytes == 220897280
    # What the kernel charged is the three processes' PSS (217971 kB), not their RSS (648164 kB).
    assert abs(reading.charged_bytes - 217971 * KiB) < 0.1 * 217971 * KiB


def test_cgroup_v1_uses_the_hierarchical_inactive_file():
    step = CGROUP / "v1/memory/slurm/uid_1000/job_4242/step_batch"
    reading = read_cgroup_memory(MemoryCgroup(str(step), "v1"))
    assert reading == (536870912 - 134217728, 805306368)   # total_inactive_file, not inactive_file


def test_cgroup_v2_current_less_inactive_file_and_peak():
    job = CGROUP / "v2/system.slice/slurmstepd.scope/job_4242"
    assert read_cgroup_memory(MemoryCgroup(str(job / "step_batch/user"), "v2")) == (
        303038464 - 62914560, 312475648)
    # A kernel before 5.19 has no memory.peak: the charge alone.
    assert read_cgroup_memory(MemoryCgroup(str(job / "step_0"), "v2")) == (104857600, None)
    assert read_cgroup_memory(MemoryCgroup(str(job / "step_extern"), "v2")) is None  # no controller
    assert read_cgroup_memory(MemoryCgroup(str(job / "gone"), "v2")) is None


def test_memory_stat_values():
    raw = b"anon 5\ninactive_file 7\nactive_file 9\n"
    assert parse_stat_value(raw, b"inactive_file") == 7
    assert parse_stat_value(raw, b"file") is None and parse_stat_value(b"", b"anon") is None


def test_layouts_find_each_steps_memory_cgroup():
    v2 = CgroupJobLayout(4242, str(CGROUP / "v2"), str(FIXTURES / "proc/cgroup-node"))
    job = f"{CGROUP}/v2/system.slice/slurmstepd.scope/job_4242"
    assert v2.memory_cgroup("batch") == MemoryCgroup(f"{job}/step_batch/user", "v2")   # tasks only
    assert v2.memory_cgroup("0") == MemoryCgroup(f"{job}/step_0", "v2")
    assert v2.memory_cgroup("extern") is None
    v1 = CgroupJobLayout(4242, str(CGROUP / "v1"), str(FIXTURES / "proc/cgroup-node"))
    assert v1.memory_cgroup("batch") == MemoryCgroup(
        f"{CGROUP}/v1/memory/slurm/uid_1000/job_4242/step_batch", "v1")
    assert v1.memory_cgroup("0") is None   # the recorded step 0 has no memory files
    recorded = CgroupJobLayout(4343, str(CGROUP / "v1-memory-recorded"), str(FIXTURES / "proc/cgroup-node"))
    assert recorded.memory_cgroup("0").directory.endswith("job_4343/step_0")


# -- the paced PSS meter -------------------------------------------------------------------------
class FakeProcs:
    """PSS by pid, a clock, and a timer that charges `cost_s` per reading."""

    def __init__(self, pss: dict[int, int], cost_s: float = 0.001) -> None:
        self.pss, self.cost_s, self.now, self.reads = pss, cost_s, 0.0, []

    def read(self, pid: int) -> int | None:
        self.reads.append(pid)
        self.now += self.cost_s
        return self.pss.get(pid)


def meter(procs: FakeProcs, tmp_path: Path, **kwargs) -> MemoryMeter:
    return MemoryMeter(procfs.ProcFiles(str(tmp_path), budget=0), clock=lambda: procs.now,
                       timer=lambda: procs.now, read_pss=procs.read, **kwargs)


def one_round(m: MemoryMeter, procs: FakeProcs, members, step="0", advance=10.0):
    procs.now += advance
    m.begin_round()
    got = m.step(step, members, sum(rss for _k, _p, rss in members))
    m.end_round()
    return got


def test_one_process_is_its_rss_and_costs_no_pss(tmp_path):
    procs = FakeProcs({1: 50 * MiB})
    m = meter(procs, tmp_path)
    got = one_round(m, procs, [((1, 10), 1, 100 * MiB)])
    assert (got.mem_bytes, got.source, procs.reads) == (100 * MiB, "rss", [])


def test_forked_workers_count_their_shared_pages_once(tmp_path):
    parent, kids = ((1, 10), 1, 210 * MiB), [((2, 20), 2, 209 * MiB), ((3, 30), 3, 209 * MiB)]
    procs = FakeProcs({1: 72 * MiB, 2: 70 * MiB, 3: 70 * MiB})
    m = meter(procs, tmp_path)
    assert one_round(m, procs, [parent]).source == "rss"
    got = one_round(m, procs, [parent, *kids])            # the fork: read all of it
    assert (got.mem_bytes, got.source) == (212 * MiB, "pss")
    assert sorted(procs.reads) == [1, 2, 3] and got.pss == {1: 72 * MiB, 2: 70 * MiB, 3: 70 * MiB}
    # Quiet rounds: no reading, each process's last PSS/RSS ratio on its RSS now.
    parent2 = (parent[0], 1, 214 * MiB)                   # +2 %: under the refresh threshold
    got = one_round(m, procs, [parent2, *kids])
    assert len(procs.reads) == 3
    assert got.mem_bytes == round(214 * MiB * 72 / 210) + 140 * MiB


def test_a_new_sharer_or_a_moved_rss_reads_the_step_again(tmp_path):
    a, b = ((1, 10), 1, 100 * MiB), ((2, 20), 2, 100 * MiB)
    procs = FakeProcs({1: 50 * MiB, 2: 50 * MiB, 3: 34 * MiB})
    m = meter(procs, tmp_path)
    one_round(m, procs, [a, b])
    assert len(procs.reads) == 2
    one_round(m, procs, [a, b, ((3, 30), 3, 100 * MiB)])   # a third sharer: everyone's PSS moved
    assert sorted(procs.reads[2:]) == [1, 2, 3]
    procs.pss.update({1: 80 * MiB, 2: 80 * MiB})
    got = one_round(m, procs, [((1, 10), 1, 160 * MiB), ((2, 20), 2, 160 * MiB)])   # 3 left, RSS grew
    assert sorted(procs.reads[5:]) == [1, 2] and got.mem_bytes == 160 * MiB
    # A small newcomer (under 5 % of the step) is read alone; the others keep their ratio.
    one_round(m, procs, [((1, 10), 1, 160 * MiB), ((2, 20), 2, 160 * MiB), ((4, 40), 4, MiB)])
    assert procs.reads[7:] == [4]


def test_readings_are_renewed_after_max_age(tmp_path):
    a, b = ((1, 10), 1, 100 * MiB), ((2, 20), 2, 100 * MiB)
    procs = FakeProcs({1: 50 * MiB, 2: 50 * MiB})
    m = meter(procs, tmp_path, max_age_s=60)
    for _ in range(6):
        one_round(m, procs, [a, b])   # 10 s apart: read at 10 s, then again at 70 s
    assert len(procs.reads) == 2
    one_round(m, procs, [a, b])
    assert len(procs.reads) == 4


def test_reading_is_paced_by_its_budget(tmp_path):
    members = [((p, p), p, 100 * MiB) for p in range(1, 11)]
    procs = FakeProcs({p: 10 * MiB for p in range(1, 11)}, cost_s=0.01)
    # 0.025 s to start with, 0.01 s more per 10 s: 3 readings (the last overdraws), then 1 a round.
    m = meter(procs, tmp_path, share=0.001, burst_s=0.025)
    got = one_round(m, procs, members, advance=0.0)
    assert len(procs.reads) == 3 and got.source == "pss"
    assert got.mem_bytes == 3 * 10 * MiB + 7 * 100 * MiB      # the rest count their RSS meanwhile
    one_round(m, procs, members)
    one_round(m, procs, members)
    assert len(procs.reads) == 5   # each round's refill pays back an overdraft and buys one more
    assert m.read_s == pytest.approx(0.05) and m.budget_s < 0
    for _ in range(20):
        got = one_round(m, procs, members)
    assert got.mem_bytes == 100 * MiB and set(procs.reads) == set(range(1, 11))   # all read
    # Refreshes (every 60 s) keep reading, never past the budget: 220 s × 0.1 % + the burst,
    # plus one overdraft.
    assert m.read_s <= 220 * 0.001 + 0.025 + 0.01 + 1e-9


def test_processes_whose_pss_cannot_be_read_count_their_rss(tmp_path):
    procs = FakeProcs({})   # another user's processes: smaps_rollup denied
    m = meter(procs, tmp_path)
    members = [((1, 10), 1, 10 * MiB), ((2, 20), 2, 20 * MiB)]
    assert one_round(m, procs, members).source == "rss"
    one_round(m, procs, members)
    assert len(procs.reads) == 2   # not asked again every round


def test_a_cgroup_step_leaves_out_the_watchers_own_memory(tmp_path):
    (tmp_path / "77").mkdir()
    resident, shared = 8 * MiB // procfs.PAGE_SIZE, 2 * MiB // procfs.PAGE_SIZE
    (tmp_path / "77/statm").write_text(f"9000 {resident} {shared} 1 0 5 0\n")   # 6 MiB anonymous
    step = CGROUP / "v2/system.slice/slurmstepd.scope/job_4242/step_batch/user"
    procs = FakeProcs({})
    m = meter(procs, tmp_path)
    m.begin_round()
    got = m.step("batch", [((5, 5), 5, 900 * MiB), ((6, 6), 6, 900 * MiB)], 1800 * MiB,
                 MemoryCgroup(str(step), "v2"), watchers=[77])
    assert got.source == "cgroup" and procs.reads == []
    assert got.mem_bytes == 303038464 - 62914560 - 6 * MiB and got.peak_bytes == 312475648


# -- real processes ------------------------------------------------------------------------------
def _footprint(workdir: Path) -> dict:
    return json.loads((workdir / "footprint.json").read_text())


def test_the_sampler_counts_a_forked_tree_by_pss(tmp_path):
    (tmp_path / "job.py").write_text(FORKING_JOB)
    # sh is the tree's root, as the watcher is in a run: children only; the job is below it.
    job = subprocess.Popen(["sh", "-c", f"{sys.executable} job.py shared 64 3; true"], cwd=tmp_path)
    try:
        sampler = Sampler(TreeSource(root=job.pid), read_cmdlines=False)
        deadline = time.monotonic() + 30
        best = None
        while job.poll() is None and time.monotonic() < deadline:
            (step,) = sampler.sample().steps
            if step.nprocs == 3 and (best is None or step.mem_bytes > best.mem_bytes):
                best = step
            time.sleep(0.2)
    finally:
        job.wait(timeout=30)
    footprint = _footprint(tmp_path)
    assert best is not None and best.mem_source == "pss"
    assert abs(best.mem_bytes - footprint["pss"]) <= 0.1 * footprint["pss"]
    assert best.rss_bytes >= 2.5 * best.mem_bytes   # the RSS sum counts the 64 MiB three times


def _v1_memory_cgroup_below_ours(name: str) -> Path | None:
    """A fresh v1 memory cgroup below this process's own (root, a v1 memory controller), or None.

    Made below our own cgroup, so the test moves nothing out of the limits it runs under."""
    from watcher.sampling.cgroups import read_proc_cgroup

    base = Path("/sys/fs/cgroup/memory")
    own = (read_proc_cgroup("self") or {}).get("memory")
    if os.geteuid() != 0 or own is None or not (base / "cgroup.procs").exists():
        return None
    top = base / own.lstrip("/") / name
    try:
        top.mkdir()
    except OSError:
        return None
    return top


def test_the_sampler_reads_a_real_v1_memory_cgroup(tmp_path):
    """On a kernel with the v1 memory controller: a job in a Slurm-named memory cgroup is
    measured by what the cgroup charges. Skipped elsewhere (the fixtures cover the readers)."""
    from watcher.sampling.sources import SlurmSource

    top = _v1_memory_cgroup_below_ours(f"tw-test-{os.getpid()}")
    if top is None:
        pytest.skip("needs root and a v1 memory controller to make a cgroup in")
    job_id = 900_000 + os.getpid() % 10_000
    step = top / f"slurm/uid_0/job_{job_id}/step_0"
    made = [top / "slurm", top / "slurm/uid_0", top / f"slurm/uid_0/job_{job_id}", step]
    job = None
    try:
        for directory in made[:-1]:
            directory.mkdir()
        step.mkdir()
        root = tmp_path / "cgroup"
        root.mkdir()
        (root / "memory").symlink_to(top)   # the layout globs <root>/memory/slurm*/uid_*/job_<J>
        (tmp_path / "job.py").write_text(FORKING_JOB)
        enter = f"echo $$ > {step}/cgroup.procs && exec {sys.executable} job.py shared 64 3"
        job = subprocess.Popen(["sh", "-c", enter], cwd=tmp_path)
        sampler = Sampler(SlurmSource(job_id, cgroup_root=str(root)), read_cmdlines=False)
        best = None
        deadline = time.monotonic() + 30
        while job.poll() is None and time.monotonic() < deadline:
            steps = {s.step: s for s in sampler.sample().steps}
            s0 = steps.get("0")
            if s0 is not None and s0.nprocs == 3 and (best is None or s0.mem_bytes > best.mem_bytes):
                best = s0
            time.sleep(0.2)
        job.wait(timeout=30)
        footprint = _footprint(tmp_path)
        assert best is not None and best.mem_source == "cgroup"
        assert abs(best.mem_bytes - footprint["pss"]) <= 0.1 * footprint["pss"]
        assert best.mem_peak_bytes >= best.mem_bytes and best.rss_bytes >= 2.5 * best.mem_bytes
    finally:
        if job is not None and job.poll() is None:
            job.kill()
            job.wait()
        for directory in reversed([top, *made]):
            for _ in range(50):   # the kernel lets go of a cgroup a moment after its last process
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def turingwatch_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TURINGWATCH_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "watcher", "run", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)


def test_run_reports_a_fork_sharing_job_at_its_pss_not_its_rss_sum(tmp_path):
    (tmp_path / "job.py").write_text(FORKING_JOB)
    done = turingwatch_run(tmp_path, "-i", "0.5", "-o", "out", "--", sys.executable, "job.py",
                           "shared", "200", "4")
    assert done.returncode == 0, done.stderr
    s = json.loads((tmp_path / "out/summary.json").read_text())
    footprint = _footprint(tmp_path)
    assert s["memory_source"] == "pss" and s["steps"][0]["memory_source"] == "pss"
    assert abs(s["peak_memory_bytes"] - footprint["pss"]) <= 0.1 * footprint["pss"]
    assert 190 * MiB <= s["peak_memory_bytes"] <= 260 * MiB
    assert s["peak_rss_bytes"] >= 550 * MiB          # the RSS sum is kept, as it was
    assert s["nodes"][0]["peak_memory_bytes"] == s["peak_memory_bytes"]
    assert "Memory       peak 2" in done.stderr and "RSS summed over processes" in done.stderr
    assert "Memory (PSS)" in (tmp_path / "out/report.html").read_text()


def test_run_still_sums_distinct_private_memory(tmp_path):
    (tmp_path / "job.py").write_text(FORKING_JOB)
    done = turingwatch_run(tmp_path, "-q", "-i", "0.5", "-o", "out", "--", sys.executable, "job.py",
                           "private", "100", "4")
    assert done.returncode == 0, done.stderr
    s = json.loads((tmp_path / "out/summary.json").read_text())
    footprint = _footprint(tmp_path)
    assert abs(s["peak_memory_bytes"] - footprint["pss"]) <= 0.1 * footprint["pss"]
    assert s["peak_memory_bytes"] >= 300 * MiB
    assert s["peak_memory_bytes"] >= 0.9 * s["peak_rss_bytes"]


# -- spools from before the memory fields ---------------------------------------------------------
# The field lists of the spool format before cpu_wait_s and the memory fields were added.
OLD_FIELDS = {
    "steps": spool.FIELDS["steps"][: spool.FIELDS["steps"].index("cpus_source") + 1],
    "procs": spool.FIELDS["procs"][: spool.FIELDS["procs"].index("nthreads") + 1],
    "gpus": spool.FIELDS["gpus"],
}


def _session(sid: str = "old-1") -> dict:
    return {"session_id": sid, "job_id": None, "cluster": None, "node": "n1", "mode": "run",
            "user_name": "alice", "command": "solver", "started_at": 1_763_780_000.0,
            "interval_s": 10.0, "cores_available": 4, "mem_requested_bytes": 1 << 30,
            "time_limit_s": None, "gpu_status": "disabled", "watcher_version": "0.1", "meta": {}}


def _rows(seq: int, rss: int) -> tuple[list, list]:
    step = StepSample("local", 2, 2, 10.0 * seq, 1.0, rss, rss // 2, 101, "solver", 1, 2, 3, 4, 5, 6,
                      4, "affinity", 1.5, 99, "pss", None)
    proc = ProcessSample("local", 101, 100, 555, "solver", 10.0 * seq, 0.5, rss // 2, 1, 2, 3, 4, 5,
                         6, 1, 0.5, 7)
    return list(step), list(proc)


def write_spool(path: Path, fields: dict, *, order: dict | None = None, samples: int = 3) -> None:
    """A spool naming `fields` (a subset or another order of ours) and rows of those fields."""
    ours = spool.FIELDS
    lines = [{"k": "session", "v": 1, "session": _session(), "fields": fields}]
    for seq in range(samples):
        step, proc = _rows(seq, (seq + 1) * 100 * MiB)
        full = {"steps": dict(zip(ours["steps"], step, strict=True)),
                "procs": dict(zip(ours["procs"], proc, strict=True))}
        lines.append({"k": "sample", "seq": seq, "ts": 1_763_780_000.0 + 10 * seq,
                      "steps": [[full["steps"].get(n, "new") for n in fields["steps"]]],
                      "procs": [[full["procs"].get(n, "new") for n in fields["procs"]]],
                      "gpus": [], "cmd": [[101, 555, "solver --x"]] if seq == 0 else []})
    lines.append({"k": "end", "ts": 1_763_780_100.0, "end": {"exit_code": 0, "exit_signal": None}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_a_spool_from_before_the_new_fields_loads_with_them_null(tmp_path):
    path = tmp_path / "n1.1.jsonl"
    write_spool(path, OLD_FIELDS)
    with Store(":memory:") as store:
        loaded = load_spool(store, path)
        assert loaded.samples == 3
        rows = store.query("SELECT seq, rss_bytes, cpus_source, cpu_wait_s, mem_bytes, mem_source,"
                           " mem_peak_bytes FROM step_samples ORDER BY seq")
        assert rows[2] == (2, 300 * MiB, "affinity", None, None, None, None)
        procs = store.query("SELECT nthreads, cpu_wait_s, pss_bytes, cmdline FROM process_samples"
                            " WHERE seq = 0")
        assert procs == [(1, None, None, "solver --x")]
        s = build_summary(store, ["old-1"], job_id=None, exit_code=0, exit_signal=None,
                          elapsed_s=30.0, time_limit_s=None, mem_requested_bytes=1 << 30)
        # Without the charged figure, the RSS sum is all there is, and the card says so.
        assert (s["peak_memory_bytes"], s["memory_source"], s["peak_rss_bytes"]) == (
            300 * MiB, "rss", 300 * MiB)
        # Loading it again replaces it, as with any spool.
        load_spool(store, path)
        assert store.one("SELECT count(*) FROM step_samples")[0] == 3


def test_spool_rows_are_read_by_the_names_the_session_line_gives(tmp_path):
    path = tmp_path / "n1.1.jsonl"
    shuffled = {"steps": [*reversed(spool.FIELDS["steps"]), "from_the_future"],
                "procs": spool.FIELDS["procs"][::-1], "gpus": spool.FIELDS["gpus"]}
    write_spool(path, shuffled)
    with Store(":memory:") as store:
        load_spool(store, path)
        row = store.one("SELECT step, nprocs, rss_bytes, cpu_wait_s, mem_bytes, mem_source"
                        " FROM step_samples WHERE seq = 1")
        assert row == ("local", 2, 200 * MiB, 1.5, 99, "pss")   # an unknown field is left out
        assert store.one("SELECT pid, pss_bytes FROM process_samples WHERE seq = 1") == (101, 7)


def test_a_batch_of_an_old_format_session_is_read_by_its_stored_fields(tmp_path):
    path = tmp_path / "n1.1.jsonl"
    write_spool(path, OLD_FIELDS, samples=2)
    lines = path.read_text().splitlines()
    with Store(":memory:") as store:
        apply_lines(store, lines[:2])          # the session line and the first sample
        applied = apply_lines(store, lines[2:], session_id="old-1")   # no session line here
        assert applied.accepted == 2 and applied.ended
        assert store.query("SELECT seq, rss_bytes, mem_bytes FROM step_samples ORDER BY seq") == [
            (0, 100 * MiB, None), (1, 200 * MiB, None)]


def test_a_spool_without_a_field_the_store_needs_is_refused(tmp_path):
    path = tmp_path / "n1.1.jsonl"
    write_spool(path, {**OLD_FIELDS, "steps": OLD_FIELDS["steps"][1:]})   # no "step"
    with Store(":memory:") as store, pytest.raises(SpoolRefused):
        load_spool(store, path)
    bad = tmp_path / "bad.jsonl"
    write_spool(bad, {**OLD_FIELDS, "procs": ["pid", "pid"]})
    with Store(":memory:") as store, pytest.raises(SpoolRefused, match="fields of its procs"):
        load_spool(store, bad)


# -- runs that measured nothing ------------------------------------------------------------------
def test_a_run_that_ended_before_a_sample_says_nothing_was_measured(tmp_path):
    done = turingwatch_run(tmp_path, "-i", "5", "-o", "out", "--", "true")
    assert done.returncode == 0, done.stderr
    s = json.loads((tmp_path / "out/summary.json").read_text())
    why = s["not_measured"]
    assert why.startswith("the job ended after ") and "before a sample found it" in why
    for key in ("peak_rss_bytes", "peak_memory_bytes", "memory_source", "cpu_user_s", "cpu_system_s",
                "cpu_efficiency", "mem_used_share"):
        assert s[key] is None, key
    assert s["cores_in_use"]["mean"] is None and s["cores_in_use"]["distribution"] == []
    assert s["steps"][0]["peak_memory_bytes"] is None and s["steps"][0]["cpu_user_s"] is None
    assert s["exit_code"] == 0 and s["elapsed_s"] is not None   # what the watcher knows
    assert "Measured     nothing: the job ended after" in done.stderr
    assert "0 B" not in done.stderr and "core-s" not in done.stderr
    html = (tmp_path / "out/report.html").read_text()
    assert "not measured" in html and "before a sample found it" in html
    assert s["findings"] == []


def _unmeasured_spool(path: Path, rounds: int) -> None:
    """A long session whose rounds found none of the job's processes: the watcher alone."""
    w = spool.SpoolWriter(path)
    w.write_session(_session("blind-1"))
    for seq in range(rounds):
        step = StepSample("local", 0, 0, 0.0, 0.0, 0, 0, None, None, 0, 0, 0, 0, 0, 0, 4, "affinity",
                          None, 0, "rss", None)
        w.write_sample(SampleRecord(seq, 1_763_780_000.0 + 10 * seq, [step], [], [], []))
    w.write_end(1_763_780_000.0 + 10 * rounds, {"exit_code": 0, "exit_signal": None})
    w.close()


def test_a_session_that_never_saw_the_job_is_not_judged_as_idle(tmp_path):
    path = tmp_path / "blind.jsonl"
    _unmeasured_spool(path, 60)
    with Store(":memory:") as store:
        load_spool(store, path)
        s = build_summary(store, ["blind-1"], job_id=None, exit_code=0, exit_signal=None,
                          elapsed_s=600.0, time_limit_s=None, mem_requested_bytes=1 << 30)
        assert s["not_measured"] == "no sample found a process of the job in 60 rounds over 10\u00a0min"
        assert s["peak_memory_bytes"] is None and s["cpu_efficiency"] is None
        card = render_card(s)
        assert "peak 0 B" not in card and "0.0 core-s" not in card and "Steps" not in card
        # Zeros from rounds that saw nothing are no evidence of idleness or of a small footprint.
        findings = analyze_session(store, load_config(None, environ={}), ["blind-1"])
        assert findings == []


# -- the memory rules judge the charged figure ---------------------------------------------------
def _forked_spool(path: Path, sid: str, *, charged: int | None, rss: int, rounds: int = 40) -> None:
    """A local run of three processes, RSS sum `rss`, charged `charged` (None: an old spool)."""
    w = spool.SpoolWriter(path)
    w.write_session({**_session(sid), "mem_requested_bytes": 1 << 30})
    for seq in range(rounds):
        step = StepSample("local", 3, 3, 5.0 * seq, 0.1 * seq, rss, rss // 3, 101, "python", 0, 0, 0, 0,
                          0, 0, 4, "affinity", 0.0, charged, "pss" if charged is not None else None, None)
        w.write_sample(SampleRecord(seq, 1_763_780_000.0 + 10 * seq, [step], [], [], []))
    w.write_end(1_763_780_000.0 + 10 * rounds, {"exit_code": 0, "exit_signal": None})
    w.close()


def test_forked_workers_are_not_a_memory_oversubscription(tmp_path):
    config = load_config(None, environ={})
    with Store(":memory:") as store:
        _forked_spool(tmp_path / "new.jsonl", "forked-new", charged=330 * MiB, rss=990 * MiB)
        _forked_spool(tmp_path / "old.jsonl", "forked-old", charged=None, rss=990 * MiB)
        load_spool(store, tmp_path / "new.jsonl")
        load_spool(store, tmp_path / "old.jsonl")
        new = {f.rule: f for f in analyze_session(store, config, ["forked-new"])}
        old = {f.rule: f for f in analyze_session(store, config, ["forked-old"])}
    # 990 MiB of RSS summed over three processes that share 2/3 of it: 330 MiB charged.
    assert "memory_oversubscription" not in new
    # A spool with the RSS sum only is judged by it, as before, and says so.
    assert old["memory_oversubscription"].metrics["source"] == "rss"
    assert old["memory_oversubscription"].metrics["peak_memory_bytes"] == 990 * MiB
