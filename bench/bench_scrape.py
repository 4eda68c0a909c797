"""What the node scraper costs: 64 jobs x 8 processes, against the raw /proc read floor.

    .venv/bin/python bench/bench_scrape.py            # 64 jobs x 8 processes, 30 rounds
    .venv/bin/python bench/bench_scrape.py --quick    # fewer rounds, for a smoke run
    .venv/bin/python bench/bench_scrape.py --jobs 16 --procs 4

The jobs are faked: 512 real sleeping processes, grouped under a fake cgroup v2 tree (one
``job_<J>/step_batch/user/task_0/cgroup.procs`` per job, in a temporary directory) so that
the scraper finds them the way it does on a node with Slurm's cgroup/v2 plugin, while reading
the real /proc. One round of the scraper (one /proc scan, every job's finder, 64 samplers,
64 spool lines) is timed in CPU seconds, rounds 10 s apart on the samplers' clocks (so PSS is
paced as it would be); the floor, measured in the same run and interleaved, only reads every
/proc/<pid>/stat once and each job process's io, the way bench_sampler's does.

Reports the scraper's CPU per 10 s interval as % of one core (goal < 0.5 %), its resident
memory (goal < 50 MiB; this process: Python, the scraper, the fake jobs' bookkeeping), and
the ratio to the floor. Nothing is asserted.
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

from bench_sampler import raw_floor  # noqa: E402  (the same floor: one read of each file)

from watcher.sampling.node_jobs import NodeJobs  # noqa: E402
from watcher.watch.scrape import Scraper  # noqa: E402

INTERVAL_S = 10.0


def fake_cgroups(root: Path, jobs: dict[int, list[int]]) -> None:
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    scope = root / "system.slice" / "slurmstepd.scope"
    for job_id, pids in jobs.items():
        task = scope / f"job_{job_id}" / "step_batch" / "user" / "task_0"
        task.mkdir(parents=True)
        (task / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))
        (scope / f"job_{job_id}" / "step_batch" / "slurm").mkdir()
        (scope / f"job_{job_id}" / "step_batch" / "slurm" / "cgroup.procs").write_text("")


def cpu_of(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds

    sleepers = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.jobs * args.procs)]
    try:
        time.sleep(0.3)
        pids = [p.pid for p in sleepers]
        jobs = {1000 + j: pids[j * args.procs:(j + 1) * args.procs] for j in range(args.jobs)}
        with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
            cgroups = Path(tmp) / "cgroup"
            cgroups.mkdir()
            fake_cgroups(cgroups, jobs)
            rss_before = rss_mib()
            now = [time.time()]
            scraper = Scraper(spool_dir=Path(tmp) / "spool", interval_s=INTERVAL_S,
                              jobs=NodeJobs("/proc", str(cgroups), ignore_pids={os.getpid()}),
                              clock=lambda: now[0])
            first_s = cpu_of(scraper.round)   # opens 64 sessions, first sightings
            assert len(scraper.sessions) == args.jobs, sorted(scraper.sessions)
            for session in scraper.sessions.values():   # rounds 10 s apart for PSS pacing
                session.sampler.memory.clock = lambda: now[0]

            def round_() -> None:
                now[0] += INTERVAL_S
                scraper.round()

            scrape_s, floor_s = [], []
            for _ in range(rounds):   # interleaved: a neighbour's burst falls on both alike
                scrape_s.append(cpu_of(round_))
                floor_s.append(cpu_of(lambda: raw_floor(pids)))
            rss_after = rss_mib()
            scraper.close_all("bench over")
            spool_bytes = sum(p.stat().st_size for p in (Path(tmp) / "spool").glob("*.jsonl"))
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()

    per_round = statistics.median(scrape_s)
    floor = statistics.median(floor_s)
    n = args.jobs * args.procs
    print(f"node scraper: {args.jobs} jobs x {args.procs} processes ({n}), {rounds} rounds, "
          f"interval {INTERVAL_S:g} s")
    print(f"  first round (opens {args.jobs} sessions): {first_s * 1e3:8.1f} ms CPU")
    print(f"  round, median:                {per_round * 1e3:8.1f} ms CPU  "
          f"= {100 * per_round / INTERVAL_S:.3f} % of one core at {INTERVAL_S:g} s (goal < 0.5 %)")
    print(f"  raw /proc read floor:         {floor * 1e3:8.1f} ms CPU  "
          f"(every /proc/*/stat + {n} io); scraper / floor = {per_round / floor:.1f}x")
    print(f"  per process:                  {per_round / n * 1e6:8.1f} us  (floor {floor / n * 1e6:.1f} us)")
    print(f"  RSS: {rss_after:.1f} MiB (goal < 50 MiB; {rss_before:.1f} MiB before the scraper, "
          f"bench's Python included)")
    print(f"  spools: {spool_bytes / (rounds + 1) / 1024:.1f} KiB per round for all jobs")


if __name__ == "__main__":
    main()
