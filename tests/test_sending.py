"""The senders: spool lines reach a real HTTP server on loopback once each, whatever it answers.

The server here is a small stand-in for the real one's ingest API (docs/sending.md): it checks
the Authorization header with watcher.auth.Verifier (HMAC, or munge in the slurm test), stores
lines by (session_id, seq) as the real one does, answers a queued status on demand, and can be
stopped and started again on the same port.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from watcher.auth import AuthError, Verifier
from watcher.config import AuthSettings, Config, ServerSettings
from watcher.records import SampleRecord
from watcher.sending import SendingThread, SpoolSender, spools_under
from watcher.sending.client import SPOOL_BYTES_HEADER
from watcher.spool import SpoolWriter
from watcher.watch.sinks import start_sending

REPO = Path(__file__).resolve().parent.parent
MUNGE_SOCKET = Path("/tmp/turingwatch-slurm/munge/socket")


class IngestServer:
    """What the real server does with a batch, in a thread: verify, store by key, answer."""

    def __init__(self, auth: AuthSettings, *, max_body: int = 1 << 20) -> None:
        self.verifier = Verifier(auth)
        self.max_body = max_body
        self.samples: dict[tuple[str, int], bytes] = {}
        self.sessions: dict[str, bytes] = {}
        self.ends: dict[str, bytes] = {}
        self.received: list[list[bytes]] = []    # every batch that was stored, as lines
        self.statuses: list[int] = []            # what was answered, in order
        self.spool_bytes: list[int] = []
        self.queued: list[tuple[int, dict]] = []   # (status, headers) to answer next
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, status: int, times: int = 1, **headers: str) -> None:
        self.queued += [(status, headers)] * times

    def start(self) -> IngestServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload, headers = server.handle(self.path, self.headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def handle(self, path, headers, body: bytes) -> tuple[int, dict, dict]:
        with self._lock:
            status, payload, extra = self._handle(path, headers, body)
            self.statuses.append(status)
            return status, payload, extra

    def _handle(self, path, headers, body):
        if path != "/api/v1/samples" or headers.get("Content-Type") != "application/x-ndjson":
            return 404, {"error": "not here"}, {}
        try:
            self.verifier.verify(headers.get("Authorization"), body)
        except AuthError as exc:
            return 401, {"error": str(exc)}, {}
        self.spool_bytes.append(int(headers[SPOOL_BYTES_HEADER]))
        if len(body) > self.max_body:
            return 413, {"error": "body too large"}, {}
        if self.queued:
            status, extra = self.queued.pop(0)
            return status, {"error": f"line 1: told to answer {status}"}, extra
        lines = body.splitlines(keepends=True)
        assert all(line.endswith(b"\n") for line in lines)
        first = json.loads(lines[0])
        assert first["k"] == "session", "every batch starts with its session line"
        session_id = first["session"]["session_id"]
        self.sessions.setdefault(session_id, lines[0])
        accepted = duplicates = 0
        for line in lines[1:]:
            obj = json.loads(line)
            if obj["k"] == "sample":
                key = (session_id, obj["seq"])
                if key in self.samples:
                    duplicates += 1
                else:
                    self.samples[key] = line
                    accepted += 1
            elif obj["k"] == "end":
                self.ends[session_id] = line
        self.received.append(lines)
        return 200, {"accepted": accepted, "duplicates": duplicates}, {}


@pytest.fixture
def auth(tmp_path) -> AuthSettings:
    key = tmp_path / "hmac.key"
    key.write_text("a shared key for the tests\n")
    key.chmod(0o600)
    return AuthSettings(mode="hmac", hmac_key_file=str(key))


@pytest.fixture
def server(auth):
    srv = IngestServer(auth).start()
    yield srv
    srv.stop()


def settings(url: str, **kw) -> ServerSettings:
    return ServerSettings(url=url, **{"send_timeout_s": 2.0, **kw})


def write_spool(path: Path, samples: int, *, session_id: str = "s-1", end: bool = True,
                pad: int = 100, first_seq: int = 0) -> Path:
    writer = SpoolWriter(path)
    if first_seq == 0:
        writer.write_session({"session_id": session_id, "job_id": 7, "node": "n1", "mode": "run",
                              "started_at": 1.0, "interval_s": 1.0})
    for seq in range(first_seq, first_seq + samples):
        writer.write_sample(record(seq, pad))
    if end:
        writer.write_end(2.0, {"exit_code": 0})
    writer.close()
    return path


def new_spool(tmp_path: Path) -> tuple[Path, SpoolWriter]:
    """A spool of session s-1 on n1 with its session line written, and its writer."""
    path = tmp_path / "n1.1.jsonl"
    writer = SpoolWriter(path)
    writer.write_session({"session_id": "s-1", "node": "n1", "mode": "run", "started_at": 1.0,
                          "interval_s": 1.0})
    return path, writer


def record(seq: int, pad: int = 100) -> SampleRecord:
    return SampleRecord(seq, 1000.0 + seq, [], [], [], [(1, 1, "x" * pad)])


def sample_lines(path: Path) -> dict[int, bytes]:
    out = {}
    for line in path.read_bytes().splitlines(keepends=True):
        obj = json.loads(line)
        if obj["k"] == "sample":
            out[obj["seq"]] = line
    return out


def drain(sender: SpoolSender, *, limit_s: float = 20) -> None:
    """Send until caught up, sleeping through back-offs (which start at about a second)."""
    deadline = time.monotonic() + limit_s
    while not sender.send_pending():
        assert time.monotonic() < deadline, sender.last_problem
        time.sleep(max(0.0, min(sender.retry_at - time.monotonic(), 0.5)))


# -- batches and offsets ------------------------------------------------------------------------
def test_every_batch_is_led_by_the_session_line_and_delivers_each_line_once(tmp_path, server, auth):
    spool = write_spool(tmp_path / "n1.1.jsonl", 60)
    sender = SpoolSender(settings(server.url, send_batch_bytes=4096), auth)
    sender.add(spool)
    assert sender.send_pending()
    assert len(server.received) > 3, "4 KiB batches: many of them"
    header = spool.read_bytes().splitlines(keepends=True)[0]
    assert all(batch[0] == header for batch in server.received)
    assert all(sum(map(len, batch)) <= 4096 for batch in server.received)
    assert {seq: line for (_, seq), line in server.samples.items()} == sample_lines(spool)
    assert "s-1" in server.ends
    sent = json.loads((tmp_path / "n1.1.jsonl.sent").read_text())
    assert sent == {"offset": spool.stat().st_size, "session_id": "s-1"}
    assert oct((tmp_path / "n1.1.jsonl.sent").stat().st_mode & 0o777) == "0o600"
    # Nothing more to send: no request at all.
    before = len(server.statuses)
    assert sender.send_pending() and len(server.statuses) == before
    assert server.spool_bytes[0] == spool.stat().st_size and server.spool_bytes[-1] > 0


def test_a_second_sender_resumes_from_the_sent_offset(tmp_path, server, auth):
    spool = write_spool(tmp_path / "n1.1.jsonl", 20, end=False)
    first = SpoolSender(settings(server.url), auth)
    first.add(spool)
    assert first.send_pending()
    delivered = spool.stat().st_size
    write_spool(spool, 20, first_seq=20)  # the job goes on: more lines, then its end
    second = SpoolSender(settings(server.url), auth)  # a new process: only the .sent file
    assert second.add(spool).offset == delivered
    assert second.send_pending()
    assert len(server.received) == 2
    later = server.received[1]
    assert [json.loads(line).get("seq") for line in later[1:-1]] == list(range(20, 40))
    assert sorted(seq for _, seq in server.samples) == list(range(40))
    assert sum(len(batch) - 1 for batch in server.received) == 41  # 40 samples + the end, once


def test_a_torn_last_line_waits_until_it_is_whole(tmp_path, server, auth):
    spool = write_spool(tmp_path / "n1.1.jsonl", 3, end=False)
    whole = spool.stat().st_size
    with spool.open("ab") as f:
        f.write(b'{"k":"sample","seq":3,')
    sender = SpoolSender(settings(server.url), auth)
    sender.add(spool)
    assert sender.send_pending()
    assert sender.delivered(spool) == whole and len(server.samples) == 3


def test_a_sent_file_of_another_session_is_not_trusted(tmp_path, server, auth):
    spool = write_spool(tmp_path / "n1.1.jsonl", 5)
    (tmp_path / "n1.1.jsonl.sent").write_text('{"offset": 99999, "session_id": "someone-else"}\n')
    sender = SpoolSender(settings(server.url), auth)
    assert sender.add(spool).offset == 0
    assert sender.send_pending() and len(server.samples) == 5


# -- the server down, busy, or refusing ------------------------------------------------------------
def test_server_down_then_up_delivers_everything(tmp_path, server, auth, caplog):
    spool = write_spool(tmp_path / "n1.1.jsonl", 30)
    server.stop()
    sender = SpoolSender(settings(server.url, send_batch_bytes=4096), auth)
    sender.add(spool)
    with caplog.at_level(logging.INFO, logger="watcher"):
        assert not sender.send_pending()
        assert sender.failures == 1 and sender.retry_at > time.monotonic()
        assert not sender.send_pending(), "not due yet: no try at all"
        assert sender.failures == 1 and sender.delivered(spool) == 0
        server.start()  # the same port
        drain(sender)
    assert sorted(seq for _, seq in server.samples) == list(range(30))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "retrying with back-off" in warned[0].getMessage()
    assert any("takes batches again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [503, 500, 401])
def test_busy_or_failing_server_keeps_the_lines(tmp_path, server, auth, status):
    spool = write_spool(tmp_path / "n1.1.jsonl", 5)
    server.answer(status, Retry_After="1")
    sender = SpoolSender(settings(server.url), auth)
    sender.add(spool)
    t0 = time.monotonic()
    assert not sender.send_pending()
    assert sender.delivered(spool) == 0 and sender.retry_at - t0 >= 0.99  # Retry-After: 1
    drain(sender)
    assert len(server.samples) == 5 and server.statuses == [status, 200]


def test_back_off_grows_with_jitter_and_is_capped(tmp_path, auth):
    sender = SpoolSender(settings("http://127.0.0.1:9"), auth, clock=lambda: 0.0)
    delays = []
    for _ in range(15):
        sender._retry("down")
        delays.append(sender.retry_at)
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert all(150.0 <= d <= 300.0 for d in delays[10:])
    sender._retry("busy", retry_after_s=600)
    assert sender.retry_at == 600


def test_too_large_batches_are_halved_and_a_line_over_the_limit_skipped(tmp_path, auth, caplog):
    srv = IngestServer(auth, max_body=6000).start()
    try:
        spool = tmp_path / "n1.1.jsonl"
        write_spool(spool, 40, end=False)
        writer = SpoolWriter(spool)
        writer.write_sample(record(40, pad=8000))   # alone, too large for the server
        writer.write_sample(record(41))
        writer.write_end(3.0, {"exit_code": 0})
        writer.close()
        sender = SpoolSender(settings(srv.url, send_batch_bytes=1 << 20), auth)
        sender.add(spool)
        with caplog.at_level(logging.WARNING, logger="watcher"):
            assert sender.send_pending()
        assert 413 in srv.statuses
        assert sorted(seq for _, seq in srv.samples) == [*range(40), 41] and "s-1" in srv.ends
        assert sender.spools[spool].skipped_lines == 1
        assert sum("larger than the server takes" in r.getMessage() for r in caplog.records) == 1
    finally:
        srv.stop()


@pytest.mark.parametrize("status", [400, 403])
def test_refused_batches_are_skipped_with_one_warning(tmp_path, server, auth, caplog, status):
    spool = write_spool(tmp_path / "n1.1.jsonl", 60)
    server.answer(status, times=2)
    sender = SpoolSender(settings(server.url, send_batch_bytes=4096), auth)
    sender.add(spool)
    with caplog.at_level(logging.WARNING, logger="watcher"):
        assert sender.send_pending()
    state = sender.spools[spool]
    assert state.skipped_lines > 0 and len(state.refusals) == 2
    assert server.samples and "s-1" in server.ends, "the rest still flows"
    assert len(server.samples) + state.skipped_lines == 60
    assert state.offset == spool.stat().st_size
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"told to answer {status}" in warnings[0]


# -- the bound ------------------------------------------------------------------------------------
def test_the_bound_stops_the_spool_growing_and_keeps_the_end_line(tmp_path, auth, caplog):
    path = tmp_path / "n1.1.jsonl"
    config = Config(server=settings("http://127.0.0.1:9", max_spool_bytes=2**16), auth=auth)
    writer = SpoolWriter(path)
    writer.write_session({"session_id": "s-1", "node": "n1", "mode": "run", "started_at": 1.0,
                          "interval_s": 1.0})
    sending = start_sending(config, path, writer)  # port 9: nobody there
    assert sending is not None
    with caplog.at_level(logging.WARNING, logger="watcher"):
        written = [writer.write_sample(record(seq, pad=1000)) for seq in range(200)]
        assert written.count(True) < 70 and written[-1] is False and writer.holding_back
        grown = path.stat().st_size
        writer.write_sample(record(201))
        assert path.stat().st_size == grown
        writer.write_end(5.0, {"exit_code": 0})
        writer.close()
    assert 2**16 <= grown <= 2**16 + 2000
    assert json.loads(path.read_bytes().splitlines()[-1])["k"] == "end"
    assert sum("no more sample lines" in r.getMessage() for r in caplog.records) == 1
    sending.finish()


def test_sample_lines_are_written_again_once_the_backlog_drains(tmp_path, server, auth, caplog):
    path, writer = new_spool(tmp_path)
    sender = SpoolSender(settings(server.url), auth)
    sender.add(path)
    writer.bound(2**16, lambda: sender.delivered(path))
    with caplog.at_level(logging.WARNING, logger="watcher"):
        while writer.write_sample(record(len(sample_lines(path)), pad=1000)):
            pass
        assert writer.holding_back
        assert sender.send_pending()
        assert writer.write_sample(record(999)) and not writer.holding_back
    assert any("written again" in r.getMessage() for r in caplog.records)


# -- the thread beside a job ----------------------------------------------------------------------
def test_the_sending_thread_sends_at_once_every_interval_and_at_the_end(tmp_path, server, auth):
    path, writer = new_spool(tmp_path)
    sender = SpoolSender(settings(server.url), auth)
    sender.add(path)
    thread = SendingThread(sender, interval_s=1.0, final_wait_s=4.0)
    thread.start()
    deadline = time.monotonic() + 5
    while "s-1" not in server.sessions:  # the session line goes first, right away
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for seq in range(5):
        writer.write_sample(record(seq))
    time.sleep(1.5)
    assert len(server.samples) == 5 and "s-1" not in server.ends
    writer.write_end(9.0, {"exit_code": 0})
    t0 = time.monotonic()
    assert thread.join() and "s-1" in server.ends
    assert time.monotonic() - t0 < 2


def test_the_final_flush_is_bounded_when_the_server_is_down(tmp_path, auth):
    path = write_spool(tmp_path / "n1.1.jsonl", 3)
    sender = SpoolSender(settings("http://127.0.0.1:9"), auth)
    sender.add(path)
    thread = SendingThread(sender, interval_s=30, final_wait_s=1.5)
    thread.start()
    t0 = time.monotonic()
    assert not thread.join()
    assert time.monotonic() - t0 < 2.5 and sender.delivered(path) == 0


def test_a_sender_that_cannot_start_says_so_and_the_job_goes_on(tmp_path, auth, caplog):
    writer = SpoolWriter(tmp_path / "n1.1.jsonl")
    bad = [Config(server=settings("not a url"), auth=auth),
           Config(server=settings("http://127.0.0.1:9"), auth=AuthSettings(mode="hmac"))]
    with caplog.at_level(logging.WARNING, logger="watcher"):
        assert [start_sending(config, writer.path, writer) for config in bad] == [None, None]
    assert sum("not sending to" in r.getMessage() for r in caplog.records) == 2
    assert writer.write_sample(record(0))  # no bound without a sender


# -- the commands ---------------------------------------------------------------------------------
def turingwatch(cwd: Path, *args: str, env: dict[str, str], timeout: float = 120):
    full = {k: v for k, v in os.environ.items() if not k.startswith("TURINGWATCH_")}
    return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**full, "PYTHONPATH": str(REPO), **env})


def sender_env(url: str, auth: AuthSettings) -> dict[str, str]:
    return {"TURINGWATCH_SERVER_URL": url, "TURINGWATCH_AUTH_MODE": auth.mode,
            "TURINGWATCH_AUTH_HMAC_KEY_FILE": auth.hmac_key_file,
            "TURINGWATCH_SERVER_SEND_INTERVAL_S": "1", "TURINGWATCH_SERVER_SEND_TIMEOUT_S": "1"}


def test_run_with_a_dead_server_exits_as_the_job_and_prints_the_card(tmp_path, auth):
    env = sender_env("http://127.0.0.1:9", auth)
    t0 = time.monotonic()
    done = turingwatch(tmp_path, "run", "-i", "0.5", "-o", "out", "--", "sh", "-c",
                       "sleep 1.2; echo job-output; exit 3", env=env)
    assert done.returncode == 3, done.stderr
    assert "job-output" in done.stdout and "turingwatch report card" in done.stderr
    assert "retrying with back-off" in done.stderr
    assert time.monotonic() - t0 < 30
    (spool,) = (tmp_path / "out" / "spool").glob("*.jsonl")
    assert json.loads(spool.read_bytes().splitlines()[-1])["k"] == "end"
    # A URL that cannot be one, or a name that does not resolve: the same.
    for url in ("http//nowhere", "http://no-such-host.invalid:1"):
        done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "o2", "--", "sh", "-c",
                           "exit 4", env={**env, "TURINGWATCH_SERVER_URL": url})
        assert done.returncode == 4, done.stderr


def test_run_sends_its_session_while_it_runs_and_its_end_line(tmp_path, server, auth):
    env = sender_env(server.url, auth)
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "out", "--", "sleep", "2.5", env=env)
    assert done.returncode == 0, done.stderr
    (spool,) = (tmp_path / "out" / "spool").glob("*.jsonl")
    (session_id,) = server.sessions
    assert session_id in server.ends and len(server.received) >= 2  # live batches, then the end
    assert {seq: line for (_, seq), line in server.samples.items()} == sample_lines(spool)
    assert json.loads((spool.parent / (spool.name + ".sent")).read_text())["offset"] == spool.stat().st_size


def test_ingest_send_delivers_what_is_left_and_says_so(tmp_path, server, auth):
    jobs = tmp_path / "jobs"
    a = write_spool(jobs / "job1" / "spool" / "n1.1.jsonl", 10, session_id="a")
    b = write_spool(jobs / "job2" / "spool" / "n2.2.jsonl", 10, session_id="b")
    (jobs / "link.jsonl").symlink_to(a)   # never followed
    (jobs / "job2" / "spool" / ".n2.2.jsonl.x.tmp").write_text("a copy in progress")
    assert spools_under([jobs]) == [a, b]
    env = sender_env(server.url, auth)
    pre = SpoolSender(settings(server.url), auth)  # a's job sent it all already
    pre.add(a)
    assert pre.send_pending()

    done = turingwatch(tmp_path, "ingest", "--send", str(jobs), env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{a}: nothing to deliver (all of it was before)"
    assert lines[1].startswith(f"{b}: delivered 11 lines (") and len(lines) == 2
    assert {session for session, _ in server.samples} == {"a", "b"}
    again = turingwatch(tmp_path, "ingest", "--send", str(jobs / "job2"), env=env)
    assert again.returncode == 0 and "nothing to deliver" in again.stdout

    write_spool(jobs / "job3" / "spool" / "n3.3.jsonl", 4, session_id="c")
    server.stop()
    down = turingwatch(tmp_path, "ingest", "--send", str(jobs / "job3" / "spool"), env=env)
    assert down.returncode == 1
    assert "not delivered" in down.stdout and "left for a later try" in down.stdout
    assert "1 of 1 spool(s) not fully delivered" in down.stderr
    server.start()
    up = turingwatch(tmp_path, "ingest", "--send", str(jobs / "job3"), env=env)
    assert up.returncode == 0, up.stderr
    assert sorted(seq for session, seq in server.samples if session == "c") == [0, 1, 2, 3]


def test_ingest_send_needs_a_server_and_paths(tmp_path, auth):
    assert turingwatch(tmp_path, "ingest", "--send", str(tmp_path), env={}).returncode == 2
    env = sender_env("http://127.0.0.1:9", auth)
    assert turingwatch(tmp_path, "ingest", "--send", env=env).returncode == 2
    assert turingwatch(tmp_path, "ingest", "--send", "--keep", str(tmp_path), env=env).returncode == 2


# -- real munge -----------------------------------------------------------------------------------
@pytest.mark.slurm
def test_batches_signed_with_real_munge(tmp_path):
    if not MUNGE_SOCKET.exists():
        pytest.skip(f"no munged at {MUNGE_SOCKET}")
    auth = AuthSettings(mode="munge", munge_socket=str(MUNGE_SOCKET))
    srv = IngestServer(auth).start()
    try:
        spool = write_spool(tmp_path / "n1.1.jsonl", 20)
        sender = SpoolSender(settings(srv.url, send_batch_bytes=4096), auth)
        sender.add(spool)
        assert sender.send_pending(), sender.last_problem
        assert len(srv.received) > 1 and len(srv.samples) == 20 and 401 not in srv.statuses
        # The same from `run`'s sender thread (libmunge once crashed any thread but the main one).
        env = {"TURINGWATCH_SERVER_URL": srv.url, "TURINGWATCH_AUTH_MODE": "munge",
               "TURINGWATCH_AUTH_MUNGE_SOCKET": str(MUNGE_SOCKET)}
        done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "out", "--", "sh", "-c",
                           "sleep 1; exit 5", env=env)
        assert done.returncode == 5 and "not sending" not in done.stderr, done.stderr
        assert len(srv.sessions) == 2 and len(srv.ends) == 2 and 401 not in srv.statuses
    finally:
        srv.stop()


def test_the_scrapers_delivered_ended_spools_are_removed(tmp_path, server, auth):
    ended, running = tmp_path / "ended", tmp_path / "running"
    ended.mkdir()
    running.mkdir()
    done_path, done = new_spool(ended)
    done.write_sample(record(0))
    done.write_end(2.0, {"exit_code": 0})
    done.close()
    live_path, live = new_spool(running)
    live.write_sample(record(0))
    sender = SpoolSender(settings(server.url), auth, remove_delivered=True)
    sender.add(done_path)
    sender.add(live_path)
    assert sender.send_pending()
    assert not done_path.exists() and not Path(f"{done_path}.sent").exists()
    assert live_path.exists() and list(sender.spools) == [live_path]
    # A job's own spools (run, attach) are never removed.
    keep = SpoolSender(settings(server.url), auth)
    keep_path, kept = new_spool(tmp_path)
    kept.write_end(3.0, {})
    kept.close()
    keep.add(keep_path)
    assert keep.send_pending() and keep_path.exists()
    live.close()
