"""Files another user can lay in a job's way, and who can read what the job leaves.

An attacker who can write where a job's output goes (a shared scratch or /tmp directory with
the predictable `turingwatch-<jobid>` name) pre-creates the directory, or links in it, to have
the victim's watcher write through them. The job must still run, unwatched, with one warning;
the victim's files must be untouched. As root the tests plant directories owned by another
uid with chown."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from watcher.files import private_dir
from watcher.mailer.ledger import Ledger
from watcher.slurm.env import JobContext
from watcher.watch import intercept
from watcher.watch.finish import wait_for_peers
from watcher.watch.runner import _with_recycler

REPO = Path(__file__).resolve().parent.parent
NODE = socket.gethostname().split(".")[0]
MALLORY = 54321                    # a uid that is not ours
KEYS = b"ssh-ed25519 AAAA... victim@laptop\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="plants files owned by another uid")


def turingwatch(tmp_path, *args, umask=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TURINGWATCH_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "watcher", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def victim(tmp_path) -> Path:
    keys = tmp_path / "home" / ".ssh" / "authorized_keys"
    keys.parent.mkdir(parents=True)
    keys.write_bytes(KEYS)
    return keys


def assert_ran_unwatched(done, status: int) -> None:
    assert done.returncode == status, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "not watching this job" in line]
    assert len(warnings) == 1, done.stderr
    assert "the command runs unwatched" in warnings[0]


# -- directories planted where the job's output goes -------------------------------------
@needs_root
def test_an_output_directory_of_another_user_is_refused(tmp_path, victim):
    planted = tmp_path / "turingwatch-4242"
    (planted / "spool").mkdir(parents=True)
    (planted / "spool" / f"{NODE}.lock").symlink_to(victim)
    for path in (planted, planted / "spool"):
        os.chown(path, MALLORY, MALLORY)
    os.lchown(planted / "spool" / f"{NODE}.lock", MALLORY, MALLORY)
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", str(planted), "--", "sh", "-c", "exit 3")
    assert victim.read_bytes() == KEYS
    assert_ran_unwatched(done, 3)
    assert "not yours" in done.stderr
    assert sorted(p.name for p in planted.iterdir()) == ["spool"]


@needs_root
def test_an_output_directory_that_is_another_users_symlink_is_refused(tmp_path, victim):
    link = tmp_path / "turingwatch-local-20260101-000000"
    link.symlink_to(victim.parent, target_is_directory=True)
    os.lchown(link, MALLORY, MALLORY)
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", str(link), "--", "true")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["authorized_keys"]
    assert_ran_unwatched(done, 0)


@needs_root
def test_links_planted_inside_an_output_directory_are_not_followed(tmp_path, victim):
    # Our own directory, but another user's links in it: the spool directory and the lock.
    out = tmp_path / "out"
    out.mkdir()
    (out / "spool").symlink_to(victim.parent, target_is_directory=True)
    os.lchown(out / "spool", MALLORY, MALLORY)
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", str(out), "--", "true")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["authorized_keys"]
    assert victim.read_bytes() == KEYS
    assert_ran_unwatched(done, 0)


def test_a_world_writable_output_directory_is_refused(tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    out.chmod(0o777)
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", str(out), "--", "true")
    assert_ran_unwatched(done, 0)
    assert "every user may write to" in done.stderr


def test_a_lock_planted_as_a_link_in_our_own_spool_directory_is_not_followed(tmp_path, victim):
    out = tmp_path / "out"
    (out / "spool").mkdir(parents=True)
    (out / "spool" / f"{NODE}.lock").symlink_to(victim)
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", str(out), "--", "true")
    assert victim.read_bytes() == KEYS
    assert_ran_unwatched(done, 0)


def test_private_dir_makes_0700_and_keeps_an_own_directory_as_it_is(tmp_path):
    old = os.umask(0o022)
    try:
        made = private_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert mode(made) == 0o700
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o750)
    assert private_dir(mine) == mine and mode(mine) == 0o750
    (tmp_path / "results").symlink_to(mine)       # a link of one's own is followed
    assert private_dir(tmp_path / "results") == tmp_path / "results"
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "file")


def test_the_stop_marker_replaces_a_planted_link(tmp_path, victim):
    (tmp_path / "STOP").symlink_to(victim)
    job = JobContext(4242, "batch", "c", NODE, "u", 1, 1, None, None, None)
    wait_for_peers(tmp_path, job, "session", timeout_s=0.1)
    assert victim.read_bytes() == KEYS
    assert (tmp_path / "STOP").read_text() == "4242\n" and not (tmp_path / "STOP").is_symlink()


def test_peer_wait_s_0_asks_the_peers_and_does_not_wait(tmp_path, caplog):
    spool = tmp_path / "spool" / "n2.99.jsonl"   # another node's spool, not ended
    spool.parent.mkdir()
    spool.write_text(json.dumps({"k": "session", "session": {"session_id": "s2", "job_id": 4242}}) + "\n")
    job = JobContext(4242, "batch", "c", NODE, "u", 2, 1, None, None, None)
    wait_for_peers(tmp_path, job, "s1", timeout_s=0)
    assert (tmp_path / "STOP").exists() and "1 node(s) did not finish" in caplog.text


# -- the recycler's statistics -----------------------------------------------------------
def _stats(**counts: int) -> str:
    fields = {key: 0 for key in (*intercept.SUMMED, *intercept.PEAKS)}
    return json.dumps({"version": 1, **fields, **counts})


@needs_root
def test_recycler_statistics_that_are_links_or_not_ours_are_left_out(tmp_path):
    stats = tmp_path / "intercepter"
    stats.mkdir()
    (stats / "stats.1.json").write_text(_stats(pool_hits=1))
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(_stats(pool_hits=100))
    (stats / "stats.2.json").symlink_to(elsewhere)
    (stats / "stats.3.json").write_text(_stats(pool_hits=1000))
    os.chown(stats / "stats.3.json", MALLORY, MALLORY)
    total = intercept.collect_stats(stats)
    assert total["pool_hits"] == 1 and total["processes"] == 1
    assert intercept.read_stats(stats / "stats.2.json") is None
    assert intercept.read_stats(stats / "stats.3.json") is None


def test_a_fifo_among_the_recycler_statistics_does_not_hold_the_report(tmp_path):
    (tmp_path / "stats.1.json").write_text(_stats(pool_hits=1))
    os.mkfifo(tmp_path / "stats.2.json")        # opened for reading, it waits for a writer
    found = {}
    reader = threading.Thread(target=lambda: found.update(intercept.collect_stats(tmp_path)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "collect_stats is waiting on the FIFO"
    assert found["processes"] == 1


@needs_root
def test_a_planted_recycler_directory_keeps_the_recycler_out(tmp_path, victim, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "intercepter").symlink_to(victim.parent, target_is_directory=True)
    os.lchown(out / "intercepter", MALLORY, MALLORY)
    monkeypatch.setenv(intercept.ENV_LIBRARY, sys.executable)   # any file stands for the library
    env, stats_dir, problem = _with_recycler({}, out, None)
    assert stats_dir is None and "LD_PRELOAD" not in env and "not by you" in problem


# -- who can read what the job leaves ----------------------------------------------------
def test_the_jobs_output_is_its_owners_only_whatever_the_umask(tmp_path):
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "out", "--", "sleep", "0.6", umask=0o022)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    found = {str(p.relative_to(out)): mode(p) for p in [out, *out.rglob("*")]}
    assert {"summary.json", "report.html", "turingwatch.duckdb"} <= set(found)
    assert any(name.startswith("spool/") and name.endswith(".jsonl") for name in found)
    for name, bits in found.items():
        expected = 0o700 if (out / name).is_dir() else 0o600
        assert bits == expected, f"{name}: {oct(bits)}"


def test_the_mail_ledger_is_its_owners_only_whatever_the_umask(tmp_path):
    path = tmp_path / "mail-ledger.sqlite3"
    old = os.umask(0o022)
    try:
        with Ledger(path):
            files = sorted(tmp_path.iterdir())
            assert {p.name for p in files} >= {"mail-ledger.sqlite3", "mail-ledger.sqlite3.lock"}
            assert all(mode(p) == 0o600 for p in files), {p.name: oct(mode(p)) for p in files}
    finally:
        os.umask(old)


def test_an_older_ledger_left_readable_is_made_private(tmp_path):
    path = tmp_path / "mail-ledger.sqlite3"
    with Ledger(path):
        pass
    path.chmod(0o644)
    with Ledger(path):
        assert mode(path) == 0o600
