"""Two servers on this machine, each taking its own nodes' batches over HTTP and publishing;
the analysis over both publications equals the analysis of one store holding everything."""

from __future__ import annotations

import json
from pathlib import Path

from server_helpers import ThreadServer, config_of, free_port, get, send, server_env
from test_publish import WEEK, add_job, findings, session_lines, tables

from watcher.analysis.engine import analyze_period
from watcher.store import Store
from watcher.store.published import current_generation, published_store
from watcher.store.spool_loader import apply_lines


def body(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def test_two_servers_publish_and_analyse_as_one(tmp_path):
    nodes = {
        "a": [session_lines(cluster="c", job_id=1, node="a1", busy=0.5),
              session_lines(cluster="c", job_id=2, node="a2", cores=8)],
        "b": [session_lines(cluster="c", job_id=2, node="b1", cores=8),  # job 2 on both
              session_lines(cluster="c", job_id=3, node="b2", busy=3.9)],
    }
    everything = Store(":memory:")
    publications = []
    for name, sessions in nodes.items():
        (tmp_path / name).mkdir()
        config = config_of(server_env(tmp_path / name, free_port()))
        with ThreadServer(config) as srv:
            for lines in sessions:
                status, answer = send(srv.url, config, body(lines))
                assert status == 200 and answer["accepted"] == len(lines), answer
                apply_lines(everything, lines)
            for job_id in {1, 2} if name == "a" else {2, 3}:
                add_job(srv.server.store, "c", job_id, cores=8 if job_id == 2 else 4)
            srv.server.scheduler.run_task(srv.server.scheduler.tasks["publish"])
            assert srv.server.scheduler.tasks["publish"].last_error is None
            assert "turingwatch_last_publish_timestamp_seconds" in get(srv.url, "/metrics")[1].decode()
        publications.append(Path(config.server.publish_dir))
        assert (current_generation(publications[-1]) / "snapshot.duckdb").is_file()
    for job_id, cores in ((1, 4), (2, 8), (3, 4)):
        add_job(everything, "c", job_id, cores=cores)
    config = config_of(server_env(tmp_path / "a", free_port()))
    with published_store(publications) as merged:
        assert tables(merged) == tables(everything)
        got = analyze_period(merged, config, WEEK)
    want = analyze_period(everything, config, WEEK)
    assert findings(got) == findings(want) and findings(want)
    everything.close()
