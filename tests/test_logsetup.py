"""Logging configured once (watcher/logsetup.py): levels, the line format, the journal, and
leaving alone a logging setup that someone else made."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from watcher import logsetup
from watcher.cli import cli

REPO = Path(__file__).resolve().parent.parent


def record(message: str, level: int = logging.WARNING, args: tuple = (), exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("watcher.x", level, __file__, 1, message, args, exc_info)


@pytest.mark.parametrize(("verbose", "quiet", "progress", "level"), [
    (0, False, False, logging.WARNING),
    (0, False, True, logging.INFO),
    (1, False, False, logging.INFO),
    (2, False, False, logging.DEBUG),
    (3, False, True, logging.DEBUG),
    (0, True, True, logging.ERROR),
    (2, True, False, logging.ERROR),
])
def test_level_for_the_options(verbose, quiet, progress, level):
    assert logsetup.level_for(verbose, quiet, progress=progress) == level


def test_lines_are_prefixed_and_name_their_logger_only_at_debug():
    assert logsetup.LineFormatter().format(record("disk full")) == "turingwatch: disk full"
    assert logsetup.LineFormatter(names=True).format(record("disk full")) == "turingwatch: watcher.x: disk full"


def test_the_journal_gets_a_priority_and_one_line_per_event():
    formatter = logsetup.LineFormatter(journal=True)
    assert formatter.format(record("spool loaded", logging.INFO)) == "<6>watcher.x: spool loaded"
    assert formatter.format(record("slow", logging.WARNING)) == "<4>watcher.x: slow"
    try:
        raise RuntimeError("deep down")
    except RuntimeError:
        failed = record("ingest failed", logging.ERROR, exc_info=sys.exc_info())
    line = formatter.format(failed)
    assert "\n" not in line and line.startswith("<3>watcher.x: ingest failed | Traceback")
    assert line.endswith("RuntimeError: deep down")


def test_the_handler_writes_to_stderr_as_it_is_at_each_record(monkeypatch):
    handler = logsetup.StderrHandler()
    handler.setFormatter(logsetup.LineFormatter())
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler.handle(record("one"))
    monkeypatch.setattr(sys, "stderr", second)
    handler.handle(record("two"))
    assert first.getvalue() == "turingwatch: one\n" and second.getvalue() == "turingwatch: two\n"


class BrokenPipe(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        raise BrokenPipeError(32, "Broken pipe")


def test_a_stderr_that_is_gone_loses_the_line_quietly(monkeypatch):
    handler = logsetup.StderrHandler()
    gone = BrokenPipe()
    monkeypatch.setattr(sys, "stderr", gone)
    handler.handle(record("nobody reads this"))
    assert gone.attempts == 1  # no "--- Logging error ---" report tried after the line
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    handler.handle(record("nor this"))  # no exception either


def test_a_broken_log_call_is_still_reported(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    logsetup.StderrHandler().handle(record("%d samples", args=("many",)))
    assert "--- Logging error ---" in err.getvalue()


def test_journal_stream_must_name_stderr_itself(tmp_path, monkeypatch):
    stream = (tmp_path / "err").open("w")
    monkeypatch.setattr(sys, "stderr", stream)
    st = os.fstat(stream.fileno())
    assert logsetup.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    # Inherited from a terminal that is a user service: stderr is something else.
    assert not logsetup.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
    assert not logsetup.stderr_is_journal({"JOURNAL_STREAM": "garbage"})
    assert not logsetup.stderr_is_journal({})
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # no file descriptor at all
    assert not logsetup.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    stream.close()


def test_has_level_handler_follows_propagation():
    parent = logging.getLogger("test_logsetup_parent")
    child = logging.getLogger("test_logsetup_parent.child")
    parent.propagate = False
    parent.setLevel(logging.WARNING)
    try:
        assert not logsetup.has_level_handler(child)
        picky = logging.NullHandler(logging.ERROR)
        parent.addHandler(picky)
        assert not logsetup.has_level_handler(child)  # it would drop the warnings
        parent.addHandler(logging.NullHandler())
        assert logsetup.has_level_handler(child)
    finally:
        parent.handlers.clear()
        parent.propagate = True
        parent.setLevel(logging.NOTSET)


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("JOURNAL_STREAM", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


def test_setup_installs_one_root_handler_and_later_calls_change_only_the_level():
    done = run_python(
        "import logging\nfrom watcher import logsetup\n"
        "root, ours = logging.getLogger(), logging.getLogger('watcher')\n"
        "assert logsetup.setup_logging(1)\n"
        "assert len(root.handlers) == 1 and ours.level == logging.INFO and root.level == logging.WARNING\n"
        "assert logsetup.setup_logging(0, quiet=True)\n"
        "assert len(root.handlers) == 1 and ours.level == logging.ERROR and root.level == logging.ERROR\n"
        "logsetup.at_least(logging.INFO)\n"
        "assert ours.level == logging.INFO\n"
        "logging.getLogger('watcher.store').info('loaded %d', 3)\n"
        "logging.getLogger('urllib3').info('not shown')\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "turingwatch: loaded 3\n"


def test_setup_leaves_an_embedding_applications_logging_alone():
    done = run_python(
        "import logging, sys\nfrom watcher import logsetup\n"
        "logging.basicConfig(stream=sys.stdout, format='app %(name)s %(message)s')\n"
        "root = logging.getLogger()\nbefore = list(root.handlers)\n"
        "assert not logsetup.setup_logging(2, progress=True)\n"
        "logsetup.at_least(logging.DEBUG)\n"
        "assert root.handlers == before and logging.getLogger('watcher').level == logging.NOTSET\n"
        "logging.getLogger('watcher.store').warning('slow')\n"
        "logging.getLogger('watcher.store').info('not shown: the app says WARNING')\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "app watcher.store slow\n" and done.stderr == ""


def test_under_pytest_the_cli_logs_to_caplog_and_changes_no_level(tmp_path, caplog):
    spools = tmp_path / "spools"
    spools.mkdir()
    (spools / "junk.jsonl").write_text("not a spool\n")
    result = CliRunner().invoke(cli, ["-q", "ingest", str(spools)],
                                env={"TURINGWATCH_STORE_PATH": str(tmp_path / "s.duckdb")})
    assert result.exit_code == 1
    assert result.output == "turingwatch ingest: 1 spool(s) could not be loaded\n"
    [skipped] = [r for r in caplog.records if r.name == "watcher.commands.ingest"]
    assert skipped.levelno == logging.WARNING and "junk.jsonl" in skipped.getMessage()
    assert logging.getLogger("watcher").level == logging.NOTSET


def test_a_job_under_systemd_logs_for_the_journal_and_a_job_that_only_inherited_it_does_not(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TURINGWATCH_CONFIG", None)
    err = tmp_path / "stderr"
    args = [sys.executable, "-m", "watcher", "run", "-q", "-i", "0.01", "-o", "o", "--", "true"]
    with err.open("w") as stream:
        st = os.fstat(stream.fileno())
        journal = {**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert subprocess.run(args, cwd=tmp_path, env=journal, stderr=stream, timeout=120).returncode == 0
    assert "<4>watcher.commands.run: --interval 0.01 is below 0.5 s; using 0.5\n" in err.read_text()
    inherited = subprocess.run(args, cwd=tmp_path, env={**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
                               capture_output=True, text=True, timeout=120)
    assert inherited.returncode == 0
    assert "turingwatch: --interval 0.01 is below 0.5 s; using 0.5\n" in inherited.stderr
    assert "<4>" not in inherited.stderr
