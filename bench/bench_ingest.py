"""Benchmark: spool lines through the server (HTTP, a credential per batch) into its store,
against DuckDB's own bulk load of the same rows into the same tables, in the same run.

    .venv/bin/python bench/bench_ingest.py [--lines 40000] [--batches 3,30,300,3000,10000]
        [--steps 4] [--procs 8] [--clients 4] [--auth munge|hmac]

The workload: ``--nodes`` senders (one session each) whose every sample line holds ``--steps``
step rows and ``--procs`` process rows (the defaults: a node running two jobs of two steps);
each batch is one session's session line and ``B`` sample lines, signed (munge when the test
cluster's munged is up, else HMAC), POSTed by ``--clients`` threads at once. A batch size's
rate is counted from the first request to the moment the server has stored the last line (not
merely journaled it). Each size runs on a fresh server, store and journal.

The baseline is ``INSERT INTO step_samples/process_samples SELECT ... FROM read_json(...)``
of the same lines from one file into a fresh store: no HTTP, credentials, checks, journal or
de-duplication. The goal (issue 10): at least 50 % of it, and 200k step rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from server_helpers import ProcessServer, Session, config_of, free_port, get, send, server_env

from watcher.store import Store

MUNGE_SOCKET = "/tmp/turingwatch-slurm/munge/socket"


def make_sessions(nodes: int, steps: int, procs: int) -> list[Session]:
    return [Session(f"bench-{i:04d}", "root", node=f"node{i:04d}", steps=steps, procs=procs)
            for i in range(nodes)]


def batches_of(sessions: list[Session], lines: int, size: int) -> list[bytes]:
    """``lines`` sample lines in all, cut into batches of ``size`` lines of one session each."""
    out, seq = [], dict.fromkeys((s.session_id for s in sessions), 0)
    made, i = 0, 0
    while made < lines:
        s = sessions[i % len(sessions)]
        n = min(size, lines - made)
        start = seq[s.session_id]
        out.append(s.batch(range(start, start + n)))
        seq[s.session_id] = start + n
        made, i = made + n, i + 1
    return out


def through_server(bodies: list[bytes], workdir: Path, clients: int, mode: str) -> tuple[float, int]:
    env = server_env(workdir, free_port(), mode=mode,
                     extra={"TURINGWATCH_SERVER_MAX_BODY_BYTES": str(256 * 2**20),
                            "TURINGWATCH_SERVER_THREADS": str(max(4, clients * 2))})
    config = config_of(env)
    server = ProcessServer(env, workdir / "server.log")
    server.start()
    failures: list[str] = []
    lock = threading.Lock()

    def push(body: bytes) -> None:
        status, answer = send(server.url, config, body, timeout=600)
        if status != 200:
            with lock:
                failures.append(f"{status} {answer}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(push, bodies))
    while True:   # stored, not merely journaled
        facts = json.loads(get(server.url, "/api/v1/status")[1])
        if facts["journal"]["batches"] == 0:
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    server.terminate()
    if failures:
        raise SystemExit(f"{len(failures)} batches failed, e.g. {failures[0]}")
    with Store(config.store.path, read_only=True) as store:
        (rows,) = store.one("SELECT count(*) FROM step_samples")
    return seconds, rows


BASELINE = """
INSERT INTO step_samples (session_id, seq, ts, job_id, step, node, nprocs, nthreads, cpu_user_s,
    cpu_system_s, rss_bytes, largest_rss_bytes, largest_pid, largest_comm, read_bytes, write_bytes,
    rchar, wchar, minor_faults, major_faults, cpus_available, cpus_source, cpu_wait_s, mem_bytes,
    mem_source, mem_peak_bytes)
SELECT 'bench', seq, to_timestamp(ts), NULL, r[1], 'n', r[2]::INTEGER, r[3]::INTEGER, r[4]::DOUBLE,
    r[5]::DOUBLE, r[6]::BIGINT, r[7]::BIGINT, r[8]::INTEGER, r[9], r[10]::BIGINT, r[11]::BIGINT,
    r[12]::BIGINT, r[13]::BIGINT, r[14]::BIGINT, r[15]::BIGINT, r[16]::INTEGER, r[17], r[18]::DOUBLE,
    r[19]::BIGINT, r[20], r[21]::BIGINT
FROM (SELECT seq, ts, unnest(steps) AS r
      FROM read_json($path, columns = {seq: 'BIGINT', ts: 'DOUBLE', steps: 'VARCHAR[][]'}));
INSERT INTO process_samples (session_id, seq, ts, step, pid, ppid, start_ticks, comm, cmdline,
    cpu_user_s, cpu_system_s, rss_bytes, read_bytes, write_bytes, rchar, wchar, minor_faults,
    major_faults, nthreads, cpu_wait_s, pss_bytes)
SELECT 'bench', seq, to_timestamp(ts), r[1], r[2]::INTEGER, r[3]::INTEGER, r[4]::BIGINT, r[5], NULL,
    r[6]::DOUBLE, r[7]::DOUBLE, r[8]::BIGINT, r[9]::BIGINT, r[10]::BIGINT, r[11]::BIGINT,
    r[12]::BIGINT, r[13]::BIGINT, r[14]::BIGINT, r[15]::INTEGER, r[16]::DOUBLE, r[17]::BIGINT
FROM (SELECT seq, ts, unnest(procs) AS r
      FROM read_json($path, columns = {seq: 'BIGINT', ts: 'DOUBLE', procs: 'VARCHAR[][]'}));
"""


def raw_bulk_load(bodies: list[bytes], workdir: Path) -> tuple[float, int]:
    """The same sample lines, from one file, straight into the same tables."""
    path = workdir / "lines.ndjson"
    with open(path, "wb") as out:
        for body in bodies:
            out.write(body.split(b"\n", 1)[1])   # without the session line
    started = time.perf_counter()
    with Store(workdir / "raw.duckdb") as store, store.transaction() as cur:
        for statement in filter(str.strip, BASELINE.split(";")):
            cur.execute(statement, {"path": str(path)})
    seconds = time.perf_counter() - started
    with Store(workdir / "raw.duckdb", read_only=True) as store:
        (rows,) = store.one("SELECT count(*) FROM step_samples")
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=40_000, help="sample lines per batch size")
    parser.add_argument("--max-requests", type=int, default=300,
                        help="fewer lines for small batches: at most this many requests a size")
    parser.add_argument("--batches", default="3,30,300,3000,10000", help="batch sizes, in lines")
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="step rows per sample line")
    parser.add_argument("--procs", type=int, default=8, help="process rows per sample line")
    parser.add_argument("--clients", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--auth", choices=["munge", "hmac"],
                        default="munge" if os.path.exists(MUNGE_SOCKET) else "hmac")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="sampling interval for the nodes-per-server estimate")
    args = parser.parse_args()
    sessions = make_sessions(args.nodes, args.steps, args.procs)
    print(f"{args.lines} sample lines a size, {args.steps} step rows and {args.procs} process rows"
          f" a line, {args.nodes} sessions, {args.clients} clients, credentials: {args.auth}")

    with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp:
        work = Path(tmp)
        base_s, base_rows = raw_bulk_load(batches_of(sessions, args.lines, 4000), work)
        base_rate = base_rows / base_s
        print(f"baseline  DuckDB bulk load: {base_rows} step rows in {base_s:.2f} s = "
              f"{base_rate:,.0f} step rows/s")
        best = 0.0
        print(f"{'batch':>6} {'requests':>9} {'seconds':>8} {'lines/s':>9} {'step rows/s':>12} {'vs raw':>7}")
        per_request: dict[int, float] = {}
        for size in (int(b) for b in args.batches.split(",")):
            lines = min(args.lines, size * args.max_requests)
            bodies = batches_of(sessions, lines, size)
            run = work / f"b{size}"
            run.mkdir()
            seconds, rows = through_server(bodies, run, args.clients, args.auth)
            assert rows == lines * args.steps, (rows, lines * args.steps)
            rate = rows / seconds
            per_request[size] = len(bodies) / seconds
            best = max(best, lines / seconds)
            print(f"{size:>6} {len(bodies):>9} {seconds:>8.2f} {lines / seconds:>9,.0f}"
                  f" {rate:>12,.0f} {rate / base_rate:>7.0%}")
        # A node sends a batch every server.send_interval_s holding send_interval/interval lines.
        print(f"nodes one server holds, sampling every {args.interval:g} s (no headroom):")
        for size, requests_per_s in per_request.items():
            send_every = size * args.interval
            print(f"  sending every {send_every:>6g} s ({size} lines a batch):"
                  f" {requests_per_s * send_every:>9,.0f} nodes")


if __name__ == "__main__":
    main()
