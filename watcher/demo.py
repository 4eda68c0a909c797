"""A small demo job for `turingwatch run -- python -m watcher.demo`: it wastes on purpose.

It asks for every core of the machine but keeps only some busy, holds memory it hardly
touches again, and leaves a quiet tail, so the report card has something to say. It takes
a little over a minute (``--seconds`` to change): the efficiency rules judge jobs of 60 s or more.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time


def _burn(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    x = 0
    while time.monotonic() < deadline:
        x += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=64.0)
    parser.add_argument("--memory-mib", type=int, default=256)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    phase = args.seconds / 4

    print(f"demo: {cores} cores available; holding {args.memory_mib} MiB", flush=True)
    block = bytearray(args.memory_mib * 2**20)
    for i in range(0, len(block), 4096):  # touch every page so it is really resident
        block[i] = 1

    print(f"demo: {phase:.0f} s on one core (a serial phase)", flush=True)
    _burn(phase)
    workers = max(1, cores // 2)
    print(f"demo: {2 * phase:.0f} s on {workers} worker process(es)", flush=True)
    with multiprocessing.Pool(workers) as pool:
        pool.map(_burn, [2 * phase] * workers)
    print(f"demo: {phase:.0f} s idle (waiting on nothing)", flush=True)
    time.sleep(phase)
    print("demo: done", flush=True)


if __name__ == "__main__":
    main()
