"""The server with real munge credentials and real Slurm owners (scripts/slurm-cluster.sh)."""

from __future__ import annotations

import subprocess
import time

import pytest
from server_helpers import Session, ThreadServer, config_of, free_port, post, server_env

from watcher.auth import body_digest
from watcher.auth.munge import Munge

pytestmark = pytest.mark.slurm


@pytest.fixture
def cluster(slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])   # the server's squeue/sacct
    return slurm_cluster


@pytest.fixture
def server(cluster, tmp_path):
    socket = cluster.env.get("MUNGE_SOCKET", "/tmp/turingwatch-slurm/munge/socket")
    srv = ThreadServer(config_of(server_env(tmp_path, free_port(), mode="munge",
                                            extra={"TURINGWATCH_AUTH_MUNGE_SOCKET": socket})))
    srv.socket = socket
    yield srv
    srv.stop()


def credential_of(cluster, body: bytes, socket: str, *, as_user: bool) -> str:
    """A munge credential of the body's digest, encoded by the test user (or root)."""
    argv = ["munge", f"--socket={socket}", "-s", body_digest(body)]
    if as_user:
        argv = [*cluster.as_user_prefix(), *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def test_munge_credentials_replays_and_expiry(server):
    munge = Munge(server.socket)
    body = Session("s-munge", "root").batch(range(10))
    header = f"MUNGE {munge.encode(body_digest(body).encode())}"
    assert post(server.url, body, header) == (200, {"accepted": 11, "duplicates": 0})
    status, answer = post(server.url, body, header)      # the very same request again
    assert status == 401 and "Replayed" in answer["error"], answer
    short = f"MUNGE {munge.encode(body_digest(body).encode(), ttl_s=1)}"
    time.sleep(2.5)
    status, answer = post(server.url, body, short)
    assert status == 401 and "Expired" in answer["error"], answer
    # A credential of another body (the digest it signs is not this body's).
    other = f"MUNGE {munge.encode(body_digest(body + b' ').encode())}"
    assert post(server.url, body, other)[0] == 401
    assert server.server.store.one("SELECT count(*) FROM sample_rounds")[0] == 10


@pytest.mark.usefixtures("user_can_run_turingwatch")
def test_a_user_sends_for_their_own_job_only(server, cluster):
    job_dir = cluster.make_job_dir("server-owner-")
    mine = cluster.sbatch("#!/bin/sh\nsleep 60\n", "-J", "tw-server-alice", cwd=job_dir, as_user=True)
    roots = cluster.sbatch("#!/bin/sh\nsleep 60\n", "-J", "tw-server-root", cwd=job_dir)
    try:
        own = Session("s-own", cluster.user, job_id=mine).batch(range(5))
        got = post(server.url, own, "MUNGE " + credential_of(cluster, own, server.socket, as_user=True))
        assert got == (200, {"accepted": 6, "duplicates": 0}), got
        for job_id in (roots, 999_999):
            forged = Session(f"s-forged-{job_id}", cluster.user, job_id=job_id).batch(range(5))
            status, answer = post(server.url, forged,
                                  "MUNGE " + credential_of(cluster, forged, server.socket, as_user=True))
            assert status == 403, answer
        # Claiming root's session for root's job, signed by the user: refused too.
        claimed = Session("s-claimed", "root", job_id=roots).batch(range(5))
        status, _ = post(server.url, claimed,
                         "MUNGE " + credential_of(cluster, claimed, server.socket, as_user=True))
        assert status == 403
        # root sends for anyone's job.
        assert post(server.url, claimed, "MUNGE " + credential_of(
            cluster, claimed, server.socket, as_user=False))[0] == 200
    finally:
        subprocess.run(["scancel", str(mine), str(roots)], env=cluster.env, check=False)
    sessions = {r[0] for r in server.server.store.query("SELECT session_id FROM sessions")}
    assert sessions == {"s-own", "s-claimed"}
