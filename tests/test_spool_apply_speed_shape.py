"""What a row's values become in the store, value by value, as the loader reads rows for speed.

The loader reads each part of a sample line once, as a list of JSON values, and takes of each
value what ``r->>i`` of the row would give: text unquoted and unescaped, a number as DuckDB
writes it back (also in a text column), a list as JSON, null as NULL. These pin that, for a
batch and for a file, with the spool's own fields and with fields the loader rebuilds by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from watcher import spool
from watcher.store import Store
from watcher.store.spool_loader import apply_ndjson, load_spool

STEPS, PROCS, GPUS = (spool.FIELDS[part] for part in ("steps", "procs", "gpus"))


def _session(fields: dict) -> dict:
    return {"k": "session", "v": spool.SPOOL_VERSION, "fields": fields, "session": {
        "session_id": "s-1", "job_id": 7, "cluster": "lab", "node": "n1", "mode": "run",
        "user_name": "u", "command": "c", "started_at": 1_763_780_000.0, "interval_s": 10.0}}


def _step(**values) -> dict:
    row = dict.fromkeys(STEPS, 1)
    return {**row, "step": "batch", "cpu_user_s": 1.5, "cpu_system_s": 0.5, "largest_comm": "py",
            "cpus_source": "cpuset", "mem_source": "rss", **values}


def _proc(**values) -> dict:
    return {**dict.fromkeys(PROCS, 1), "step": "batch", "pid": 101, "start_ticks": 555, "comm": "py",
            **values}


def _gpu(**values) -> dict:
    return {**dict.fromkeys(GPUS, 1), "gpu_uuid": "GPU-1", "gpu_name": "H100", "job_pids": [101, 102],
            **values}


ODD_STEP = _step(step="a\"b\u00e9\u0000", largest_comm=1e-7, cpus_source=1.7e20, mem_source=True,
                 nprocs="3", cpu_user_s=1e5, cpu_wait_s=None, mem_bytes="12")
ODD_PROC = _proc(comm="\\x\ty", cpu_user_s=2.0, pss_bytes=None)
ODD_GPU = _gpu(gpu_name=None, job_pids=None)
EXPECTED_STEP = ("a\"b\u00e9\u0000", "1e-7", "170000000000000000000.0", "true", 3, 100000.0, None, 12)
EXPECTED_PROC = ("\\x\ty", 2.0, None, "cmd \u00e9 --x")


def _lines(fields: dict) -> list[str]:
    def row(values: dict, part: str) -> list:
        return [values.get(name) for name in fields[part]]
    sample = {"k": "sample", "seq": 0, "ts": 1_763_780_010.0, "steps": [row(ODD_STEP, "steps")],
              "procs": [row(ODD_PROC, "procs")], "gpus": [row(ODD_GPU, "gpus")],
              "cmd": [[101, 555, "cmd \u00e9 --x"]]}
    return [json.dumps(_session(fields)), json.dumps(sample)]


def _stored(store: Store) -> tuple:
    step = store.one("SELECT step, largest_comm, cpus_source, mem_source, nprocs, cpu_user_s, cpu_wait_s,"
                     " mem_bytes FROM step_samples")
    proc = store.one("SELECT comm, cpu_user_s, pss_bytes, cmdline FROM process_samples")
    gpu = store.one("SELECT gpu_name, job_pids, gpu_uuid FROM gpu_samples")
    return step, proc, gpu


OURS = spool.FIELDS
# An older writer's order, less a field, plus one this turingwatch does not know.
OTHERS = {"steps": [*reversed(STEPS[:-1]), "new_field"], "procs": list(reversed(PROCS)),
          "gpus": [name for name in GPUS if name != "other_pids"]}


@pytest.mark.parametrize("fields", [OURS, OTHERS], ids=["our fields", "other fields"])
def test_each_value_is_stored_as_its_json_says(tmp_path: Path, fields: dict) -> None:
    lines = _lines(fields)
    path = tmp_path / "n1.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with Store(":memory:") as batch, Store(":memory:") as file:
        apply_ndjson(batch, "\n".join(lines).encode())
        load_spool(file, path)
        assert _stored(batch) == _stored(file) == (
            EXPECTED_STEP, EXPECTED_PROC, (None, None, "GPU-1"))
