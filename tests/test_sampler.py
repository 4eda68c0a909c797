"""Step totals from a fake /proc: reaped children, vanished processes, children-only pids."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.sampling import procfs
from watcher.sampling.sampler import Sampler, StepProcesses

TICK = 1 / procfs.CLOCK_TICKS


class FakeProc:
    """A /proc tree whose processes the test edits between sample rounds."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, pid, ppid, *, comm="work", utime=0, stime=0, cutime=0, cstime=0, minflt=0,
            rss_pages=100, start=1000, threads=1, rchar=0, read_bytes=0):
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        fields = [
            "S", ppid, pid, pid, 0, -1, 4194304, minflt, 0, 0, 0, utime, stime, cutime, cstime,
            20, 0, threads, 0, start, 1 << 20, rss_pages,
        ]
        (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(map(str, fields)) + " 0 0\n")
        (d / "io").write_text(
            f"rchar: {rchar}\nwchar: 0\nsyscr: 0\nsyscw: 0\nread_bytes: {read_bytes}\n"
            "write_bytes: 0\ncancelled_write_bytes: 0\n"
        )
        (d / "cmdline").write_bytes(comm.encode() + b"\0--flag\0")

    def drop(self, pid):
        for f in (self.root / str(pid)).iterdir():
            f.unlink()
        (self.root / str(pid)).rmdir()


class ListedSource:
    def __init__(self, steps):
        self.current = steps

    def steps(self):
        return self.current


@pytest.fixture
def proc(tmp_path):
    return FakeProc(tmp_path)


def sampler_for(proc, steps):
    return Sampler(ListedSource(steps), proc_root=str(proc.root), clock=iter(range(100)).__next__)


def test_step_sums_and_largest_process(proc):
    proc.put(10, 1, comm="bash", utime=100, rss_pages=10)
    proc.put(11, 10, comm="solver", utime=300, stime=50, rss_pages=1000, threads=8, rchar=7)
    rec = sampler_for(proc, {"batch": StepProcesses([10, 11], cpus_available=4, cpus_source="slurm")}).sample()
    (step,) = rec.steps
    assert step.step == "batch" and step.nprocs == 2 and step.nthreads == 9
    assert step.cpu_user_s == pytest.approx(400 * TICK) and step.cpu_system_s == pytest.approx(50 * TICK)
    assert step.rss_bytes == 1010 * procfs.PAGE_SIZE
    assert (step.largest_pid, step.largest_comm) == (11, "solver")
    assert step.cpus_available == 4 and step.rchar == 7
    assert {c[2] for c in rec.cmdlines} == {"bash --flag", "solver --flag"}


def test_reaped_child_moves_into_parent_without_loss(proc):
    proc.put(10, 1, utime=100)
    proc.put(11, 10, utime=500)
    sampler = sampler_for(proc, {"0": StepProcesses([10, 11])})
    first = sampler.sample().steps[0].cpu_user_s
    # The child exits and its parent reaps it: its time shows up in the parent's cutime.
    proc.drop(11)
    proc.put(10, 1, utime=100, cutime=520)
    sampler.source.current = {"0": StepProcesses([10])}
    second = sampler.sample().steps[0].cpu_user_s
    assert first == pytest.approx(600 * TICK) and second == pytest.approx(620 * TICK)


def test_process_gone_without_sampled_parent_keeps_its_time(proc):
    proc.put(20, 1, utime=100)
    proc.put(21, 1, utime=700)   # re-parented to init: nobody we sample will reap it
    sampler = sampler_for(proc, {"0": StepProcesses([20, 21])})
    sampler.sample()
    proc.drop(21)
    sampler.source.current = {"0": StepProcesses([20])}
    assert sampler.sample().steps[0].cpu_user_s == pytest.approx(800 * TICK)


def test_children_only_counts_reaped_work_not_its_own(proc):
    proc.put(30, 1, comm="turingwatch", utime=50, cutime=900, minflt=99)
    rec = sampler_for(proc, {"local": StepProcesses([30], children_only={30})}).sample()
    (step,) = rec.steps
    assert step.cpu_user_s == pytest.approx(900 * TICK)
    assert step.nprocs == 0 and rec.processes == []


def test_counters_never_go_back(proc):
    proc.put(40, 1, utime=300)
    sampler = sampler_for(proc, {"0": StepProcesses([40])})
    sampler.sample()
    proc.put(40, 1, utime=100)   # a parent ignoring SIGCHLD loses its children's times
    assert sampler.sample().steps[0].cpu_user_s == pytest.approx(300 * TICK)


def test_idle_samples_are_kept_and_ended_steps_dropped(proc):
    proc.put(50, 1, utime=10)
    proc.put(60, 1, utime=10)
    sampler = sampler_for(proc, {"0": StepProcesses([50]), "1": StepProcesses([60])})
    a, b = sampler.sample(), sampler.sample()
    assert [s.step for s in a.steps] == [s.step for s in b.steps] == ["0", "1"]
    assert b.seq == a.seq + 1
    proc.drop(60)   # step 1 ended on this node; it is listed (stale) but nothing is left
    assert [s.step for s in sampler.sample().steps] == ["0"]


def test_vanished_between_listing_and_reading(proc):
    proc.put(70, 1, utime=10)
    rec = sampler_for(proc, {"0": StepProcesses([70, 71])}).sample()
    assert rec.steps[0].nprocs == 1


def test_gpu_errors_do_not_break_a_round(proc):
    class BrokenGpu:
        status = "ok"

        def sample(self, job_pids):
            raise RuntimeError("driver went away")

    proc.put(80, 1)
    s = Sampler(ListedSource({"0": StepProcesses([80])}), BrokenGpu(), proc_root=str(proc.root))
    assert s.sample().gpus == []


def test_idle_processes_keep_their_io_reading(proc):
    proc.put(90, 1, utime=10, rchar=100)
    sampler = sampler_for(proc, {"0": StepProcesses([90])})
    assert sampler.sample().steps[0].rchar == 100
    proc.put(90, 1, utime=10, rchar=999)   # no CPU time moved: io is not read again
    assert sampler.sample().steps[0].rchar == 100
    proc.put(90, 1, utime=11, rchar=999)   # it ran: read again, nothing lost (cumulative)
    assert sampler.sample().steps[0].rchar == 999
    sampler.skip_idle_io = False
    proc.put(90, 1, utime=11, rchar=1500)
    assert sampler.sample().steps[0].rchar == 1500


def test_own_reaped_history_before_watching_is_not_the_jobs(proc):
    proc.put(30, 1, comm="turingwatch", cutime=700)   # a shell ran pip, then exec'd us
    s = Sampler(ListedSource({"local": StepProcesses([30], children_only={30})}),
                proc_root=str(proc.root), own_pid=30)
    assert s.sample().steps[0].cpu_user_s == 0
    proc.put(30, 1, comm="turingwatch", cutime=900)   # we reaped the job's command
    assert s.sample().steps[0].cpu_user_s == pytest.approx(200 * TICK)


def test_workers_reaped_by_a_parent_that_then_vanished_are_not_counted_twice(proc):
    proc.put(30, 1, comm="turingwatch")
    proc.put(31, 30, comm="pool", utime=10)
    proc.put(32, 31, comm="worker", utime=100)
    sampler = Sampler(ListedSource({"local": StepProcesses([30, 31, 32], children_only={30})}),
                      proc_root=str(proc.root), own_pid=30)
    assert sampler.sample().steps[0].cpu_user_s == pytest.approx(110 * TICK)
    # Within one interval the pool reaped its worker, exited, and the watcher reaped the pool.
    proc.drop(32)
    proc.drop(31)
    proc.put(30, 1, comm="turingwatch", cutime=115)
    sampler.source.current = {"local": StepProcesses([30], children_only={30})}
    assert sampler.sample().steps[0].cpu_user_s == pytest.approx(115 * TICK)


def test_orphans_that_vanish_with_no_sampled_ancestor_keep_their_time(proc):
    proc.put(41, 1, comm="parent", utime=10)
    proc.put(42, 41, comm="orphan", utime=100)
    sampler = sampler_for(proc, {"0": StepProcesses([41, 42])})
    sampler.sample()
    proc.drop(41)
    proc.drop(42)   # both gone, reaped by init (not sampled): their time is kept
    proc.put(43, 1, comm="other", utime=0)
    sampler.source.current = {"0": StepProcesses([43])}
    assert sampler.sample().steps[0].cpu_user_s == pytest.approx(110 * TICK)


def test_other_watchers_are_not_the_jobs_work(proc):
    proc.put(50, 1, comm="turingwatch", utime=300)   # an attach beside the run
    proc.put(51, 1, comm="solver", utime=100)
    step = sampler_for(proc, {"0": StepProcesses([50, 51])}).sample().steps[0]
    assert step.cpu_user_s == pytest.approx(100 * TICK) and step.nprocs == 1
