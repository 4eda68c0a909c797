"""Senders and the server together, as a site runs them: real munge credentials, the server in its
own process (SIGKILLed, stopped for a minute), spools written while they are sent, and a real
user's Slurm job whose samples reach the server's store and its period analysis."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from server_helpers import ProcessServer, Session, ThreadServer, config_of, free_port, server_env

from watcher.analysis.periods import Period
from watcher.sending.sender import SendingThread, SpoolSender
from watcher.store import Store

pytestmark = pytest.mark.slurm
SOCKET = "/tmp/turingwatch-slurm/munge/socket"


@pytest.fixture
def munged(slurm_cluster):
    if not Path(SOCKET).exists():
        pytest.skip("no munged from scripts/slurm-cluster.sh")
    return SOCKET


class Watcher:
    """What a job's watcher does to its spool while a SendingThread sends it: a session line,
    a sample line every ``every_s``, an end line when told to stop."""

    def __init__(self, config, directory: Path, name: str, every_s: float = 0.02) -> None:
        self.session = Session(name, "root", node=name, steps=2, procs=3)
        self.path = directory / f"{name}.1.jsonl"
        directory.mkdir(exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.every_s = every_s
        self.lines = 0
        self.stop = threading.Event()
        self.sender = SpoolSender(config.server, config.auth)
        self.sender.add(self.path)
        self.sending = SendingThread(self.sender, interval_s=0.2, final_wait_s=5)
        self.thread = threading.Thread(target=self._write, daemon=True)

    def _line(self, text: str) -> None:
        os.write(self.fd, text.encode() + b"\n")   # one write a line, as SpoolWriter does

    def _write(self) -> None:
        self._line(self.session.head())
        while not self.stop.is_set():
            self._line(self.session.sample(self.lines))
            self.lines += 1
            time.sleep(self.every_s)
        self._line(self.session.end(self.lines))
        os.close(self.fd)

    def start(self) -> None:
        self.thread.start()
        self.sending.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.sending.finish()

    def drain(self, deadline: float) -> None:
        """Send until nothing is undelivered (the server being up), or fail at the deadline."""
        self.sending.join()
        self.sending._thread.join(60)   # its last request may still be out: one sender at a time
        while time.monotonic() < deadline:
            self.sender.add(self.path)
            if self.sender.send_pending() and self.sender.pending_bytes() == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.path.name}: {self.sender.pending_bytes()} bytes undelivered:"
                             f" {self.sender.last_problem}")


def finish_and_drain(server: ProcessServer, watchers: list[Watcher]) -> None:
    """End every watcher's session, deliver all it spooled, stop the server cleanly."""
    for w in watchers:
        w.finish()
    deadline = time.monotonic() + 180
    for w in watchers:
        w.drain(deadline)
    assert server.terminate() == 0


def stored_exactly_once(store_path: str, watchers: list[Watcher]) -> None:
    with Store(store_path, read_only=True) as store:
        for w in watchers:
            sid = w.session.session_id
            rounds, steps, distinct, procs = store.one(
                "SELECT (SELECT count(*) FROM sample_rounds WHERE session_id = $s),"
                " (SELECT count(*) FROM step_samples WHERE session_id = $s),"
                " (SELECT count(DISTINCT (seq, step)) FROM step_samples WHERE session_id = $s),"
                " (SELECT count(*) FROM process_samples WHERE session_id = $s)", {"s": sid})
            assert (rounds, steps, distinct, procs) == (w.lines, 2 * w.lines, 2 * w.lines, 3 * w.lines), sid
            assert store.one("SELECT ended_at IS NOT NULL FROM sessions WHERE session_id = ?", [sid]) == (True,)


def test_twenty_sigkills_while_four_senders_push_lose_nothing_acknowledged(munged, tmp_path):
    env = server_env(tmp_path, free_port(), mode="munge", extra={"TURINGWATCH_AUTH_MUNGE_SOCKET": munged})
    config = config_of(env)
    server = ProcessServer(env, tmp_path / "server.log")
    server.start()
    watchers = [Watcher(config, tmp_path / "spools", f"kill{i}") for i in range(4)]
    for w in watchers:
        w.start()
    rng = random.Random(10)
    for _ in range(20):
        time.sleep(rng.uniform(0.3, 1.5))   # any moment: mid-request, mid-apply, mid-fsync
        server.kill()
        server.start()
    time.sleep(1.0)
    finish_and_drain(server, watchers)
    assert all(w.lines > 50 for w in watchers), [w.lines for w in watchers]
    stored_exactly_once(config.store.path, watchers)
    journal = Path(config.server.journal_dir)
    assert not list(journal.glob("*.batch")) and not list((journal / "refused").iterdir())
    log = (tmp_path / "server.log").read_text()
    assert log.count("serving on") == 21, log[-3000:]


def test_a_minute_without_the_server_then_everything_arrives(munged, tmp_path):
    env = server_env(tmp_path, free_port(), mode="munge", extra={"TURINGWATCH_AUTH_MUNGE_SOCKET": munged})
    config = config_of(env)
    server = ProcessServer(env, tmp_path / "server.log")
    server.start()
    watchers = [Watcher(config, tmp_path / "spools", f"down{i}", every_s=0.05) for i in range(4)]
    for w in watchers:
        w.start()
    time.sleep(2)
    server.kill()
    down_at = [w.lines for w in watchers]
    time.sleep(60)
    assert all(w.sender.pending_bytes() > 0 for w in watchers)   # spooled, waiting
    server.start()
    finish_and_drain(server, watchers)
    assert all(w.lines > d + 500 for w, d in zip(watchers, down_at, strict=True))
    stored_exactly_once(config.store.path, watchers)


@pytest.mark.usefixtures("user_can_run_turingwatch")
def test_a_users_job_reaches_the_server_and_its_period_analysis(munged, slurm_cluster, turingwatch_command,
                                                               tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])   # the server's squeue/sacct
    env = server_env(tmp_path, free_port(), mode="munge", extra={"TURINGWATCH_AUTH_MUNGE_SOCKET": munged})
    started = datetime.now(UTC) - timedelta(seconds=5)
    with ThreadServer(config_of(env)) as server:
        job_dir = slurm_cluster.make_job_dir("server-job-")
        watch = turingwatch_command.shell("run", "--interval", "2", "--output", f"{job_dir}/out", "--quiet")
        body = (f"{watch} -- {sys.executable} -c 'import time\nt = time.time()\n"
                f"while time.time() - t < 65: pass'\n")  # low_concurrency judges jobs of 60 s or more
        sent = {"TURINGWATCH_SERVER_URL": server.url, "TURINGWATCH_SERVER_SEND_INTERVAL_S": "2",
                "TURINGWATCH_AUTH_MUNGE_SOCKET": munged}
        exports = "".join(f"export {k}={v}\n" for k, v in sent.items())
        job_id = slurm_cluster.sbatch(f"#!/bin/sh\ncd {job_dir}\n{exports}{body}", "-c", "4", "--time=5",
                                      "--job-name", "server-e2e", cwd=job_dir, as_user=True)
        slurm_cluster.wait(job_id, timeout=600)
        store = server.server.store
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = store.one("SELECT count(*), bool_and(ended_at IS NOT NULL), any_value(user_name)"
                            " FROM sessions WHERE job_id = ?", [job_id])
            if row[0] and row[1]:
                break
            time.sleep(0.5)
        assert row[0] >= 1 and row[1] and row[2] == slurm_cluster.user, (
            row, (job_dir / f"slurm-{job_id}.out").read_text()[-2000:])
        samples = store.one("SELECT count(*) FROM step_samples s JOIN sessions USING (session_id)"
                            " WHERE sessions.job_id = ?", [job_id])[0]
        assert samples >= 10
        # The server's own accounting import and analysis of the period hold the job's finding.
        server.server.scheduler.import_accounting()
        period = Period("test", started, datetime.now(UTC) + timedelta(minutes=1))
        server.server.scheduler._analyse_period(period, mail=False)
        rules = {r[0] for r in store.query("SELECT rule FROM analysis_findings WHERE job_id = ?", [job_id])}
        assert "low_concurrency" in rules, rules
        assert (Path(server.config.analysis.result_dir) / "test.tar.gz").exists()
