"""Generate a synthetic cluster week into a turingwatch store.

Default size (``--scale 1``): 1000 nodes, 100k jobs, 500 users, about 20M step samples and GPU
samples for 10 % of the jobs, in ISO week 2026-W47. ``--scale`` multiplies jobs (and so samples);
users and nodes stay. All of it is made by DuckDB SQL (synthetic_week.sql) from a seed, so the
same arguments give the same store.

    .venv/bin/python bench/synthetic_week.py /tmp/week.duckdb [--scale 0.5] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from watcher.store import Store

WEEK_START = datetime(2026, 11, 16, tzinfo=UTC)
SQL = Path(__file__).with_name("synthetic_week.sql")


def statements(text: str) -> dict[str, str]:
    """The statements of a .sql file under its ``-- name: <id>`` markers."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("-- name:"):
            current = line.split(":", 1)[1].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in out.items()}


def generate(
    path: Path,
    *,
    scale: float = 1.0,
    seed: int = 1,
    jobs: int = 100_000,
    users: int = 500,
    nodes: int = 1000,
    mean_samples: int = 183,
    gpu_share: float = 0.1,
    interval_s: float = 30.0,
    progress: bool = True,
) -> dict[str, int]:
    """Write the week into a new store at ``path``; return the row counts."""
    if path.exists():
        raise SystemExit(f"{path} exists; give a new file")
    with Store(path) as store, store.cursor() as conn:
        conn.execute(
            "CREATE TEMP TABLE gen AS SELECT ?::BIGINT AS seed, ?::BIGINT AS jobs,"
            " ?::INTEGER AS users, ?::INTEGER AS nodes, ?::DOUBLE AS mean_samples,"
            " ?::DOUBLE AS gpu_share, ?::DOUBLE AS interval_s, ?::TIMESTAMPTZ AS week_start",
            [seed, round(jobs * scale), users, nodes, mean_samples, gpu_share, interval_s,
             WEEK_START],
        )
        started = time.monotonic()
        for name, sql in statements(SQL.read_text()).items():
            conn.execute(sql)
            if progress:
                print(f"  [{time.monotonic() - started:6.1f} s] {name}", file=sys.stderr)
        conn.execute("CHECKPOINT")
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("jobs", "job_steps", "sessions", "step_samples", "process_samples",
                          "gpu_samples")
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="the new store file (under /tmp, not the repo)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the job count")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--mean-samples", type=int, default=183, help="samples per job step")
    parser.add_argument("--gpu-share", type=float, default=0.1, help="share of jobs with GPUs")
    args = parser.parse_args()
    started = time.monotonic()
    counts = generate(
        args.store, scale=args.scale, seed=args.seed, jobs=args.jobs, users=args.users,
        nodes=args.nodes, mean_samples=args.mean_samples, gpu_share=args.gpu_share,
    )
    took = time.monotonic() - started
    print(f"generated {args.store} in {took:.1f} s: "
          + ", ".join(f"{n:,} {t}" for t, n in counts.items()))


if __name__ == "__main__":
    main()
