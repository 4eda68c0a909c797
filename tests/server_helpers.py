"""A real turingwatch server for tests: in a thread of the test (fast) or as its own process
(the tests that SIGKILL it), on a free loopback port, with its own store and journal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcher import spool
from watcher.auth import Signer
from watcher.config import Config, load_config
from watcher.records import ProcessSample, StepSample


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tmp_path: Path, port: int, *, mode: str = "hmac", extra: dict[str, str] | None = None
               ) -> dict[str, str]:
    """TURINGWATCH_* settings of a server under ``tmp_path``; in hmac mode with a key file."""
    env = {
        "TURINGWATCH_STORE_PATH": str(tmp_path / "site.duckdb"),
        "TURINGWATCH_SERVER_LISTEN": f"127.0.0.1:{port}",
        "TURINGWATCH_SERVER_URL": f"http://127.0.0.1:{port}",
        "TURINGWATCH_SERVER_JOURNAL_DIR": str(tmp_path / "journal"),
        "TURINGWATCH_SERVER_PUBLISH_DIR": str(tmp_path / "published"),
        "TURINGWATCH_SERVER_IMPORT_INTERVAL_S": "0",
        "TURINGWATCH_SERVER_REFRESH_INTERVAL_S": "0",
        "TURINGWATCH_SERVER_PUBLISH_INTERVAL_S": "0",
        "TURINGWATCH_ANALYSIS_RESULT_DIR": str(tmp_path / "results"),
        "TURINGWATCH_DISTRIBUTOR_STATE_DIR": str(tmp_path / "distributor"),
        "TURINGWATCH_SERVER_MAX_BODY_BYTES": str(2**20),
        "TURINGWATCH_AUTH_MODE": mode,
    }
    if mode == "hmac":
        key = tmp_path / "hmac.key"
        if not key.exists():
            key.write_text("k" * 48 + "\n")
            key.chmod(0o600)
        env["TURINGWATCH_AUTH_HMAC_KEY_FILE"] = str(key)
    else:
        env["TURINGWATCH_AUTH_MUNGE_SOCKET"] = "/tmp/turingwatch-slurm/munge/socket"
    env.update(extra or {})
    return env


def config_of(env: dict[str, str]) -> Config:
    return load_config(None, environ=env)


@dataclass
class Session:
    """Spool lines of one made-up session, as a watcher writes them."""

    session_id: str
    user_name: str
    job_id: int | None = None
    node: str = "n1"
    cluster: str = "test"
    mode: str = "run"
    steps: int = 1
    procs: int = 2
    started_at: float = field(default_factory=lambda: time.time() - 3600)

    def head(self) -> str:
        session = {"session_id": self.session_id, "job_id": self.job_id, "cluster": self.cluster,
                   "node": self.node, "mode": self.mode, "user_name": self.user_name,
                   "command": "python train.py", "started_at": self.started_at, "interval_s": 10.0,
                   "cores_available": 4, "mem_requested_bytes": 2**30, "time_limit_s": 7200,
                   "gpu_status": "none", "watcher_version": "test", "meta": {}}
        return json.dumps({"k": "session", "v": spool.SPOOL_VERSION, "session": session,
                           "fields": spool.FIELDS})

    def sample(self, seq: int) -> str:
        steps = [list(StepSample(f"s{i}", self.procs, self.procs, seq * 1.0, 0.5, 10**8, 5 * 10**7,
                                 100, "python", 1, 2, 3, 4, 5, 6, 4, "affinity", 0.0, 10**8, "rss",
                                 None)) for i in range(self.steps)]
        procs = [list(ProcessSample("s0", 100 + i, 1, 5, "python", seq * 0.5, 0.1, 10**7, 1, 2, 3, 4,
                                    5, 6, 1, 0.0, None)) for i in range(self.procs)]
        return json.dumps({"k": "sample", "seq": seq, "ts": self.started_at + 10 * seq,
                           "steps": steps, "procs": procs, "gpus": [], "cmd": []})

    def end(self, seq: int) -> str:
        return json.dumps({"k": "end", "ts": self.started_at + 10 * seq + 1,
                           "end": {"exit_code": 0, "exit_signal": None, "elapsed_s": 10.0 * seq}})

    def batch(self, seqs: range, *, end: bool = False) -> bytes:
        lines = [self.head(), *(self.sample(s) for s in seqs)]
        if end:
            lines.append(self.end(seqs.stop))
        return ("\n".join(lines) + "\n").encode()


def post(url: str, body: bytes, authorization: str | None, *, content_type: str = "application/x-ndjson",
         headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url + "/api/v1/samples", data=body, method="POST")
    request.add_header("Content-Type", content_type)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as got:
            return got.status, json.loads(got.read())
    except urllib.error.HTTPError as exc:
        data = exc.read()
        try:
            return exc.code, json.loads(data)
        except ValueError:
            return exc.code, {"raw": data.decode(errors="replace")}


def get(url: str, path: str, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url + path, timeout=timeout) as got:
            return got.status, got.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def send(url: str, config: Config, body: bytes, **kw: Any) -> tuple[int, dict[str, Any]]:
    return post(url, body, Signer(config.auth).authorization(body), **kw)


class ThreadServer:
    """A Server run in a thread of the test process: what the fast tests use."""

    def __init__(self, config: Config) -> None:
        from watcher.server.daemon import Server

        self.config = config
        self.server = Server(config)
        self.url = config.server.url
        ready = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        if not ready.wait(60):
            raise RuntimeError(f"server did not start: {self.failure}")

    def _run(self, ready: threading.Event) -> None:
        try:
            self.server.run(ready=ready)
        except BaseException as exc:   # reported by __init__ or stop
            self.failure = exc
            ready.set()

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the server did not stop"

    def __enter__(self) -> ThreadServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProcessServer:
    """``turingwatch server`` as its own process (it can be SIGKILLed)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.url = env["TURINGWATCH_SERVER_URL"]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "watcher", "-v", "server"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if get(self.url, "/healthz", timeout=2)[0] in (200, 503):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer in {timeout_s} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)
