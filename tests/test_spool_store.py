"""The spool format, its loading into the store, and the store's migrations."""

from __future__ import annotations

import json

import duckdb
import pytest

from watcher import spool
from watcher.records import GpuReading, ProcessSample, SampleRecord, StepSample
from watcher.store import Store, StoreError, migrations
from watcher.store.spool_loader import apply_lines, load_spool


def _record(seq, cpu, rss, gpu_pids=(101,)):
    step = StepSample("batch", 2, 3, cpu, cpu / 10, rss, rss, 101, "solver", 1, 2, 3, 4, 5, 6, 4, "cpuset")
    proc = ProcessSample("batch", 101, 100, 555, "solver", cpu, 0.5, rss, 1, 2, 3, 4, 5, 6, 3)
    gpu = GpuReading(0, "GPU-abc", "H100", 55.0, 20.0, 1 << 30, 80 << 30, 300.5, 1000.0 + seq,
                     60.0, 1980.0, 0, list(gpu_pids), 0)
    return SampleRecord(seq, 1_763_780_000.0 + 10 * seq, [step], [proc], [gpu], [(101, 555, "solver --x")])


def _session(sid="s-1"):
    return {"session_id": sid, "job_id": 42, "cluster": "lab", "node": "n1", "mode": "run",
            "user_name": "alice", "command": "solver", "started_at": 1_763_780_000.0,
            "interval_s": 10.0, "cores_available": 4, "mem_requested_bytes": 1 << 30,
            "time_limit_s": None, "gpu_status": "ok", "watcher_version": "test", "meta": {}}


def write_spool(path, *, samples=3, end=True, torn=False):
    w = spool.SpoolWriter(path)
    w.write_session(_session())
    for i in range(samples):
        w.write_sample(_record(i, 10.0 * (i + 1), (i + 1) << 20, gpu_pids=() if i == 0 else (101,)))
    if end:
        w.write_end(1_763_780_100.0, {"exit_code": 3, "exit_signal": None, "time_limit_s": 3600})
    w.close()
    if torn:
        with path.open("a") as f:
            f.write('{"k":"sample","seq":9,"ts":17637')


def test_round_trip(tmp_path):
    path = tmp_path / "spool" / "n1.1.jsonl"
    write_spool(path)
    assert spool.has_ended(path)
    with Store(":memory:") as store:
        loaded = load_spool(store, path)
        assert (loaded.session_id, loaded.samples, loaded.ended) == ("s-1", 3, True)
        row = store.execute(
            "SELECT job_id, node, exit_code, time_limit_s, cores_available, epoch(ended_at) FROM sessions"
        ).fetchone()
        assert row == (42, "n1", 3, 3600, 4, 1_763_780_100.0)
        steps = store.execute(
            "SELECT seq, epoch(ts), step, cpu_user_s, rss_bytes, cpus_available FROM step_samples ORDER BY seq"
        ).fetchall()
        assert steps[2] == (2, 1_763_780_020.0, "batch", 30.0, 3 << 20, 4)
        gpus = store.execute("SELECT seq, power_w, energy_j, job_pids FROM gpu_samples ORDER BY seq").fetchall()
        assert gpus[0] == (0, 300.5, 1000.0, []) and gpus[1][3] == [101]
        cmd = store.execute("SELECT cmdline FROM process_samples WHERE seq = 0").fetchone()
        assert cmd == ("solver --x",)


def test_torn_last_line_and_no_end(tmp_path):
    path = tmp_path / "n1.jsonl"
    write_spool(path, end=False, torn=True)
    assert not spool.has_ended(path)
    with Store(":memory:") as store:
        loaded = load_spool(store, path)
        assert loaded.samples == 3 and not loaded.ended
        assert store.execute("SELECT ended_at FROM sessions").fetchone() == (None,)


def test_reloading_replaces(tmp_path):
    path = tmp_path / "n1.jsonl"
    write_spool(path)
    with Store(":memory:") as store:
        load_spool(store, path)
        load_spool(store, path)
        counts = [store.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("sessions", "step_samples", "process_samples", "gpu_samples")]
        assert counts == [1, 3, 3, 3]


def test_foreign_spool_is_refused(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"k": "session", "v": 99, "session": _session(), "fields": {}}) + "\n")
    with Store(":memory:") as store, pytest.raises(StoreError, match="format v99"):
        load_spool(store, path)
    path.write_text("not json\n")
    with Store(":memory:") as store, pytest.raises(StoreError, match="not a turingwatch spool"):
        load_spool(store, path)


def test_migrations_apply_once_and_newer_stores_are_refused(tmp_path):
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        latest = max(m.version for m in migrations())
        assert store.schema_version() == latest
        assert store.migrate() == []
    conn = duckdb.connect(str(db))
    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    conn.close()
    with pytest.raises(StoreError, match="newer than this turingwatch"):
        Store(db)


def test_migration_versions_are_unique_and_ordered():
    versions = [m.version for m in migrations()]
    assert versions == sorted(set(versions)) and versions[0] == 1


def _sample_tables(store):
    return {t: store.query(f"SELECT * FROM {t} ORDER BY ALL")
            for t in ("sessions", "sample_rounds", "step_samples", "process_samples", "gpu_samples")}


def test_a_store_of_the_previous_schema_migrates_and_loads(tmp_path):
    running, finished = tmp_path / "a" / "n1.jsonl", tmp_path / "b" / "n1.jsonl"
    write_spool(running, samples=3, end=False)
    write_spool(finished, samples=5)
    db = tmp_path / "old.duckdb"
    with Store(db) as store:
        load_spool(store, running)
        rounds = store.query("SELECT * FROM sample_rounds ORDER BY seq")
    # What the schema before sample_rounds left: the same sample rows, no rounds table.
    conn = duckdb.connect(str(db))
    conn.execute("DROP TABLE sample_rounds")
    conn.execute("DELETE FROM schema_migrations WHERE version >= 4")
    conn.close()
    with Store(db) as store:
        assert store.schema_version() == max(m.version for m in migrations())
        assert store.query("SELECT * FROM sample_rounds ORDER BY seq") == rounds and len(rounds) == 3
        lines = finished.read_bytes().splitlines()
        applied = apply_lines(store, lines[3:], session_id="s-1")  # samples 2, 3, 4 and the end
        assert (applied.accepted, applied.duplicates, applied.ended) == (3, 1, True)
        after = _sample_tables(store)
        load_spool(store, finished)
        assert _sample_tables(store) == after
    with Store(":memory:") as fresh:
        load_spool(fresh, finished)
        assert _sample_tables(fresh) == after
