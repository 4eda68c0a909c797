"""Atomic writes: a file appears whole or not at all, with the mode asked for, and no link
planted in a shared directory is ever followed."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from watcher.files import atomic_open, atomic_write, copy_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_text_and_bytes_replace_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    atomic_write(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "bundle.tar.gz"
    target.write_bytes(b"the old bundle")
    with pytest.raises(RuntimeError, match="renderer broke"), atomic_open(target) as out:
        out.write(b"half of the new")
        raise RuntimeError("renderer broke")
    assert target.read_bytes() == b"the old bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar.gz"]


def test_a_missing_directory_is_an_oserror_and_creates_nothing(tmp_path):
    with pytest.raises(OSError):
        atomic_write(tmp_path / "nope" / "x", "data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640])
def test_the_mode_is_applied_whatever_the_umask(tmp_path, mode):
    target = tmp_path / "report.html"
    old = os.umask(0o077)   # would make 0644 into 0600
    try:
        atomic_write(target, "x", mode=mode)
        copy_atomic(target, tmp_path / "copy", mode=mode)
    finally:
        os.umask(old)
    assert _mode(target) == mode
    assert _mode(tmp_path / "copy") == mode


def test_a_planted_symlink_is_never_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    shared = tmp_path / "shared"
    shared.mkdir()
    # Links at every name a writer could predict: the usual dot names, and the first
    # random candidate, which mkstemp is made to draw here (it must retry, not follow).
    planted = [shared / f".spool.jsonl{middle}.tmp" for middle in ("", f".{os.getpid()}", ".x1")]
    for link in planted:
        link.symlink_to(victim)
    candidates = iter(["x1", "x2"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: candidates)
    atomic_write(shared / "spool.jsonl", "spool lines")
    assert victim.read_text() == "precious"
    assert all(link.is_symlink() for link in planted)
    assert (shared / "spool.jsonl").read_text() == "spool lines"


def test_a_symlink_at_the_target_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "report.html"
    target.symlink_to(victim)
    atomic_write(target, "card")
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_text() == "card"


def test_copy_atomic_copies_whole_files(tmp_path):
    src = tmp_path / "node1.jsonl"
    src.write_bytes(os.urandom(3 << 20))   # more than one copy chunk
    dst = tmp_path / "site" / "job.node1.jsonl"
    dst.parent.mkdir()
    copy_atomic(src, dst, mode=0o640)
    assert dst.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["job.node1.jsonl"]
