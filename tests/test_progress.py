"""The progress bar: drawn on a terminal (a pseudo-terminal here), silent on a pipe or with -q."""

from __future__ import annotations

import io
import logging
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pty_helpers import read_until_closed
from tests.test_analysis import Cluster
from watcher.progress import ProgressBar, wanted
from watcher.store import Store

REPO = Path(__file__).resolve().parent.parent


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_with_a_total_counts_rates_and_ends_on_its_own_line(monkeypatch):
    monkeypatch.delenv("TERM", raising=False)
    out = Tty()
    with ProgressBar("letters", total=4, stream=out, enabled=None) as bar:
        assert bar.shown
        for n in range(4):
            bar.advance(1, f"user{n}")
    text = out.getvalue()
    assert text.startswith("\r\x1b[Kletters  [")
    assert "4/4" in text and "user3" in text and "/s" in text
    assert text.endswith("\n") and "\r\x1b[Kletters  [####################]  4/4" in text


def test_no_bar_on_a_pipe_with_quiet_or_a_dumb_terminal(monkeypatch):
    pipe = io.StringIO()
    with ProgressBar("x", total=3, stream=pipe) as bar:
        bar.advance(3)
    assert pipe.getvalue() == "" and not bar.shown
    assert wanted(Tty(), quiet=False)
    assert not wanted(Tty(), quiet=True)
    monkeypatch.setenv("TERM", "dumb")
    assert not wanted(Tty(), quiet=False)


def test_quiet_is_read_from_the_loggers_cli_sets(monkeypatch):
    monkeypatch.delenv("TERM", raising=False)
    logger = logging.getLogger("watcher")
    old = logger.level
    try:
        logger.setLevel(logging.ERROR)  # what -q makes of it (watcher.logsetup)
        assert not wanted(Tty())
        logger.setLevel(logging.INFO)
        assert wanted(Tty())
    finally:
        logger.setLevel(old)


def test_a_log_line_does_not_land_on_the_bar():
    out = Tty()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        bar = ProgressBar("import", stream=out, enabled=True)
        bar.advance(1)
        logging.getLogger("watcher.test").warning("careful")
        bar.close()
    finally:
        root.removeHandler(handler)
    text = out.getvalue()
    # the bar, cleared before the warning is written at the start of the line
    assert "import  1" in text and "\r\x1b[Kcareful\n" in text
    assert handler.filters == []  # closed: log lines are left alone again


def run_on(stderr_tty: bool, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run turingwatch with stderr on a pseudo-terminal or a pipe; return (status, stderr)."""
    command = [sys.executable, "-m", "watcher", *args]
    full = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm", **env}
    if not stderr_tty:
        done = subprocess.run(command, capture_output=True, text=True, env=full, timeout=120)
        return done.returncode, done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave, env=full)
    os.close(slave)
    shown = read_until_closed(master)
    return proc.wait(timeout=120), shown.decode(errors="replace")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "site.duckdb"
    with Store(path) as store:
        c = Cluster(store)
        for user in ("alice", "bob", "carol"):
            c.job(user=user, total_cpu=3600.0)
    return path


def test_analyze_and_its_letters_show_bars_on_a_terminal_only(small_store, tmp_path):
    env = {"TURINGWATCH_STORE_PATH": str(small_store),
           "TURINGWATCH_ANALYSIS_RESULT_DIR": str(tmp_path / "results")}
    args = ("analyze", "--period", "2026-W47", "--all-users", "--bundle")
    status, seen = run_on(True, *args, env=env)
    assert status == 0, seen
    # redrawn at most ten times a second, and at the end: the last step is always shown
    assert "\r\x1b[Kanalyze 2026-W47  " in seen and "storing results\r\n" in seen
    assert "letters 2026-W47  [####################]  3/3" in seen
    assert "turingwatch: [" not in seen  # the steps moved the bar instead of logging lines

    status, piped = run_on(False, *args, env=env)
    assert status == 0, piped
    assert "\r" not in piped and "analyze 2026-W47" not in piped

    status, quiet = run_on(True, "-q", *args, env=env)
    assert status == 0, quiet
    assert "\r" not in quiet and "analyze 2026-W47" not in quiet

    # -v on a pipe: the INFO lines as before, one per step
    status, verbose = run_on(False, *args, "-v", env=env)
    assert status == 0 and "turingwatch: [" in verbose and "\r" not in verbose


def test_import_windows_on_a_terminal(tmp_path):
    recorded = REPO / "tests" / "fixtures" / "sacct" / "real-22.05.txt"
    sacct = tmp_path / "sacct.txt"  # without the fixture's comment lines, as sacct prints it
    sacct.write_text("".join(line for line in recorded.read_text().splitlines(keepends=True)
                             if not line.startswith("#")))
    store = tmp_path / "site.duckdb"
    status, seen = run_on(True, "import-accounting", "--all-users", "--from-file", str(sacct),
                          env={"TURINGWATCH_STORE_PATH": str(store)})
    assert status == 0, seen
    assert "\r\x1b[Kimport-accounting  1  " in seen
