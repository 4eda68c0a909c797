"""The server over real HTTP on loopback, in HMAC mode (tests/test_server_munge.py: munge).

Senders other than root are signed as their uid with the shared key (what a root-run node
service would send on their behalf); Slurm's answer to "whose job is N" is the one boundary
replaced here, by a table (the Slurm tests ask the real squeue/sacct).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_helpers import Session, ThreadServer, config_of, free_port, get, post, send, server_env

from watcher.auth import _hmac_sig, body_digest
from watcher.server.journal import Journal
from watcher.store import Store

ALICE = pwd.getpwnam("alice") if any(p.pw_name == "alice" for p in pwd.getpwall()) else None
needs_alice = pytest.mark.skipif(ALICE is None, reason="needs the user alice (scripts/slurm-cluster.sh)")
KEY = b"k" * 48


def as_uid(uid: int, body: bytes, *, ts: int | None = None) -> str:
    ts = int(time.time()) if ts is None else ts
    return f"HMAC uid={uid},ts={ts},sig={_hmac_sig(KEY, uid, ts, body_digest(body))}"


@pytest.fixture
def server(tmp_path):
    env = server_env(tmp_path, free_port())
    config = config_of(env)
    srv = ThreadServer(config)
    owners = {4242: "alice", 4343: "root"}
    srv.server.permissions._job_owner = owners.get
    srv.owners = owners
    yield srv
    if srv.thread.is_alive():
        srv.stop()


def stored(config, sql: str, params=None):
    with Store(config.store.path, read_only=True) as store:
        return store.query(sql, params)


def counts(srv: ThreadServer) -> tuple[int, int]:
    return srv.server.store.one("SELECT (SELECT count(*) FROM step_samples),"
                                " (SELECT count(*) FROM sample_rounds)")


def test_a_batch_is_stored_once_however_often_it_is_sent(server):
    s = Session("s-once", "root", steps=2)
    assert send(server.url, server.config, s.batch(range(0, 50))) == (200, {"accepted": 51, "duplicates": 0})
    # Overlapping, then the same again: only the new seqs and the end count.
    assert send(server.url, server.config, s.batch(range(40, 60), end=True)) == (
        200, {"accepted": 11, "duplicates": 11})  # the session line, seqs 40-49
    assert send(server.url, server.config, s.batch(range(40, 60), end=True)) == (
        200, {"accepted": 0, "duplicates": 22})
    server.stop()
    assert stored(server.config, "SELECT count(*), count(DISTINCT seq) FROM step_samples") == [(120, 60)]
    assert stored(server.config, "SELECT ended_at IS NOT NULL FROM sessions") == [(True,)]
    assert not list((Path(server.config.server.journal_dir)).glob("*.batch"))


@needs_alice
def test_what_each_refusal_answers_and_that_nothing_of_it_is_stored(server):
    url, cfg = server.url, server.config
    mine = Session("s-alice", "alice", job_id=4242)
    ok = mine.batch(range(0, 5))
    assert post(url, ok, as_uid(ALICE.pw_uid, ok))[0] == 200
    before = counts(server)
    tampered = ok.replace(b'"seq": 1,', b'"seq": 9,')
    assert tampered != ok

    cases = {
        "unsigned": (post(url, ok, None), 401),
        "garbled credential": (post(url, ok, "MUNGE abc"), 401),
        "tampered after signing": (post(url, tampered, as_uid(ALICE.pw_uid, ok)), 401),
        "expired": (post(url, ok, as_uid(ALICE.pw_uid, ok, ts=int(time.time()) - 3600)), 401),
        "another user's job": (post(url, (b := Session("s-x", "alice", job_id=4343).batch(range(3))),
                                    as_uid(ALICE.pw_uid, b)), 403),
        "another user's session": (post(url, (b := Session("s-y", "root").batch(range(3))),
                                        as_uid(ALICE.pw_uid, b)), 403),
        "a job Slurm does not know": (post(url, (b := Session("s-z", "alice", job_id=99).batch(range(3))),
                                           as_uid(ALICE.pw_uid, b)), 403),
        "a node-wide session": (post(url, (b := Session("s-n", "alice", mode="node").batch(range(3))),
                                     as_uid(ALICE.pw_uid, b)), 403),
        "not the session line first": (post(url, (b := mine.sample(7).encode() + b"\n"),
                                             as_uid(ALICE.pw_uid, b)), 400),
        "a bad line in the middle": (post(url, (b := ok + b'{"k":"sample","seq":"x"}\n'),
                                          as_uid(ALICE.pw_uid, b)), 400),
        "not JSON": (post(url, (b := ok + b"{oops\n"), as_uid(ALICE.pw_uid, b)), 400),
        "wrong content type": (post(url, ok, as_uid(ALICE.pw_uid, ok), content_type="text/plain"), 400),
        "oversized": (post(url, (b := b"x" * (cfg.server.max_body_bytes + 1)), as_uid(ALICE.pw_uid, b)), 413),
    }
    wrong = {what: got for what, (got, want) in cases.items() if got[0] != want}
    assert not wrong, wrong
    for (_status, body), _want in cases.values():
        assert body.get("error"), body
    assert "line 7" in cases["a bad line in the middle"][0][1]["error"]
    assert counts(server) == before
    assert server.server.store.one("SELECT count(*) FROM sessions")[0] == 1
    # The mistakes never cost a good batch: the server still answers, and stores.
    more = mine.batch(range(5, 8), end=True)
    assert post(url, more, as_uid(ALICE.pw_uid, more)) == (200, {"accepted": 4, "duplicates": 1})
    # An ended session's samples are final for its user.
    late = mine.batch(range(8, 10))
    assert post(url, late, as_uid(ALICE.pw_uid, late))[0] == 409
    _status, metrics = get(url, "/metrics")
    text = metrics.decode()
    for reason in ("missing", "malformed", "digest", "expired", "forged", "too_large", "ended"):
        assert f'turingwatch_ingest_rejected_total{{reason="{reason}"}}' in text, reason
    assert 'turingwatch_ingest_requests_total{code="403"} 4.0' in text


def test_health_metrics_and_status(server):
    s = Session("s-h", "root", node="gpu07")
    body = s.batch(range(3))
    send(server.url, server.config, body, headers={"X-Turingwatch-Spool-Bytes": "12345"})
    status, health = get(server.url, "/healthz")
    facts = json.loads(health)
    assert status == 200 and facts["store"] == "ok" and facts["credentials"] == "hmac"
    assert facts["journal"] == {"batches": 0, "lag_s": 0.0, "bytes": 0}
    text = get(server.url, "/metrics")[1].decode()
    for name in ("turingwatch_ingest_requests_total", "turingwatch_ingest_lines_total",
                 "turingwatch_ingest_lag_seconds", "turingwatch_journal_bytes",
                 "turingwatch_last_import_timestamp_seconds",
                 "turingwatch_last_analysis_timestamp_seconds"):
        assert name in text, name
    assert 'turingwatch_sender_spool_bytes{node="gpu07"} 12345.0' in text
    facts = json.loads(get(server.url, "/api/v1/status")[1])
    assert facts["ingest"]["lines"] == 4 and facts["sender_spool_bytes"] == {"gpu07": 12345}
    assert facts["sessions_live"] == 1


def test_the_journal_a_crash_left_is_stored_before_the_server_listens(tmp_path):
    env = server_env(tmp_path, free_port())
    config = config_of(env)
    s = Session("s-crash", "root")
    journal = Journal(Path(config.server.journal_dir))
    journal.append("s-crash", 0, s.batch(range(0, 30)))
    journal.append("s-crash", 0, s.batch(range(20, 40), end=True))
    journal.append("s-other", 0, b'{"k":"session"}\n')          # refused by the store: set aside
    (Path(config.server.journal_dir) / ".0000000000000009.tmp").write_bytes(b"half")  # never answered
    journal.close()
    with ThreadServer(config) as srv:
        assert srv.server.store.one("SELECT count(*) FROM sample_rounds")[0] == 40
        assert srv.server.store.one("SELECT ended_at IS NOT NULL FROM sessions")[0]
    left = sorted(p.name for p in Path(config.server.journal_dir).rglob("*") if p.is_file())
    assert left == ["0000000000000003.batch", "0000000000000003.why"], left


def test_a_one_shot_writer_is_told_the_server_holds_the_store(server, tmp_path):
    # Its own process: DuckDB shares one open database among the connections of a process.
    env = {**os.environ, "TURINGWATCH_STORE_PATH": server.config.store.path}
    (tmp_path / "spools").mkdir()
    got = subprocess.run([sys.executable, "-m", "watcher", "ingest", str(tmp_path / "spools")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert got.returncode != 0
    assert "the turingwatch server's (pid" in got.stderr and "turingwatch status" in got.stderr, got.stderr


def test_status_prints_what_the_server_knows(server):
    from click.testing import CliRunner

    from watcher.cli import cli

    send(server.url, server.config, Session("s-st", "root").batch(range(2)))
    env = {"TURINGWATCH_SERVER_URL": server.url}
    got = CliRunner().invoke(cli, ["status"], env=env)
    assert got.exit_code == 0, got.output
    assert "3 lines stored" in got.output and "1 sessions on 1 nodes" in got.output
    got = CliRunner().invoke(cli, ["status", "--format", "json"], env=env)
    assert json.loads(got.output)["ingest"]["lines"] == 3
    dead = CliRunner().invoke(cli, ["status"], env={"TURINGWATCH_SERVER_URL": f"http://127.0.0.1:{free_port()}"})
    assert dead.exit_code == 1 and "no answer from the server" in dead.output


def test_the_server_refuses_to_start_without_a_way_to_verify(tmp_path):
    from watcher.server.daemon import Server, ServerError

    env = server_env(tmp_path, free_port())
    env["TURINGWATCH_AUTH_HMAC_KEY_FILE"] = str(tmp_path / "missing.key")
    with pytest.raises(ServerError, match="cannot verify senders"):
        Server(config_of(env))
    env = server_env(tmp_path, free_port(), mode="munge",
                     extra={"TURINGWATCH_AUTH_MUNGE_SOCKET": str(tmp_path / "no-munged")})
    with pytest.raises(ServerError, match="cannot verify senders"):
        Server(config_of(env))


_line = st.one_of(
    st.binary(max_size=80),
    st.dictionaries(st.sampled_from(["k", "seq", "ts", "steps", "procs", "end", "v"]),
                    st.one_of(st.integers(-5, 2**70), st.floats(allow_nan=True), st.text(max_size=8),
                              st.none(), st.lists(st.lists(st.integers(), max_size=3), max_size=3)),
                    max_size=6).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(_line, min_size=0, max_size=6))
def test_hostile_bodies_are_refused_and_store_nothing(server, body):
    head = Session("s-hyp", "root").head().encode()
    data = b"\n".join([head, *body, b'{"k":"sample","seq":"not a seq","ts":1}'])
    before = counts(server)
    status, answer = send(server.url, server.config, data)
    assert status == 400, (status, answer)
    assert counts(server) == before
    assert server.server.store.one("SELECT count(*) FROM sessions WHERE session_id = 's-hyp'")[0] == 0


def test_tls_when_given_a_certificate(tmp_path):
    from dataclasses import replace

    from watcher.auth import Signer
    from watcher.sending.client import Client, SendError

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    key.chmod(0o600)
    port = free_port()
    env = server_env(tmp_path, port, extra={"TURINGWATCH_SERVER_TLS_CERT_FILE": str(cert),
                                            "TURINGWATCH_SERVER_TLS_KEY_FILE": str(key),
                                            "TURINGWATCH_SERVER_URL": f"https://127.0.0.1:{port}"})
    config = config_of(env)
    body = Session("s-tls", "root").batch(range(3))
    with ThreadServer(config):
        trusting = Client(replace(config.server, tls_ca_file=str(cert)))
        reply = trusting.post_samples(body, authorization=Signer(config.auth).authorization(body),
                                      spool_bytes=0)
        assert (reply.status, reply.data) == (200, {"accepted": 4, "duplicates": 0})
        with pytest.raises(SendError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            Client(config.server).post_samples(body, authorization="x", spool_bytes=0)
        with pytest.raises(OSError):   # no plain HTTP on the TLS port
            post(f"http://127.0.0.1:{port}", body, "x", timeout=5)


def test_status_and_metrics_show_the_distributor(server):
    from click.testing import CliRunner

    from watcher.cli import cli

    state = Path(server.config.distributor.state_dir)
    assert json.loads(get(server.url, "/api/v1/status")[1])["distributor"] is None
    state.mkdir(parents=True)
    (state / "distributor.state").write_text(json.dumps({
        "user": "turingwatch", "running": 2, "pending": 1, "submitted": 9, "errors": {},
        "updated_at": "2026-12-03T07:00:00+00:00", "nodes": {"n1": {}, "n2": {}}}))
    assert json.loads(get(server.url, "/api/v1/status")[1])["distributor"]["submitted"] == 9
    assert 'turingwatch_distributor_jobs{state="running"} 2.0' in get(server.url, "/metrics")[1].decode()
    got = CliRunner().invoke(cli, ["status"], env={"TURINGWATCH_SERVER_URL": server.url})
    assert "distributor 2 scrape jobs running, 1 pending, 9 submitted, 2 nodes sampled" in got.output
