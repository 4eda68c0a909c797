"""A running session's spool lines applied in batches: each sample once, the same tables as a load.

The spool is a real one: `turingwatch run` of a few processes, with the fake NVML for GPUs.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from itertools import accumulate
from operator import or_
from pathlib import Path

import pytest

from watcher import spool
from watcher.store import Store, StoreError
from watcher.store.spool_loader import apply_lines, load_spool

REPO = Path(__file__).resolve().parent.parent
WORK = "for i in 1 2 3; do (sleep 0.$i; python3 -c 'while 1: pass' & sleep 1; kill $!) & done; sleep 3; wait"


@pytest.fixture(scope="module")
def real_spool(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("run")
    scenario = REPO / "tests" / "fake_nvml" / "scenarios" / "two-gpus-one-idle.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests' / 'fake_nvml'}:{REPO}",
           "FAKE_NVML_SCENARIO": str(scenario)}
    env.pop("TURINGWATCH_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "watcher", "run", "-q", "-i", "0.5", "-o", "out", "--",
                           "sh", "-c", WORK], cwd=where, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    (path,) = spool.spool_files(where / "out")
    return path


def tables(store: Store) -> dict[str, list[tuple]]:
    """Every table of the store, sorted; migrations without the time they were applied."""
    names = [r[0] for r in store.query(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1")]
    return {name: store.query(
        "SELECT version, name FROM schema_migrations ORDER BY ALL" if name == "schema_migrations"
        else f"SELECT * FROM {name} ORDER BY ALL") for name in names}


def loaded(path: Path) -> dict[str, list[tuple]]:
    with Store(":memory:") as store:
        load_spool(store, path)
        return tables(store)


def batches(lines: list, rng: random.Random) -> list[list]:
    """The lines in order, in batches that overlap, repeat a line or are sent twice."""
    out, end = [], 0
    while end < len(lines):
        start = max(0, end - rng.randint(0, 3))
        end = min(len(lines), end + rng.randint(1, 4))
        batch = lines[start:end]
        if rng.random() < 0.3:
            i = rng.randrange(len(batch))
            batch.insert(i, batch[i])
        out.append(batch)
        if rng.random() < 0.2:
            out.append(list(batch))  # a retried post
    return out


def test_random_batches_give_the_tables_of_load_spool(real_spool):
    raw = real_spool.read_bytes().splitlines()
    assert len(raw) >= 8 and json.loads(raw[-1])["k"] == "end"
    expected = loaded(real_spool)
    assert len(expected["sample_rounds"]) == len(raw) - 2 and expected["gpu_samples"]
    assert any(row[8] for row in expected["process_samples"])  # command lines
    kinds = [lambda line: line, lambda line: line.decode(), json.loads]  # bytes, str, objects
    sid = json.loads(raw[0])["session"]["session_id"]
    rng = random.Random(42)
    for _ in range(5):
        sent = batches(raw, rng)
        with Store(":memory:") as store:
            results = [apply_lines(store, [rng.choice(kinds)(line) for line in batch],
                                   session_id=None if raw[0] in batch else sid) for batch in sent]
            assert tables(store) == expected
        assert sum(r.accepted for r in results) == len(raw)
        assert sum(r.duplicates for r in results) == sum(map(len, sent)) - len(raw)
        assert [r.ended for r in results] == list(accumulate((raw[-1] in b for b in sent), or_))
        assert {r.session_id for r in results} == {sid}


def test_a_torn_last_line_is_what_load_spool_skips(real_spool, tmp_path):
    torn = tmp_path / "torn.jsonl"
    raw = real_spool.read_bytes().splitlines()[:-1]  # still running
    torn.write_bytes(b"\n".join(raw) + b'\n{"k":"sample","seq":99,"ts":17')
    with Store(":memory:") as store:
        applied = apply_lines(store, raw)
        assert (applied.accepted, applied.duplicates, applied.ended) == (len(raw), 0, False)
        assert store.one("SELECT ended_at, exit_code FROM sessions") == (None, None)
        assert tables(store) == loaded(torn)


def test_the_end_line_ends_a_running_session_once(real_spool):
    raw = real_spool.read_bytes().splitlines()
    with Store(":memory:") as store:
        sid = apply_lines(store, raw[:-1]).session_id
        ended = apply_lines(store, raw[-2:], session_id=sid)
        assert (ended.accepted, ended.duplicates, ended.ended) == (1, 1, True)
        again = apply_lines(store, raw[-1:], session_id=sid)
        assert (again.accepted, again.duplicates, again.ended) == (0, 1, True)
        exit_code, meta = store.one("SELECT exit_code, meta FROM sessions")
        assert exit_code == 0 and "rusage_children" in json.loads(meta)
        assert tables(store) == loaded(real_spool)


def test_loading_the_file_after_its_lines_were_applied_changes_nothing(real_spool):
    raw = real_spool.read_bytes().splitlines()
    with Store(":memory:") as store:
        sid = apply_lines(store, raw[:5]).session_id
        apply_lines(store, raw[3:], session_id=sid)
        load_spool(store, real_spool)
        assert tables(store) == loaded(real_spool)
        again = apply_lines(store, raw)
        assert (again.accepted, again.duplicates) == (0, len(raw))


def test_a_session_line_may_not_change_who_the_session_is(real_spool):
    raw = real_spool.read_bytes().splitlines()
    head = json.loads(raw[0])
    with Store(":memory:") as store:
        apply_lines(store, raw[:3])
        before = tables(store)
        for field, value in (("node", "elsewhere"), ("job_id", 77), ("user_name", "mallory")):
            other = {**head, "session": {**head["session"], field: value}}
            with pytest.raises(StoreError, match="refused"):
                apply_lines(store, [other, *raw[3:]])
        assert tables(store) == before  # the samples of a refused batch are not kept either
        same = apply_lines(store, [raw[0]])
        assert (same.accepted, same.duplicates) == (0, 1)


@pytest.mark.parametrize(
    ("lines", "session_id", "message"),
    [
        (["not json"], "s", "line 1 of the batch is not JSON"),
        (["{\"k\": \"sample\", \"seq\": 0}"], None, "names no session"),
        (["{\"k\": \"sample\", \"seq\": 0}"], "unknown", "session line must come first"),
    ],
)
def test_batches_the_store_cannot_take_are_refused(lines, session_id, message):
    with Store(":memory:") as store, pytest.raises(StoreError, match=message):
        apply_lines(store, lines, session_id=session_id)


def test_lines_of_two_sessions_or_another_format_are_refused(real_spool):
    raw = real_spool.read_bytes().splitlines()
    head = json.loads(raw[0])
    other = {**head, "session": {**head["session"], "session_id": "other"}}
    with Store(":memory:") as store:
        with pytest.raises(StoreError, match="not of several"):
            apply_lines(store, [raw[0], other])
        with pytest.raises(StoreError, match="not of several"):
            apply_lines(store, raw[:2], session_id="other")
        with pytest.raises(StoreError, match="format v99"):
            apply_lines(store, [{**head, "v": 99}])
        assert store.query("SELECT * FROM sessions") == []
