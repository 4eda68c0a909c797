"""Benchmark: analyse every user of a synthetic cluster week, at 0.5×, 1× and 2× the data.

For each scale it generates the week (bench/synthetic_week.py, timed; reused with --reuse),
then runs the period analysis for all users (best of --repeat runs; the one-minute load
average is printed with them) and reports wall time, time per million step samples, and
growth against the previous scale.
The target is ≤ 60 s at 1× on the 2-core reference machine, and growth at most linear.

    .venv/bin/python bench/bench_analysis.py [--scales 0.5,1,2] [--dir /tmp] [--reuse]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_week import generate

from watcher.analysis.engine import analyze_period
from watcher.analysis.periods import parse_period
from watcher.config import load_config
from watcher.store import Store

WEEK = "2026-W47"


def run_scale(scale: float, directory: Path, reuse: bool, repeat: int) -> dict[str, float]:
    path = directory / f"turingwatch-week-{scale:g}x.duckdb"
    generated = None
    if not (reuse and path.exists()):
        path.unlink(missing_ok=True)
        started = time.monotonic()
        generate(path, scale=scale, progress=False)
        generated = time.monotonic() - started
    config = load_config(None, environ={})
    # The best of `repeat` runs: the machine is shared, and a neighbour's burst is not our cost.
    times = []
    with Store(path) as store:
        samples = store.one("SELECT count(*) FROM step_samples")[0]
        for _ in range(repeat):
            started = time.monotonic()
            reports = analyze_period(store, config, parse_period(WEEK))
            times.append(time.monotonic() - started)
    analysed = min(times)
    return {
        "scale": scale,
        "samples": samples,
        "generate_s": generated,
        "analyse_s": analysed,
        "runs": ", ".join(f"{t:.1f}" for t in times),
        "load": os.getloadavg()[0],
        "users": len(reports),
        "findings": sum(len(r.findings) for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0.5,1,2", help="comma-separated data scales")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where stores are written")
    parser.add_argument("--reuse", action="store_true", help="reuse stores already generated")
    parser.add_argument("--repeat", type=int, default=2, help="analysis runs per scale (best)")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]

    results = []
    for scale in scales:
        print(f"scale {scale:g}× …", file=sys.stderr, flush=True)
        results.append(run_scale(scale, args.dir, args.reuse, args.repeat))

    print(f"{'scale':>6} {'step samples':>13} {'generate s':>11} {'analyse s':>10}"
          f" {'s / M samples':>14} {'users':>6} {'findings':>9}  runs (load)")
    for r in results:
        gen = f"{r['generate_s']:.1f}" if r["generate_s"] is not None else "reused"
        per_m = r["analyse_s"] / (r["samples"] / 1e6)
        print(f"{r['scale']:>5g}× {r['samples']:>13,} {gen:>11} {r['analyse_s']:>10.1f}"
              f" {per_m:>14.2f} {r['users']:>6} {r['findings']:>9,}  {r['runs']} ({r['load']:.1f})")
    for before, after in itertools.pairwise(results):
        data = after["samples"] / before["samples"]
        took = after["analyse_s"] / before["analyse_s"]
        verdict = "at most linear" if took <= data * 1.05 else "SUPERLINEAR"
        print(f"{before['scale']:g}× → {after['scale']:g}×: data ×{data:.2f},"
              f" time ×{took:.2f} ({verdict})")


if __name__ == "__main__":
    main()
