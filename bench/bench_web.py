"""Latency of the web site under concurrent clients, against a static file of the same server.

Generates the synthetic week (bench/synthetic_week.py), analyses it, publishes it
(watcher/store/publish.py) and serves the site with ``turingwatch web`` (waitress,
``web.threads`` threads) on loopback. Then ``--clients`` threads, each with its own keep-alive
connection, request in turn: a static file (/static/site.css, the floor: what waitress and
Flask cost with no page behind them), job pages of sampled jobs, and home pages; each
client logs in as the owner of what it asks for (the trusted header) and, like a browser,
sends back the session cookie it was given. Every URL is requested
once before the clock starts (the site caches per generation: a page's first view builds its
charts, and that cost is printed separately as "first view").

    .venv/bin/python bench/bench_web.py [--scale 0.1] [--clients 50] [--requests 40]

Prints p50 and p99 per kind and the ratio of each to the static file's. Goal on the 2-core
dev machine: job page p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from synthetic_week import WEEK_START, generate  # noqa: E402

from watcher.analysis.engine import analyze_period  # noqa: E402
from watcher.analysis.periods import parse_period  # noqa: E402
from watcher.config import load_config  # noqa: E402
from watcher.store import Store  # noqa: E402
from watcher.store.publish import publish  # noqa: E402


def build(work: Path, scale: float) -> tuple[Path, float, float]:
    """The store generated, analysed and published under ``work``; the config file. A
    ``work`` that holds one already (``--work`` of an earlier run) is used as it is."""
    store_path = work / "week.duckdb"
    if (work / "turingwatch.toml").is_file() and (work / "published" / "current").exists():
        made = work / "scale.txt"
        return work / "turingwatch.toml", 0.0, float(made.read_text()) if made.exists() else scale
    started = time.monotonic()
    generate(store_path, scale=scale, progress=False)
    key = work / "secret.key"
    key.write_text("b" * 40)
    key.chmod(0o600)
    config_path = work / "turingwatch.toml"
    config_path.write_text(
        f'[server]\npublish_dir = "{work / "published"}"\n'
        f'[analysis]\nresult_dir = "{work / "bundles"}"\n'
        f'[web]\ntrusted_header = "X-Remote-User"\nsecret_key_file = "{key}"\n'
        'listen = "127.0.0.1:0"\n'  # serve() names the port it chose for this run
    )
    config = load_config(config_path, environ={})
    week = parse_period(WEEK_START.strftime("%G-W%V"), "week", "UTC")
    with Store(store_path) as store:
        analyze_period(store, config, week)
        publish(store, Path(config.server.publish_dir))
    (work / "scale.txt").write_text(f"{scale}\n")
    return config_path, time.monotonic() - started, scale


def targets(work: Path, count: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(path, user) of ``count`` sampled jobs' pages, and of ``count`` users' home pages."""
    snapshot = next((work / "published").glob("gen-*/snapshot.duckdb"))
    with Store(snapshot, read_only=True) as snap:
        jobs = snap.query(
            "SELECT j.cluster, j.job_id, j.user_name FROM jobs j"
            " SEMI JOIN sessions s ON s.cluster = j.cluster AND s.job_id = j.job_id"
            " ORDER BY hash(j.job_id) LIMIT ?", [count])
        users = snap.query("SELECT DISTINCT user_name FROM jobs ORDER BY 1 LIMIT ?", [count])
    return ([(f"/jobs/{c}/{j}", u) for c, j, u in jobs], [("/", u) for (u,) in users])


def serve(work: Path, config_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``turingwatch web`` on a free loopback port, once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = config_path.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
    run_config = work / "turingwatch-run.toml"
    run_config.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TURINGWATCH_CONFIG": str(run_config)}
    server = subprocess.Popen([sys.executable, "-m", "watcher", "-q", "web"], env=env,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit("turingwatch web did not start (run it by hand to see why)") from None
            time.sleep(0.1)


def client(port: int, urls: list[tuple[str, str]], n: int, start: threading.Barrier,
           out: list[float], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    cookies: dict[str, str] = {}  # kept per user, as a browser keeps its session cookie
    start.wait()
    for i in range(n):
        path, user = urls[i % len(urls)]
        headers = {"X-Remote-User": user}
        if user in cookies:
            headers["Cookie"] = cookies[user]
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        out.append(time.perf_counter() - t0)
        if response.getheader("Set-Cookie"):
            cookies[user] = response.getheader("Set-Cookie").split(";", 1)[0]
        if response.status != 200:
            errors.append(f"{path}: {response.status}")
    conn.close()


def _threads(port: int, urls: list[tuple[str, str]], first: int, clients: int, n: int,
             start: Any) -> tuple[list[float], list[str]]:
    """Clients ``first`` … ``first + clients - 1`` as threads of this process."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=client, args=(
        port, urls[(first + i) % len(urls):] + urls[: (first + i) % len(urls)], n, barrier,
        latencies[i], errors)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()  # every process's clients are connected: go together
    barrier.wait()
    for t in threads:
        t.join()
    return [x for per in latencies for x in per], errors


def phase(port: int, urls: list[tuple[str, str]], clients: int, n: int,
          procs: int) -> tuple[list[float], float]:
    """``clients`` clients spread over ``procs`` processes, so that the load generator's own
    GIL does not add to what is measured; returns every latency and the wall time."""
    procs = max(1, min(procs, clients))
    with multiprocessing.Manager() as manager:
        start = manager.Barrier(procs + 1)
        share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        firsts = [sum(share[:i]) for i in range(procs)]
        with multiprocessing.Pool(procs) as pool:
            pending = [pool.apply_async(_threads, (port, urls, f, c, n, start))
                       for f, c in zip(firsts, share, strict=True)]
            start.wait()
            t0 = time.perf_counter()
            results = [p.get() for p in pending]
            wall = time.perf_counter() - t0
    errors = [e for _, errs in results for e in errs]
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[:3]}")
    return [x for lat, _ in results for x in lat], wall


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1, help="synthetic week scale")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client and kind")
    parser.add_argument("--urls", type=int, default=50, help="distinct jobs and users")
    parser.add_argument("--procs", type=int, default=1,
                        help="client processes (threads in each); on 2 cores more only compete")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the data here; reused when it holds a run's")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-web-"))
    work.mkdir(parents=True, exist_ok=True)
    config_path, built_s, scale = build(work, args.scale)
    job_urls, home_urls = targets(work, args.urls)
    server, port = serve(work, config_path)
    try:
        first = []
        for path, user in job_urls + home_urls:  # the first views: they fill the caches
            lat, _ = phase(port, [(path, user)], 1, 1, 1)
            first.append(lat[0])
        static = [("/static/site.css", "anyone")]
        results = {}
        for kind, urls in (("static", static), ("job page", job_urls), ("home page", home_urls)):
            results[kind] = phase(port, urls, args.clients, args.requests, args.procs)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"bench_web {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, scale"
          f" {scale} (built and published in {built_s:.0f} s), {args.clients} clients"
          f" in {args.procs} processes x"
          f" {args.requests} requests per kind, {len(job_urls)} jobs, {len(home_urls)} users")
    print(f"first views (cache filling, one client): p50 {1000 * statistics.median(first):.1f} ms,"
          f" max {1000 * max(first):.1f} ms")
    base50, base99 = pct(results["static"][0], 0.5), pct(results["static"][0], 0.99)
    for kind, (lat, wall) in results.items():
        p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
        print(f"{kind:10s} p50 {1000 * p50:7.1f} ms  p99 {1000 * p99:7.1f} ms"
              f"  ({len(lat) / wall:6.0f} req/s)  x static: p50 {p50 / base50:5.2f}"
              f"  p99 {p99 / base99:5.2f}")
    job99 = pct(results["job page"][0], 0.99)
    print(f"goal job page p99 <= 50 ms: {'met' if job99 <= 0.050 else 'NOT met'}"
          f" ({1000 * job99:.1f} ms)")


if __name__ == "__main__":
    main()
