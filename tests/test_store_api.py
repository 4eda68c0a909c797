"""The store's API: reads, serialised writes and private cursors, also from several threads."""

from __future__ import annotations

import threading

import duckdb
import pytest

from watcher import spool
from watcher.analysis.engine import analyze_session
from watcher.config import load_config
from watcher.records import ProcessSample, StepSample
from watcher.store import Store
from watcher.store.spool_loader import apply_lines

T0 = 1_763_780_000.0


def session_line(sid: str, *, cores: int = 8, node: str = "n1") -> dict:
    session = {"session_id": sid, "job_id": None, "cluster": None, "node": node, "mode": "run",
               "user_name": "alice", "command": "solver", "started_at": T0, "interval_s": 10.0,
               "cores_available": cores, "mem_requested_bytes": None, "time_limit_s": None,
               "gpu_status": "disabled", "watcher_version": "test", "meta": {}}
    return {"k": "session", "v": spool.SPOOL_VERSION, "session": session, "fields": spool.FIELDS}


def sample_line(seq: int, *, busy_cores: float = 1.0, cpus: int = 8) -> dict:
    """Sample ``seq``: ``busy_cores`` busy over each 10 s before it, one process."""
    cpu = busy_cores * 10.0 * (seq + 1)
    step = StepSample("local", 1, 1, cpu, 0.0, 1 << 26, 1 << 26, 77, "solver", 0, 0, 0, 0, 0, 0,
                      cpus, "affinity")
    proc = ProcessSample("local", 77, 1, 5, "solver", cpu, 0.0, 1 << 26, 0, 0, 0, 0, 0, 0, 1)
    cmd = [[77, 5, "solver --big"]] if seq == 0 else []
    return {"k": "sample", "seq": seq, "ts": T0 + 10.0 * (seq + 1), "steps": [step],
            "procs": [proc], "gpus": [], "cmd": cmd}


def end_line(samples: int) -> dict:
    return {"k": "end", "ts": T0 + 10.0 * samples, "end": {"exit_code": 0, "exit_signal": None}}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store.duckdb") as s:
        s.execute("CREATE TABLE counter (n INTEGER)")
        s.execute("INSERT INTO counter VALUES (0)")
        yield s


def test_write_commits_and_rolls_back_on_any_exception(store):
    assert store.write(lambda cur: cur.execute("UPDATE counter SET n = 5 RETURNING n").fetchone()) == (5,)

    def half_done(cur):
        cur.execute("UPDATE counter SET n = 6")
        raise KeyError("stop")

    with pytest.raises(KeyError):
        store.write(half_done)
    assert store.one("SELECT n FROM counter") == (5,)
    assert store.query("SELECT n FROM counter WHERE n > ?", [9]) == []
    assert store.one("SELECT n FROM counter WHERE n > ?", [9]) is None


def test_read_sees_one_snapshot_and_never_writes(store):
    with pytest.raises(duckdb.Error, match="read-only"):
        store.read(lambda cur: cur.execute("UPDATE counter SET n = 1"))
    assert store.one("SELECT n FROM counter") == (0,)

    def twice_with_a_write_between(cur):
        first = cur.execute("SELECT n FROM counter").fetchone()
        store.write(lambda w: w.execute("UPDATE counter SET n = n + 1"))
        return first, cur.execute("SELECT n FROM counter").fetchone()

    assert store.read(twice_with_a_write_between) == ((0,), (0,))
    assert store.one("SELECT n FROM counter") == (1,)


def test_cursors_keep_their_temp_tables_to_themselves(store):
    with store.cursor() as a, store.cursor() as b:
        a.execute("CREATE TEMP TABLE scratch AS SELECT 1 AS x")
        with pytest.raises(duckdb.CatalogException):
            b.execute("SELECT * FROM scratch")
        with store.transaction(a) as cur:  # writes that read the cursor's temp tables
            assert cur is a
            cur.execute("UPDATE counter SET n = (SELECT x FROM scratch)")
    with pytest.raises(duckdb.Error):
        a.execute("SELECT 1")  # closed
    with store.cursor() as c, pytest.raises(duckdb.CatalogException):
        c.execute("SELECT * FROM scratch")
    assert store.one("SELECT n FROM counter") == (1,)


def test_execute_runs_one_statement_and_hands_back_its_result(store):
    store.execute("UPDATE counter SET n = ?", [3])
    cur = store.execute("SELECT n, n * 2 AS twice FROM counter")
    assert [d[0] for d in cur.description] == ["n", "twice"] and cur.fetchall() == [(3, 6)]


def test_writes_from_many_threads_are_applied_one_at_a_time(store):
    # Without the write lock DuckDB lets two transactions update the row at once and fails one
    # of them at commit ("Conflict on update").
    errors: list[BaseException] = []

    def bump():
        try:
            for _ in range(40):
                store.write(lambda cur: cur.execute("UPDATE counter SET n = n + 1"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and store.one("SELECT n FROM counter") == (160,)


def test_one_thread_ingests_while_two_read_committed_data(tmp_path):
    batch, batches = 3, 40
    errors: list[BaseException] = []
    seen: dict[str, list[tuple]] = {"a": [], "b": []}
    done = threading.Event()
    with Store(tmp_path / "site.duckdb") as store:

        def ingest():
            try:
                apply_lines(store, [session_line("live")])
                for i in range(batches):
                    apply_lines(store, [sample_line(seq) for seq in range(i * batch, (i + 1) * batch)],
                                session_id="live")
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        def counts(cur):
            return cur.execute(
                "SELECT (SELECT count(*) FROM sample_rounds), (SELECT count(*) FROM step_samples),"
                " (SELECT count(*) FROM process_samples), (SELECT count(*) FROM sessions)"
            ).fetchone()

        def watch(name):
            try:
                while not done.is_set():
                    seen[name].append(store.read(counts))
                seen[name].append(store.read(counts))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=ingest), *(threading.Thread(target=watch, args=(n,)) for n in seen)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    for reads in seen.values():
        assert reads[-1] == (batch * batches, batch * batches, batch * batches, 1)
        rounds = [r[0] for r in reads]
        assert rounds == sorted(rounds)  # never back
        # A batch is seen whole or not at all, and in every table at once.
        assert all(r[0] % batch == 0 and r[0] == r[1] == r[2] for r in reads)


def test_analyses_and_an_ingest_on_threads_do_not_share_temp_tables(tmp_path):
    config = load_config(None, environ={})
    with Store(tmp_path / "site.duckdb") as store:
        for sid in ("s1", "s2"):
            apply_lines(store, [session_line(sid), *map(sample_line, range(60)), end_line(60)])
        alone = {sid: sorted(f.rule for f in analyze_session(store, config, [sid])) for sid in ("s1", "s2")}
        assert alone["s1"] == ["low_concurrency"] == alone["s2"]
        errors: list[BaseException] = []
        results: dict[str, list] = {"s1": [], "s2": []}

        def analyse(sid):
            try:
                for _ in range(5):
                    results[sid].append(sorted(f.rule for f in analyze_session(store, config, [sid])))
            except BaseException as exc:
                errors.append(exc)

        def ingest():
            try:
                apply_lines(store, [session_line("s3")])
                for seq in range(30):
                    apply_lines(store, [sample_line(seq)], session_id="s3")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=analyse, args=(sid,)) for sid in results]
        threads.append(threading.Thread(target=ingest))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(r == alone[sid] for sid, runs in results.items() for r in runs)
        assert store.one("SELECT count(*) FROM sample_rounds WHERE session_id = 's3'") == (30,)
