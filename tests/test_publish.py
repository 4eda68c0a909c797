"""Publishing the store for readers (snapshot, Parquet, bundles) and analysing several servers'
publications as one store."""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from watcher import spool
from watcher.analysis.engine import analyze_period
from watcher.analysis.periods import parse_period
from watcher.cli import cli
from watcher.config import load_config
from watcher.records import GpuReading, ProcessSample, StepSample
from watcher.store import Store, StoreError
from watcher.store.publish import TABLES, changed_since, data_version, publish
from watcher.store.published import current_generation, published_store
from watcher.store.spool_loader import apply_lines

T0 = datetime(2026, 11, 17, 8, 0, tzinfo=UTC)  # a Tuesday of ISO week 2026-W47
WEEK = parse_period("2026-W47", "week", "UTC")
GIB = 1024**3
HOSTILE = ["a/b", "x=y z", "ünï-集群", "NULL", "..", "0042", "", "%41", "a" * 120]


# -- spool lines -----------------------------------------------------------------------------


def session_lines(
    *, cluster: str | None, job_id: int | None, node: str = "n1", user: str = "alice",
    start: datetime = T0, samples: int = 6, busy: float = 1.0, cores: int = 4,
    gpus: int = 0, end: bool = True,
) -> list[dict]:
    """One session's spool lines: a session line, ``samples`` rounds ``busy`` cores busy each
    10 s, one process, ``gpus`` idle GPUs, and an end line."""
    sid = str(uuid.uuid4())
    t0 = start.timestamp()
    session = {"session_id": sid, "job_id": job_id, "cluster": cluster, "node": node,
               "mode": "run", "user_name": user, "command": "solver", "started_at": t0,
               "interval_s": 10.0, "cores_available": cores, "mem_requested_bytes": 8 * GIB,
               "time_limit_s": 4 * 3600, "gpu_status": "ok" if gpus else "disabled",
               "watcher_version": "test", "meta": {}}
    lines: list[dict] = [{"k": "session", "v": spool.SPOOL_VERSION, "session": session,
                          "fields": spool.FIELDS}]
    for seq in range(samples):
        cpu = busy * 10.0 * (seq + 1)
        step = StepSample("batch", 1, 1, cpu, 0.0, 1 << 26, 1 << 26, 77, "solver", 0, 0, 0, 0,
                          0, 0, cores, "cgroup")
        proc = ProcessSample("batch", 77, 1, 5, "solver", cpu, 0.0, 1 << 26, 0, 0, 0, 0, 0, 0, 1)
        gpu = [GpuReading(i, f"GPU-{node}-{i}", "H200", 0.0, 0.0, 1 << 20, 1 << 37, 80.0,
                          800.0 * (seq + 1), 40.0, 1500.0, 0, [], 0) for i in range(gpus)]
        lines.append({"k": "sample", "seq": seq, "ts": t0 + 10.0 * (seq + 1), "steps": [step],
                      "procs": [proc], "gpus": gpu,
                      "cmd": [[77, 5, "solver --big"]] if seq == 0 else []})
    if end:
        lines.append({"k": "end", "ts": t0 + 10.0 * samples,
                      "end": {"exit_code": 0, "exit_signal": None}})
    return lines


def add_job(store: Store, cluster: str, job_id: int, *, user: str = "alice", cores: int = 4,
            start: datetime = T0, elapsed: int = 3600, state: str = "COMPLETED",
            imported_at: datetime = T0 + timedelta(days=1), total_cpu: float | None = 3600.0,
            nodes: int = 1) -> None:
    """A job and its batch step, as an accounting import of ``imported_at`` leaves them."""
    end = None if state == "RUNNING" else start + timedelta(seconds=elapsed)
    store.execute(
        "INSERT OR REPLACE INTO jobs (cluster, job_id, job_id_display, user_name, account,"
        " partition, job_name, state, submit_time, start_time, end_time, time_limit_s,"
        " elapsed_s, nnodes, ncpus, req_mem_bytes, total_cpu_s, imported_at) VALUES"
        " (?, ?, ?, ?, 'physics', 'cpu', 'solve', ?, ?, ?, ?, 14400, ?, ?, ?, ?, ?, ?)",
        [cluster, job_id, str(job_id), user, state, start, start, end, elapsed, nodes, cores,
         8 * GIB, total_cpu, imported_at],
    )
    store.execute(
        "INSERT OR REPLACE INTO job_steps (cluster, job_id, step, state, start_time, end_time,"
        " elapsed_s, nnodes, ntasks, ncpus, imported_at) VALUES (?, ?, 'batch', ?, ?, ?, ?, 1,"
        " 1, ?, ?)",
        [cluster, job_id, state, start, end, elapsed, cores, imported_at],
    )


def tables(store: Store, names: tuple[str, ...] = TABLES) -> dict[str, list[tuple]]:
    return {name: store.query(f"SELECT * FROM {name} ORDER BY ALL") for name in names}


def all_tables(store: Store) -> dict[str, list[tuple]]:
    names = tuple(r[0] for r in store.query(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND database_name ="
        " current_database() ORDER BY 1"))
    return tables(store, names)


@pytest.fixture
def store(tmp_path) -> Store:
    """Two clusters, two days: alpha with a GPU job, beta a CPU job; an unaccounted local run."""
    with Store(tmp_path / "site.duckdb") as s:
        apply_lines(s, session_lines(cluster="alpha", job_id=101, gpus=2))
        apply_lines(s, session_lines(cluster="beta", job_id=7, node="b1", user="bob",
                                     start=T0 + timedelta(days=1), busy=3.5))
        apply_lines(s, session_lines(cluster=None, job_id=None, node="laptop", end=False))
        add_job(s, "alpha", 101, total_cpu=60.0)
        add_job(s, "beta", 7, user="bob", start=T0 + timedelta(days=1))
        yield s


# -- the snapshot and the Parquet ------------------------------------------------------------


def test_snapshot_opens_read_only_and_holds_every_row(store, tmp_path):
    pub = publish(store, tmp_path / "pub")
    assert pub.generation.name == "gen-000001" and pub.snapshot.parent == pub.generation
    assert (tmp_path / "pub" / "current").resolve() == pub.generation
    assert pub.rows == {t: len(rows) for t, rows in tables(store).items()}
    assert pub.rows["step_samples"] == 18 and pub.rows["gpu_samples"] == 12 and pub.seconds > 0
    assert not os.stat(pub.snapshot).st_mode & 0o222  # sealed: nobody writes it by mistake
    with Store(pub.snapshot, read_only=True) as snap:
        assert all_tables(snap) == all_tables(store)
        with pytest.raises(duckdb.Error):
            snap.execute("DELETE FROM jobs")
    manifest = json.loads((pub.generation / "manifest.json").read_text())
    assert manifest["rows"] == pub.rows and manifest["schema_version"] == store.schema_version()


def test_parquet_is_partitioned_by_cluster_and_day_and_reads_back_equal(store, tmp_path):
    pub = publish(store, tmp_path / "pub")
    parts = {p.parent.relative_to(pub.generation).as_posix()
             for p in pub.generation.rglob("*.parquet")}
    assert {"step_samples/cluster=alpha/day=2026-11-17", "step_samples/cluster=beta/day=2026-11-18",
            "step_samples/cluster=__HIVE_DEFAULT_PARTITION__/day=2026-11-17",
            "gpu_samples/cluster=alpha/day=2026-11-17", "jobs/cluster=beta/day=2026-11-18",
            "job_steps/cluster=alpha/day=2026-11-17"} <= parts
    # Plain DuckDB, as a reader would: the path's cluster is the key, cluster_name the name.
    con = duckdb.connect()
    glob = f"{pub.generation}/step_samples/**/*.parquet"
    assert con.execute(
        f"SELECT cluster, cluster_name, day::VARCHAR, count(*) FROM read_parquet('{glob}',"
        " hive_partitioning = true) GROUP BY ALL ORDER BY 1"
    ).fetchall() == [("alpha", "alpha", "2026-11-17", 6), ("beta", "beta", "2026-11-18", 6),
                     (None, None, "2026-11-17", 6)]
    with published_store([tmp_path / "pub"]) as back:
        assert tables(back) == tables(store)


def test_a_second_publish_swaps_the_link_and_the_old_generation_stays_readable(store, tmp_path):
    where = tmp_path / "pub"
    first = publish(store, where)
    held = current_generation(where)  # a reader resolves current once, then reads through it
    reader = duckdb.connect(str(held / "snapshot.duckdb"), read_only=True)
    assert not changed_since(store, first)
    apply_lines(store, session_lines(cluster="alpha", job_id=102, node="n9"))
    assert changed_since(store, first) and changed_since(store, None)

    seen, stop = set(), threading.Event()

    def watch() -> None:  # `current` is a link to a whole generation at every moment
        while not stop.is_set():
            target = os.readlink(where / "current")
            assert (where / target / "manifest.json").is_file()
            seen.add(target)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        second = publish(store, where)
    finally:
        stop.set()
        watcher.join()
    assert seen <= {"gen-000001", "gen-000002"}
    assert current_generation(where) == second.generation != held
    assert second.rows["step_samples"] == first.rows["step_samples"] + 6
    assert reader.execute("SELECT count(*) FROM step_samples").fetchone() == (18,)
    old = duckdb.connect().execute(
        f"SELECT count(*) FROM read_parquet('{held}/step_samples/**/*.parquet')").fetchone()
    assert old == (18,)

    # Two kept; an older one only until its grace period is over.
    publish(store, where)
    assert held.is_dir()
    fourth = publish(store, where, grace_s=0)
    assert not held.exists() and sorted(p.name for p in where.glob("gen-*")) == [
        "gen-000003", "gen-000004"]
    assert reader.execute("SELECT count(*) FROM step_samples").fetchone() == (18,)  # still open
    reader.close()
    publish(store, where, keep_generations=1, grace_s=0)
    assert [p.name for p in where.glob("gen-*")] == ["gen-000005"] and not fourth.generation.exists()
    assert not list(where.glob(".*.tmp")) and not list(where.glob(".gen-*"))


def test_hostile_cluster_names_make_safe_distinct_partitions_and_keep_their_name(tmp_path):
    with Store(":memory:") as store:
        for i, name in enumerate(HOSTILE):
            apply_lines(store, session_lines(cluster=name, job_id=i + 1, node=f"n{i}"))
            add_job(store, name, i + 1)
        pub = publish(store, tmp_path / "pub")
        keys = [p.name for p in (pub.generation / "step_samples").iterdir()]
        assert len(keys) == len(set(keys)) == len(HOSTILE)
        for key in keys:
            value = key.removeprefix("cluster=")
            assert key.startswith("cluster=") and value.isascii() and "/" not in value
            assert "%" not in value and "=" not in value and " " not in value
            assert value.lower() not in ("null", "..", "")
            assert len(key.encode()) < 100
        assert "cluster=0042" in keys  # a plain name is its own key
        names = duckdb.connect().execute(
            f"SELECT DISTINCT cluster_name FROM read_parquet('{pub.generation}/jobs/**/*.parquet')"
        ).fetchall()
        assert sorted(n for (n,) in names) == sorted(HOSTILE)
        with published_store([tmp_path / "pub"]) as back:
            assert tables(back) == tables(store)


def test_publishing_while_another_thread_applies_batches_gives_a_consistent_generation(tmp_path):
    lines = session_lines(cluster="alpha", job_id=5, samples=80, end=False)
    with Store(tmp_path / "site.duckdb") as store:
        apply_lines(store, lines[:1])
        failed: list[BaseException] = []

        def ingest() -> None:
            try:
                for i in range(1, len(lines), 4):
                    apply_lines(store, lines[i:i + 4], session_id=lines[0]["session"]["session_id"])
            except BaseException as exc:  # reported by the test below
                failed.append(exc)

        writer = threading.Thread(target=ingest)
        writer.start()
        pubs = []
        while writer.is_alive() or not pubs:
            pubs.append(publish(store, tmp_path / "pub", keep_generations=100))
        writer.join()
        assert not failed
        assert len({p.rows["step_samples"] for p in pubs}) > 1  # some published mid-ingest
        for pub in pubs:
            rounds = pub.rows["sample_rounds"]
            # One step row and one process row per round, the rounds a prefix 0..n-1.
            assert pub.rows["step_samples"] == pub.rows["process_samples"] == rounds
            with Store(pub.snapshot, read_only=True) as snap:
                assert snap.one(
                    "SELECT count(*), coalesce(max(seq) + 1, 0) FROM sample_rounds") == (rounds, rounds)
                assert snap.one("SELECT count(*) FROM step_samples") == (rounds,)
            files = list((pub.generation / "step_samples").rglob("*.parquet"))
            assert bool(files) == bool(rounds)  # an empty table is no files
            if files:
                got = duckdb.connect().execute(
                    "SELECT count(*) FROM read_parquet(?)", [[str(f) for f in files]]).fetchone()
                assert got == (rounds,)
        assert data_version(store) == pubs[-1].version or changed_since(store, pubs[-1])


def test_a_published_bundle_directory_is_linked_into_the_generation(store, tmp_path):
    bundles = tmp_path / "results"
    bundles.mkdir()
    (bundles / "2026-W47.tar.gz").write_bytes(b"bundle")
    (bundles / ".2026-W48.tar.gz.tmp").write_bytes(b"half")  # being written: left out
    (bundles / "elsewhere").symlink_to("/etc/passwd")
    pub = publish(store, tmp_path / "pub", bundles_dir=bundles)
    assert pub.bundles is not None
    assert sorted(p.name for p in pub.bundles.iterdir()) == ["2026-W47.tar.gz"]
    assert (pub.bundles / "2026-W47.tar.gz").read_bytes() == b"bundle"
    (bundles / "2026-W47.tar.gz.new").write_bytes(b"again")
    os.replace(bundles / "2026-W47.tar.gz.new", bundles / "2026-W47.tar.gz")  # as bundle.py does
    assert (pub.bundles / "2026-W47.tar.gz").read_bytes() == b"bundle"


def test_no_publication_is_an_error(tmp_path):
    with pytest.raises(StoreError, match="holds no publication"):
        published_store([tmp_path])
    with pytest.raises(StoreError, match="keep_generations"):
        publish(Store(":memory:"), tmp_path / "pub", keep_generations=0)


# -- beyond one server -----------------------------------------------------------------------


def two_servers(tmp_path: Path) -> tuple[Path, Path, Store]:
    """Two servers' stores, each with its own nodes' sessions and its own accounting import
    (jobs 2 and 3 in both, server b's import the newer), published; and one store of it all."""
    early, late = T0 + timedelta(hours=1), T0 + timedelta(days=2)
    a, b, everything = Store(":memory:"), Store(":memory:"), Store(":memory:")
    sessions = {
        a: [session_lines(cluster="c", job_id=1, node="a1", busy=0.5),
            session_lines(cluster="c", job_id=2, node="a2", cores=8, busy=1.0),
            session_lines(cluster="c", job_id=3, node="a1", user="bob", gpus=2)],
        b: [session_lines(cluster="c", job_id=2, node="b1", cores=8, busy=1.0),  # job 2 spans both
            session_lines(cluster="c", job_id=4, node="b2", user="bob", busy=3.9),
            session_lines(cluster="d", job_id=1, node="b3", user="carol", busy=0.2)],
    }
    for server, lines in sessions.items():
        for one in lines:
            apply_lines(server, one)
            apply_lines(everything, one)
    # Server a imported while job 3 ran; server b after it ended.
    add_job(a, "c", 1, total_cpu=1800.0, imported_at=early)
    add_job(a, "c", 2, cores=16, nodes=2, state="RUNNING", imported_at=early)
    add_job(a, "c", 3, user="bob", state="RUNNING", imported_at=early)
    for server in (b, everything):
        add_job(server, "c", 2, cores=16, nodes=2, total_cpu=7200.0, imported_at=late)
        add_job(server, "c", 3, user="bob", state="FAILED", total_cpu=100.0, imported_at=late)
        add_job(server, "c", 4, user="bob", imported_at=late)
        add_job(server, "d", 1, user="carol", total_cpu=720.0, imported_at=late)
    add_job(everything, "c", 1, total_cpu=1800.0, imported_at=early)
    pa, pb = publish(a, tmp_path / "a"), publish(b, tmp_path / "b")
    a.close()
    b.close()
    assert pa.rows["jobs"] == 3 and pb.rows["jobs"] == 4
    return tmp_path / "a", tmp_path / "b", everything


def findings(reports) -> list[tuple]:
    return sorted(
        (f.rule, f.severity, f.user, f.cluster, f.job_id, f.step, f.node, f.gpu,
         json.dumps(f.metrics, sort_keys=True, default=str))
        for report in reports for f in report.findings
    )


def test_several_servers_publications_analyse_as_one_store(tmp_path):
    dir_a, dir_b, everything = two_servers(tmp_path)
    config = load_config(None)
    with published_store([dir_a, dir_b]) as merged:
        assert tables(merged) == tables(everything)  # job 2 and 3 once, from b's newer import
        got = analyze_period(merged, config, WEEK)
    want = analyze_period(everything, config, WEEK)
    assert findings(got) == findings(want) and findings(want)
    assert [(r.user, r.totals) for r in got] == [(r.user, r.totals) for r in want]
    # The same publication twice is still each session and each job once.
    with published_store([dir_a, dir_b, dir_b]) as twice:
        assert tables(twice) == tables(everything)
    everything.close()


def test_analyze_published_command(tmp_path, monkeypatch):
    dir_a, dir_b, everything = two_servers(tmp_path)
    everything.close()
    config = tmp_path / "turingwatch.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "absent.duckdb"}"\n'
                      f'[analysis]\nresult_dir = "{tmp_path / "results"}"\n')
    args = ["--config", str(config), "analyze", "--period", "2026-W47", "--all-users",
            "--format", "json", "--bundle", "--published", str(dir_a), "--published", str(dir_b)]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    rules = {f["rule"] for f in json.loads(done.output)}
    assert rules and not (tmp_path / "absent.duckdb").exists()  # the site store is not touched
    assert (tmp_path / "results" / "2026-W47.tar.gz").is_file()
    done = CliRunner().invoke(cli, [*args[:-4], "--published", str(tmp_path / "nowhere")])
    assert done.exit_code != 0 and "holds no publication" in done.output


def test_a_failed_publish_leaves_the_current_generation_alone(store, tmp_path, monkeypatch):
    (tmp_path / "pub" / "current").mkdir(parents=True)
    with pytest.raises(StoreError, match="not a symlink"):
        publish(store, tmp_path / "pub")
    assert sorted(p.name for p in (tmp_path / "pub").iterdir()) == ["current"]
    (tmp_path / "pub" / "current").rmdir()
    first = publish(store, tmp_path / "pub")

    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "symlink", full)  # after the generation is renamed into place
    with pytest.raises(StoreError, match="No space left"):
        publish(store, tmp_path / "pub")
    monkeypatch.undo()
    assert current_generation(tmp_path / "pub") == first.generation  # and nothing else is left
    assert sorted(p.name for p in (tmp_path / "pub").iterdir()) == [".publish.lock", "current", "gen-000001"]
