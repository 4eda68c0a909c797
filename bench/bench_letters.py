"""Benchmark: render the letters of every user of the synthetic week, with their charts.

    .venv/bin/python bench/bench_letters.py [--store /tmp/week.duckdb] [--scale 0.1]

Analyzes ISO week 2026-W47 of a synthetic store (bench/synthetic_week.py: 500 users; made in
a temporary directory at ``--scale`` unless ``--store`` names an existing one), then times,
over the same reports:

* the baseline: every letter without charts (Jinja, CSS inlining, plain text);
* every letter with its charts (the goal of issue 4: at most 30 s for 500 users);
* the whole period bundle (letters with charts, report JSON, gzip, atomic rename);

and reports letters per second and the sizes that decide whether a letter fits an inbox: the
HTML part (Gmail clips it at about 102 KB; issue 12 wants it under 100,000 bytes) as min /
median / max, and the widest line of the text part (78 columns at most).

The analysis itself is timed too but is not part of the goal. (``timed`` returns the result
and the seconds it took, hence ``reports, _ = timed(...)``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_week import generate

from watcher.analysis.engine import analyze_period
from watcher.analysis.periods import parse_period
from watcher.analysis.rules import load_rules
from watcher.config import load_config
from watcher.letters import render_letter
from watcher.letters.bundle import write_bundle
from watcher.store import Store

GOAL_S = 30.0
HTML_MAX = 100_000
T = TypeVar("T")


def timed(label: str, work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = work()
    took = time.perf_counter() - started
    print(f"{label:<34} {took:7.2f} s", flush=True)
    return result, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="an existing synthetic store to reuse")
    parser.add_argument("--scale", type=float, default=0.1,
                        help="job count scale when generating a store (1.0: 100k jobs)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-letters-") as tmp:
        store_path = args.store
        if store_path is None or not store_path.exists():
            store_path = store_path or Path(tmp) / "week.duckdb"
            timed(f"generate week (scale {args.scale})",
                  lambda: generate(store_path, scale=args.scale, progress=False))
        config = load_config(None, environ={
            "TURINGWATCH_ANALYSIS_RESULT_DIR": str(Path(tmp) / "analysis_result"),
            "TURINGWATCH_SITE_NAME": "Synthetic cluster",
            "TURINGWATCH_LETTERS_NEWS": "The new A100 partition is open.",
        })
        period = parse_period("2026-W47", "week", "UTC")
        with Store(store_path) as store:
            reports, _ = timed("analyze period", lambda: analyze_period(store, config, period))
        rules = {r.id: r for r in load_rules(config).rules}
        users = len(reports)
        jobs = sum(len(r.jobs) for r in reports)
        findings = sum(len(r.findings) for r in reports)
        print(f"{users} users, {jobs:,} jobs, {findings:,} findings")

        plain = dataclasses.replace(
            config, letters=dataclasses.replace(config.letters, charts=False))
        _, base = timed("letters without charts (baseline)",
                        lambda: [render_letter(r, rules, plain) for r in reports])
        letters, full = timed("letters with charts",
                              lambda: [render_letter(r, rules, config) for r in reports])
        path, whole = timed("bundle (letters, JSON, gzip)",
                             lambda: write_bundle(config, period, reports, rules))

        html_kb = statistics.mean(len(x.html) for x in letters) / 1024
        sizes = sorted(len(x.html.encode()) for x in letters)
        widest = max(len(line) for x in letters for line in x.text.splitlines())
        over = sum(1 for size in sizes if size >= HTML_MAX)
        image_kb = statistics.mean(sum(map(len, x.images.values())) for x in letters) / 1024
        charts = sum(len(x.images) for x in letters)
        print()
        print(f"per letter: {1000 * full / users:.1f} ms with charts, "
              f"{1000 * base / users:.1f} ms without; charts cost x{full / base:.2f}")
        print(f"{charts} charts; mean letter {html_kb:.0f} KiB HTML + {image_kb:.0f} KiB PNG; "
              f"bundle {path.stat().st_size / 2**20:.1f} MiB in {whole:.1f} s")
        print(f"{users / full:.0f} letters/s with charts, {users / base:.0f} without")
        print(f"HTML part: min {sizes[0]:,} median {statistics.median(sizes):,.0f} max "
              f"{sizes[-1]:,} bytes; {over} at or over {HTML_MAX:,}; widest text line {widest}")
        verdict = "meets" if full <= GOAL_S else "MISSES"
        print(f"{users} letters with charts in {full:.1f} s: {verdict} the goal of "
              f"{GOAL_S:.0f} s for 500 users")


if __name__ == "__main__":
    main()
