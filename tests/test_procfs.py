"""The /proc reader on recorded real files and on processes that vanish mid-read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from watcher.sampling import procfs

FIXTURES = Path(__file__).parent / "fixtures" / "proc-samples"


def test_parse_recorded_stat():
    raw = (FIXTURES / "stat-sleep.txt").read_bytes()
    st = procfs.parse_stat(18352, raw)
    assert st is not None
    assert (st.comm, st.state, st.ppid) == ("sleep", "S", 18351)
    assert (st.minflt, st.cminflt, st.majflt, st.cmajflt) == (134, 0, 0, 0)
    assert (st.utime, st.stime, st.cutime, st.cstime) == (0, 0, 0, 0)
    assert (st.nthreads, st.start_ticks, st.rss_pages) == (1, 97591, 444)


def test_comm_with_spaces_and_parentheses():
    # comm ends at the last ')': a program may call itself "my) prog (1".
    raw = (FIXTURES / "stat-sleep.txt").read_bytes().replace(b"(sleep)", b"(my) prog (1)")
    st = procfs.parse_stat(18352, raw)
    assert st is not None and st.comm == "my) prog (1" and st.ppid == 18351 and st.rss_pages == 444


def test_truncated_stat_is_rejected():
    raw = (FIXTURES / "stat-sleep.txt").read_bytes()[:60]
    assert procfs.parse_stat(18352, raw) is None
    assert procfs.parse_stat(1, b"garbage without parenthesis") is None


def test_parse_recorded_io():
    io = procfs.parse_io((FIXTURES / "io-sleep.txt").read_bytes())
    assert io is not None
    assert (io.rchar, io.wchar, io.read_bytes, io.write_bytes) > (0, -1, -1, -1)
    assert procfs.parse_io(b"rchar: 1\n") is None


def test_reads_a_live_process_and_its_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        st = procfs.read_stat(child.pid)
        assert st is not None and st.ppid == os.getpid()
        assert child.pid in procfs.descendants(os.getpid())
        deadline = time.monotonic() + 10  # the child may not have exec'd python yet
        while "time.sleep(30)" not in (procfs.read_cmdline(child.pid) or ""):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert procfs.read_io(child.pid) is not None
    finally:
        child.kill()
        child.wait()
    # Gone: every reader says None instead of raising.
    assert procfs.read_stat(child.pid) is None
    assert procfs.read_io(child.pid) is None
    assert procfs.read_cmdline(child.pid) is None
    assert procfs.read_ppid(child.pid) is None


def test_fake_proc_root(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_bytes((FIXTURES / "stat-sleep.txt").read_bytes())
    (tmp_path / "self").mkdir()
    assert procfs.list_pids(str(tmp_path)) == [42]
    assert procfs.read_stat(42, str(tmp_path)).comm == "sleep"


def _state(raw: bytes | None) -> str | None:
    return None if raw is None else chr(raw[raw.rfind(b")") + 2])


def test_held_descriptors_follow_their_process_until_it_is_gone():
    files = procfs.ProcFiles()
    assert files.budget > 0   # the real procfs
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert _state(files.read(child.pid, "stat")) in ("R", "S", "D")
        assert files.read(child.pid, "io") is not None
        assert files.held == 2
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _state(files.read(child.pid, "stat")) != "T":   # re-read, not a stale copy
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert files.held == 2
    finally:
        child.kill()
        child.wait()
    # Reaped: the held descriptor fails, is dropped, and a fresh open finds nobody.
    assert files.read(child.pid, "stat") is None
    assert files.read(child.pid, "io") is None
    assert files.held == 0


def test_held_descriptors_are_let_go_and_capped():
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        files = procfs.ProcFiles(budget=2)
        stats = {c.pid: files.read(c.pid, "stat") for c in children}
        assert all(stats.values()) and files.held == 2   # the third was read, not held
        files.keep({children[0].pid})
        assert files.held == 1
        scanned = files.scan_stats()
        assert {c.pid for c in children} <= scanned.keys()
        assert files.held == 2 and os.getpid() in scanned
    finally:
        for c in children:
            c.kill()
            c.wait()
    files.close()
    assert files.held == 0


def test_a_recorded_tree_is_never_read_through_held_descriptors(tmp_path):
    (tmp_path / "42").mkdir()
    stat = tmp_path / "42" / "stat"
    stat.write_bytes((FIXTURES / "stat-sleep.txt").read_bytes())
    files = procfs.ProcFiles(str(tmp_path))
    assert files.budget == 0 and files.read(42, "stat") is not None
    stat.unlink()   # a file on disk stays readable through an open descriptor: none is held
    assert files.read(42, "stat") is None
