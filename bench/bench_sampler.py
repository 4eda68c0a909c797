"""What sampling costs, against the floor of reading the same /proc files directly.

    .venv/bin/python bench/bench_sampler.py            # 10, 100, 1000 processes + watcher cost
    .venv/bin/python bench/bench_sampler.py --quick    # fewer rounds, for a smoke run

Part 1, per process-sample: the sampler's round (find the tree in one pass over /proc, parse
stat and io, sum per step, encode the spool line) against a baseline measured in the same
run that only reads the same files with os.open/os.read (every /proc/*/stat once, and io of
the job's processes). Goal: ≤ 1.5× the floor. A second floor reads the same files the way
the sampler does, by pread on descriptors held open (procfs.ProcFiles): the ratio to it is
what parsing, summing and spooling cost on top of the reads themselves.

Part 2, the watcher while a 64-process job runs: `turingwatch run --interval 1` over 64
processes; its own CPU share (its utime+stime, not its children's) and its resident memory
while sampling. Goals: ≤ 0.5% of one core, RSS ≤ 30 MB.

Part 3, what PSS costs (watcher/sampling/memory.py): reading /proc/<pid>/smaps_rollup walks the
process's page tables, so it is measured on two kinds of job: `sleep` processes (small), and a
Python process holding 64 MiB it touched, forked into N processes that share it (the case PSS
is for). Per round at 10/100/1000 processes: the sampler without PSS, the sampler reading every
process's smaps_rollup every round, and the sampler as it runs (rounds 10 s apart on its clock:
paced readings, the PSS/RSS ratio kept in between); plus one smaps_rollup reading per process
and per MiB resident.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from watcher.sampling import procfs  # noqa: E402
from watcher.sampling.memory import MemoryMeter  # noqa: E402
from watcher.sampling.sampler import Sampler  # noqa: E402
from watcher.sampling.sources import TreeSource  # noqa: E402
from watcher.spool import SpoolWriter  # noqa: E402


def spawn_sleepers(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["sleep", "600"]) for _ in range(n)]


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    data = os.read(fd, 4096)
    os.close(fd)
    return data


def raw_floor(job_pids: list[int]) -> None:
    """Read, and only read, what one sampler round reads: no parsing, no bookkeeping."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            _read(f"/proc/{name}/stat")
    for pid in job_pids:
        _read(f"/proc/{pid}/io")


class HeldFloor:
    """The same reads through descriptors held open and re-read with pread: the floor of the
    way the sampler reads (procfs.ProcFiles), with nothing else."""

    def __init__(self, job_pids: list[int]) -> None:
        self.fds = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                self._hold(f"/proc/{name}/stat")
        for pid in job_pids:
            self._hold(f"/proc/{pid}/io")

    def _hold(self, path: str) -> None:
        try:
            self.fds.append(os.open(path, os.O_RDONLY))
        except OSError:
            pass

    def __call__(self) -> None:
        os.listdir("/proc")   # the sampler lists /proc every round to find new processes
        for fd in self.fds:
            try:
                os.pread(fd, 4096, 0)
            except OSError:
                pass

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def best_of(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    # The median of many rounds: robust to the other tenants of a shared machine.
    return statistics.median(times)


def per_process_cost(
    n: int, rounds: int, spool_dir: Path, skip_idle_io: bool
) -> tuple[float, float, float]:
    sleepers = spawn_sleepers(n)
    try:
        time.sleep(0.2)
        source = TreeSource()
        sampler = Sampler(source, read_cmdlines=False, skip_idle_io=skip_idle_io)
        writer = SpoolWriter(spool_dir / f"bench-{n}.jsonl")
        pids = [p.pid for p in sleepers]

        def round_() -> None:
            writer.write_sample(sampler.sample())

        round_()  # warm caches, first-sighting cmdlines, descriptors opened
        held = HeldFloor(pids)
        # Interleaved, so a neighbour's burst falls on all three alike.
        sampler_s = floor_s = held_s = 0.0
        for _ in range(3):
            sampler_s += best_of(round_, rounds)
            floor_s += best_of(lambda: raw_floor(pids), rounds)
            held_s += best_of(held, rounds)
        held.close()
        writer.close()
        return sampler_s / 3 / n, floor_s / 3 / n, held_s / 3 / n
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()


def _own_cpu_and_rss(pid: int) -> tuple[float, int]:
    st = procfs.read_stat(pid)
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return (st.utime + st.stime) / procfs.CLOCK_TICKS, rss_kib * 1024


def watcher_cost(nprocs: int, duration_s: float) -> tuple[float, int, int]:
    """Run the watcher at 1 s over `nprocs` processes; its CPU share and peak RSS meanwhile."""
    script = f"for i in $(seq {nprocs}); do sleep {duration_s + 5} & done; wait"
    with tempfile.TemporaryDirectory() as out:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--interval", "1", "--quiet",
             "--output", out, "--", "bash", "-c", script],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stderr=subprocess.DEVNULL,
        )
        time.sleep(3)  # start-up (imports) is not sampling
        cpu0, _ = _own_cpu_and_rss(watcher.pid)
        t0 = time.monotonic()
        peak_rss = 0
        while time.monotonic() - t0 < duration_s:
            time.sleep(1)
            _, rss = _own_cpu_and_rss(watcher.pid)
            peak_rss = max(peak_rss, rss)
        cpu1, _ = _own_cpu_and_rss(watcher.pid)
        share = (cpu1 - cpu0) / (time.monotonic() - t0)
        sampled = len(procfs.descendants(watcher.pid))
        watcher.wait()
    return share, peak_rss, sampled


# A Python process that touches `mib` MiB, forks `n - 1` children that only sleep (the pages
# stay shared), and sleeps itself: N processes sharing one big allocation.
_FORKER = """
import os, sys, time
n, mib = int(sys.argv[1]), int(sys.argv[2])
data = bytearray(mib << 20)
for i in range(0, len(data), 4096):
    data[i] = 1
for _ in range(n - 1):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
print("ready", flush=True)
time.sleep(600)
"""


def spawn_forked(n: int, mib: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _FORKER, str(n), str(mib)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    deadline = time.monotonic() + 60
    while len(procfs.descendants(os.getpid())) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc


def _kill_tree(root: int) -> None:
    for pid in [*procfs.descendants(root), root]:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


class SteppedClock:
    """The meter's clock, 10 s further on every round: the default interval, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pss_costs(kind: str, n: int, rounds: int) -> dict[str, float]:
    """Per round (s): without PSS, PSS of every process every round, and as it runs; and one
    smaps_rollup reading (s) per process, and per MiB resident."""
    if kind == "sleep":
        procs = spawn_sleepers(n)
        root = None
    else:
        procs = [spawn_forked(n, 64)]
        root = procs[0].pid
    try:
        time.sleep(0.2)
        source = TreeSource()
        files = procfs.ProcFiles()
        none = Sampler(source, read_cmdlines=False, files=files,
                       memory=MemoryMeter(files, share=0.0, burst_s=0.0))
        every = Sampler(source, read_cmdlines=False, files=files,
                        memory=MemoryMeter(files, share=1e9, burst_s=1e9, max_age_s=0.0))
        clock = SteppedClock()
        paced = Sampler(source, read_cmdlines=False, files=files, memory=MemoryMeter(files, clock=clock))
        for s in (none, every, paced):
            s.sample()  # first sightings, descriptors opened

        def paced_round() -> None:
            clock.now += 10.0
            paced.sample()

        # Interleaved, so a neighbour's burst falls on all three alike.
        none_s = every_s = 0.0
        for _ in range(3):
            none_s += best_of(none.sample, rounds)
            every_s += best_of(every.sample, rounds)
        # As it runs: the mean over 60 rounds (10 min of its clock), refreshes included.
        started = time.perf_counter()
        for _ in range(60):
            paced_round()
        paced_s = (time.perf_counter() - started) / 60
        pids = procfs.descendants(os.getpid())
        rss = sum((procfs.read_stat(pid).rss_pages if procfs.read_stat(pid) else 0) for pid in pids)
        rss_mib = rss * procfs.PAGE_SIZE / 2**20
        one = (every_s - none_s) / 3 / max(len(pids), 1)
        return {"none": none_s / 3, "every": every_s / 3, "paced": paced_s, "per_process": one,
                "per_mib": one * len(pids) / rss_mib if rss_mib else 0.0,
                "paced_reads": paced.memory.reads / 60}
    finally:
        if root is not None:
            _kill_tree(root)
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pss-only", action="store_true", help="part 3 alone")
    args = parser.parse_args()
    rounds = 5 if args.quick else 30
    print(f"turingwatch sampler benchmark (CLK_TCK {procfs.CLOCK_TICKS}, "
          f"{len(procfs.list_pids())} processes on the machine)")
    # "full": every process read as if busy (stat + io); "idle": as the sampler runs, where a
    # process whose CPU time did not move keeps its last io reading. The floor is the same
    # in both: every /proc/*/stat and the job's io files, read and not parsed.
    # Two floors: the plain open/read/close of each file (the goal's baseline), and pread on
    # descriptors held open, the way the sampler itself reads (its cost with nothing else).
    print(f"{'processes':>10} {'mode':>5} {'sampler µs/proc':>16} {'raw read µs/proc':>17} "
          f"{'ratio':>7} {'held-fd floor':>14} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as spool_dir:
        for n in () if args.pss_only else (10, 100, 1000):
            for mode, skip in (("full", False), ("idle", True)):
                sampler_s, floor_s, held_s = per_process_cost(n, rounds, Path(spool_dir), skip)
                print(f"{n:>10} {mode:>5} {sampler_s * 1e6:>16.1f} {floor_s * 1e6:>17.1f} "
                      f"{sampler_s / floor_s:>6.2f}× {held_s * 1e6:>14.1f} "
                      f"{sampler_s / held_s:>6.2f}×")
    duration = 10 if args.quick else 30
    share, rss, sampled = (0.0, 0, 0) if args.pss_only else watcher_cost(64, duration)
    print(f"watcher over {sampled} processes at 1 s for {duration} s: "
          f"{share * 100:.2f}% of one core, peak RSS {rss / 2**20:.1f} MiB "
          f"(goals: ≤ 0.5%, ≤ 30 MB)")
    print("PSS (smaps_rollup), per round; 'as it runs': rounds 10 s apart, paced readings")
    print(f"{'processes':>10} {'job':>14} {'no PSS ms':>10} {'PSS every round ms':>19} "
          f"{'as it runs ms':>14} {'reads/round':>12} {'µs/process':>11} {'µs/MiB':>7}")
    pss_rounds = 2 if args.quick else 5
    for kind in ("sleep", "fork64"):
        for n in (10, 100, 1000):
            c = pss_costs(kind, n, pss_rounds)
            label = "sleep" if kind == "sleep" else "forked, 64 MiB"
            print(f"{n:>10} {label:>14} {c['none'] * 1e3:>10.2f} {c['every'] * 1e3:>19.2f} "
                  f"{c['paced'] * 1e3:>14.2f} {c['paced_reads']:>12.1f} {c['per_process'] * 1e6:>11.1f} "
                  f"{c['per_mib'] * 1e6:>7.1f}")


if __name__ == "__main__":
    main()
