"""Jobs leave their spools in a shared directory; `turingwatch ingest` loads them into the site store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent


def turingwatch(cwd, *args, env):
    return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_spools_reach_the_site_store_once(tmp_path):
    site = tmp_path / "site-spool"
    site.mkdir()
    env = {"TURINGWATCH_SAMPLER_SITE_SPOOL_DIR": str(site),
           "TURINGWATCH_STORE_PATH": str(tmp_path / "site.duckdb")}
    for name in ("a", "b"):
        done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", name, "--", "sleep", "1", env=env)
        assert done.returncode == 0, done.stderr
    left = sorted(p.name for p in site.glob("*.jsonl"))
    assert len(left) == 2 and all(name.startswith("local-") for name in left)

    (site / "junk.jsonl").write_text("not a spool\n")
    first = turingwatch(tmp_path, "ingest", env=env)
    assert first.returncode == 1 and "skipped" in first.stderr and "junk.jsonl" in first.stderr
    assert sorted(p.name for p in (site / "loaded").iterdir()) == left
    again = turingwatch(tmp_path, "ingest", "--keep", str(tmp_path / "a"), env=env)  # an output dir
    assert again.returncode == 0, again.stderr

    conn = duckdb.connect(str(tmp_path / "site.duckdb"), read_only=True)
    sessions = conn.execute("SELECT count(*), count(ended_at) FROM sessions").fetchone()
    samples = conn.execute("SELECT count(DISTINCT session_id) FROM step_samples").fetchone()
    assert sessions == (2, 2) and samples == (2,)


def test_ingest_needs_somewhere_to_look(tmp_path):
    done = turingwatch(tmp_path, "ingest", env={"TURINGWATCH_STORE_PATH": str(tmp_path / "s.duckdb")})
    assert done.returncode == 2 and "site_spool_dir" in done.stderr
