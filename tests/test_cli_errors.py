"""The CLI's one error boundary (watcher/cli.py): known failures are one line and an exit status,
bugs keep their traceback, and ``run`` starts the job's command whatever the watcher's trouble."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import watcher.commands.intercepter as intercepter_command
from watcher.cli import cli
from watcher.errors import ConfigError, StoreError, TuringwatchError

REPO = Path(__file__).resolve().parent.parent
SACCT = REPO / "tests" / "fixtures" / "sacct" / "real-22.05.txt"


def turingwatch(cwd: Path, *args: str, env: dict[str, str] | None = None, **kwargs):
    """The real entry point in a child process: its stderr is what a user or a job sees."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    for name in ("TURINGWATCH_CONFIG", "JOURNAL_STREAM", "INVOCATION_ID"):
        full_env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def sacct_file(tmp_path: Path) -> Path:
    """Recorded sacct output without the fixture's '#' comment lines."""
    lines = [line for line in SACCT.read_text().splitlines(keepends=True) if not line.startswith("#")]
    path = tmp_path / "sacct.txt"
    path.write_text("".join(lines))
    return path


def test_a_store_another_process_holds_is_one_line_naming_it(tmp_path):
    store = tmp_path / "site.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"c = duckdb.connect({str(store)!r})\nprint('ready', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        (tmp_path / "spools").mkdir()
        done = turingwatch(tmp_path, "ingest", str(tmp_path / "spools"),
                           env={"TURINGWATCH_STORE_PATH": str(store)})
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith(f"turingwatch ingest: store {store} is in use by another process")
    assert f"pid {holder.pid}" in line


def test_configuration_errors_exit_2_with_one_line(tmp_path):
    missing = turingwatch(tmp_path, "--config", str(tmp_path / "none.toml"), "analyze")
    assert missing.returncode == 2
    assert one_line(missing.stderr) == f"turingwatch analyze: config file {tmp_path / 'none.toml'} does not exist"
    bad = turingwatch(tmp_path, "rules", env={"TURINGWATCH_STORE_THREADS": "many"})
    assert bad.returncode == 2
    line = one_line(bad.stderr)
    assert line.startswith("turingwatch rules: store.threads: must be an integer, got 'many'")
    assert "TURINGWATCH_STORE_THREADS" in line


def test_a_bad_domain_input_exits_1_with_one_line(tmp_path):
    source = tmp_path / "bad.txt"
    source.write_text("JobID|JobIDRaw|User|State\n1|1|u|COMPLETED\n2|x|u|COMPLETED\n")
    done = turingwatch(tmp_path, "import-accounting", "--from-file", str(source),
                       env={"TURINGWATCH_STORE_PATH": str(tmp_path / "s.duckdb")})
    assert done.returncode == 1
    assert one_line(done.stderr) == "turingwatch import-accounting: sacct output line 3: cannot read JobIDRaw 'x'"


@pytest.mark.parametrize("command", ["analyze", "mail"])
def test_an_unknown_period_is_a_usage_error(tmp_path, command):
    done = turingwatch(tmp_path, command, "--period", "last-week",
                       env={"TURINGWATCH_STORE_PATH": str(tmp_path / "s.duckdb")})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "Error: Invalid value for --period: period 'last-week' is none of YYYY-Www, YYYY-MM-DD,"
        " YYYY-MM, current, previous"
    )


@pytest.mark.parametrize(("error", "status"), [
    (TuringwatchError("it went wrong"), 1), (StoreError("it went wrong"), 1), (ConfigError("it went wrong"), 2),
])
def test_every_domain_error_becomes_its_exit_status(monkeypatch, error, status):
    def fail():
        raise error

    monkeypatch.setattr(intercepter_command, "library_path", fail)
    result = CliRunner().invoke(cli, ["intercepter", "--path"])
    assert result.exit_code == status
    assert result.output == "turingwatch intercepter: it went wrong\n"


def test_a_bug_keeps_its_traceback(tmp_path):
    code = (
        "import watcher.commands.intercepter as command\n"
        "def library_path():\n    raise RuntimeError('a deliberate bug')\n"
        "command.library_path = library_path\n"
        "from watcher.cli import main\nmain(['intercepter', '--path'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.splitlines()[-1] == "RuntimeError: a deliberate bug"


def test_run_starts_the_command_when_the_watcher_cannot_work(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\n")
    done = turingwatch(tmp_path, "--config", str(bad), "run", "-q", "-i", "0.01", "-o", "/proc/forbidden",
                       "--", "sh", "-c", "echo from the job >&2; exit 6")
    assert done.returncode == 6
    lines = done.stderr.splitlines()
    assert "from the job" in lines
    ours = [line for line in lines if line != "from the job"]
    # Each watcher problem is one line of the job's output, users read them in slurm-N.out.
    assert all(line.startswith("turingwatch: ") for line in ours), done.stderr
    assert any(line.startswith("turingwatch: configuration: ") and line.endswith("using the defaults")
               for line in ours), done.stderr
    assert any("below 0.5 s; using 0.5" in line for line in ours), done.stderr
    assert any(line.startswith("turingwatch: not watching this job (")
               and line.endswith("the command runs unwatched") for line in ours), done.stderr


def test_quiet_hides_warnings_and_keeps_the_command_running(tmp_path):
    loud = turingwatch(tmp_path, "run", "-q", "-i", "0.01", "-o", "a", "--", "true")
    assert loud.returncode == 0 and "turingwatch: --interval 0.01 is below 0.5 s" in loud.stderr
    quiet = turingwatch(tmp_path, "-q", "run", "-q", "-i", "0.01", "-o", "b", "--", "true")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert (tmp_path / "b" / "summary.json").exists()  # run's own -q: no card, reports written


def test_verbose_shows_progress_lines_that_a_pipe_does_not_get(tmp_path):
    args = ["import-accounting", "--all-users", "--from-file", str(sacct_file(tmp_path)), "--timezone", "UTC"]
    env = {"TURINGWATCH_STORE_PATH": str(tmp_path / "s.duckdb")}
    plain = turingwatch(tmp_path, *args, env=env)
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    assert "imported 13 jobs and 15 steps" in plain.stdout
    for verbose in (["-v", *args], [*args, "--verbose"]):  # the group's -v, the command's own
        done = turingwatch(tmp_path, *verbose, env=env)
        assert done.returncode == 0, done.stderr
        progress = done.stderr.splitlines()
        assert progress and all(line.startswith("turingwatch: ") and " jobs, " in line for line in progress)
    debug = turingwatch(tmp_path, "-vv", *args, env=env)
    assert "turingwatch: watcher.commands.accounting: " in debug.stderr


def test_a_failure_shows_its_traceback_at_debug_level_only(tmp_path):
    source = tmp_path / "bad.txt"
    source.write_text("JobID|JobIDRaw|User|State\n2|x|u|COMPLETED\n")
    env = {"TURINGWATCH_STORE_PATH": str(tmp_path / "s.duckdb")}
    done = turingwatch(tmp_path, "-vv", "import-accounting", "--from-file", str(source), env=env)
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("turingwatch import-accounting: sacct output line 2")


def test_ingest_reports_a_bad_spool_as_a_warning_and_fails(tmp_path):
    spools = tmp_path / "spools"
    spools.mkdir()
    (spools / "junk.jsonl").write_text("not a spool\n")
    done = turingwatch(tmp_path, "ingest", str(spools), env={"TURINGWATCH_STORE_PATH": str(tmp_path / "s.duckdb")})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    skipped, failed = done.stderr.splitlines()
    assert skipped.startswith(f"turingwatch: skipped {spools / 'junk.jsonl'}: ")
    assert failed == "turingwatch ingest: 1 spool(s) could not be loaded"



# -- typos ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["run", "--ouput", "d", "--", "touch", "ran"], "no such option --ouput (did you mean --output?)"),
    (["run", "--intervall", "2", "--", "touch", "ran"],
     "no such option --intervall (did you mean --interval?)"),
    (["run", "-x", "touch", "ran"], "no such option -x (the command to run goes after --)"),
    (["analyse"], "no such command 'analyse' (did you mean analyze?)"),
    (["anaylze"], "no such command 'anaylze' (did you mean analyze?)"),
    (["frobnicate"], "no such command 'frobnicate'"),
])
def test_a_typo_is_a_usage_error_that_says_what_was_meant(tmp_path, args, message):
    done = turingwatch(tmp_path, *args)
    assert done.returncode == 2 and f"Error: {message}\n" in done.stderr, done.stderr
    assert not (tmp_path / "ran").exists() and not (tmp_path / "d").exists()   # nothing was run


def test_run_without_a_double_dash_still_runs_its_command(tmp_path):
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "o", "sh", "-c", "echo $0 --x", "a")
    assert done.returncode == 0 and done.stdout == "a --x\n", done.stderr
    after = turingwatch(tmp_path, "run", "-q", "-o", "o2", "--", "sh", "-c", "echo -x")
    assert after.returncode == 0 and after.stdout == "-x\n"   # options after -- are the command's
