"""scripts/watch.sh: one line in a batch script watches the whole job and leaves one card.

Fast tests run it under bash and dash outside Slurm and without turingwatch; the ``slurm`` ones
submit batch scripts as the test user. The test cluster has one slurmd (the Debian slurmd is not
built with --enable-multiple-slurmd, so one host cannot play several nodes): the jobs are
``-N 1``, and the other nodes' srun is not exercised here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm_helpers import SlurmCluster

REPO = Path(__file__).resolve().parent.parent
WATCH_SH = REPO / "scripts" / "watch.sh"
CARD = "turingwatch report card"
SHELLS = [sh for sh in ("bash", "dash") if shutil.which(sh)]


SYSTEM_PATH = "/usr/bin:/bin"   # no turingwatch there (checked below)


def _shell(sh: str, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which(sh), "-c", script], env=env, capture_output=True,
                          text=True, timeout=30)


@pytest.fixture
def no_turingwatch() -> dict[str, str]:
    """A job's environment on a node where turingwatch is not installed."""
    if shutil.which("turingwatch", path=SYSTEM_PATH):
        pytest.skip("turingwatch is installed in /usr/bin or /bin")
    return _bare_env(SLURM_JOB_ID="12345", PATH=SYSTEM_PATH)


def _bare_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.pop("_TURINGWATCH_WATCHED", None)
    return {**env, **extra}


@pytest.mark.parametrize("sh", SHELLS)
@pytest.mark.parametrize("strict", ["", "set -eu; "])
def test_outside_slurm_it_says_so_once_and_changes_nothing(sh, strict):
    done = _shell(sh, f'{strict}. {WATCH_SH}; echo "args:$#"; exit 3', _bare_env())
    assert done.returncode == 3
    assert done.stdout == "args:0\n"
    assert done.stderr.count("\n") == 1 and "not in a Slurm job" in done.stderr


@pytest.mark.parametrize("sh", SHELLS)
def test_without_turingwatch_one_warning_and_the_status_is_kept(sh, no_turingwatch):
    for status, strict in ((0, ""), (3, ""), (7, "set -eu; ")):
        script = f"{strict}. {WATCH_SH}; echo out; (exit {status}); echo never"
        done = _shell(sh, script, no_turingwatch)
        expected = "out\nnever\n" if not strict else "out\n"
        assert done.returncode == (0 if not strict else status) and done.stdout == expected
        assert done.stderr.count("\n") == 1 and "not installed" in done.stderr, done.stderr


def test_sourced_twice_it_does_nothing_the_second_time(no_turingwatch):
    done = _shell("bash", f". {WATCH_SH}; . {WATCH_SH}; exit 4", no_turingwatch)
    assert done.returncode == 4 and done.stderr.count("\n") == 1


def test_watch_script_prints_the_path_of_watch_sh():
    done = subprocess.run([sys.executable, "-m", "watcher", "watch-script"], cwd="/",
                          env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == WATCH_SH


def test_meson_installs_watch_sh_inside_the_package():
    assert "install_data('scripts/watch.sh', install_dir: pkgdir / 'scripts')" in (REPO / "meson.build").read_text()


def test_the_exit_status_comes_from_the_trap_else_from_slurm(tmp_path):
    from watcher.commands.attach import script_exit
    from watcher.slurm.commands import JobExit, parse_job_exit

    status = tmp_path / "status"
    assert parse_job_exit("JobId=7 JobName=x JobState=COMPLETING Reason=None ExitCode=3:0 x=y") == JobExit("COMPLETING", 3, 0)
    assert parse_job_exit("garbage") == JobExit(None, None, None)

    def slurm(state, code, sig):
        return lambda: JobExit(state, code, sig)

    assert script_exit(status, False, slurm("COMPLETING", 3, 0)) == (3, None)   # exec'd: no trap
    assert script_exit(status, True, slurm("COMPLETING", 0, 15)) == (None, 15)  # killed
    assert script_exit(status, False, slurm("RUNNING", 0, 0)) == (None, None)
    assert script_exit(None, True, slurm("COMPLETING", 0, 0), retry_s=0) == (0, None)
    status.write_text("4\n")
    assert script_exit(status, True, slurm("COMPLETING", 0, 15)) == (4, None)   # the trap's word

    def broken():
        raise OSError("no scontrol")

    status.unlink()
    assert script_exit(status, True, broken) == (None, None)


# -- on the real cluster --------------------------------------------------------------------
@pytest.fixture
def watched_dir(slurm_cluster: SlurmCluster, turingwatch_command) -> Path:
    """A job dir with bin/turingwatch: this tree's turingwatch, for the test user's PATH."""
    path = slurm_cluster.make_job_dir("watchsh-")
    bin_dir = path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "turingwatch"
    shim.write_text(f"#!/bin/sh\nexec env {turingwatch_command.shell()} \"$@\"\n")
    shim.chmod(0o755)
    bin_dir.chmod(0o755)
    return path


def _job(slurm_cluster: SlurmCluster, job_dir: Path, body: str, *options: str, shell: str = "/bin/bash"):
    script = (
        f"#!{shell}\n"
        f"export PATH={job_dir}/bin:$PATH TURINGWATCH_SAMPLER_INTERVAL_S=0.5\n"
        f"cd {job_dir}\n"
        f". {WATCH_SH}\n"
        f"{body}\n"
    )
    return slurm_cluster.run_job(script, "-J", "tw-watchsh", *options, cwd=job_dir, as_user=True)


def _output_with_card(job_dir: Path, job, wait_s: float = 15.0) -> str:
    """The job's output once the card is in it. Where the script exec'd or was killed, the
    card comes from the watcher's step after the script's end, in Slurm's KillWait (5 s here),
    which may be after sacct has the job's end."""
    import time
    deadline = time.monotonic() + wait_s
    out = job_dir / f"slurm-{job.job_id}.out"
    while CARD not in (text := out.read_text(errors="replace")) and time.monotonic() < deadline:
        time.sleep(0.5)
    return text


def _summary(job_dir: Path, job_id: int) -> dict:
    import json
    return json.loads((job_dir / f"turingwatch-{job_id}" / "summary.json").read_text())


@pytest.mark.slurm
@pytest.mark.usefixtures("user_can_run_turingwatch")
@pytest.mark.parametrize(("body", "status", "shell"), [
    ("echo hello; srun -n1 sleep 1; echo bye", 0, "/bin/bash"),
    ("echo hello; sleep 1; echo bye; exit 3", 3, "/bin/bash"),
    ("set -euo pipefail; echo hello; sleep 1; echo bye; true | cat; (exit 5); echo never", 5, "/bin/bash"),
    ("set -eu; echo hello; sleep 1; echo bye; exit 3", 3, "/bin/sh"),
])
def test_a_sourcing_batch_script_gets_one_card_and_keeps_its_status(
    slurm_cluster, watched_dir, body, status, shell
):
    job = _job(slurm_cluster, watched_dir, body, shell=shell)
    assert job.job["ExitCode"] == f"{status}:0", job.output
    assert job.output.count(CARD) == 1, job.output
    before_card = job.output.split("\n─")[0]
    assert before_card == "hello\nbye\n", job.output  # nothing else of ours in the output
    assert ("  COMPLETED\n" if status == 0 else f"  ✖ FAILED, exit code {status}\n") in job.output
    assert "never" not in job.output
    summary = _summary(watched_dir, job.job_id)
    assert summary["exit_code"] == status
    assert f"{job.job_id}.0" in job.rows  # the watcher's own srun step


@pytest.mark.slurm
@pytest.mark.usefixtures("user_can_run_turingwatch")
def test_a_script_that_execs_its_program_still_gets_the_card(slurm_cluster, watched_dir):
    job = _job(slurm_cluster, watched_dir, "echo hello\nexec sh -c 'sleep 2; exit 3'")
    assert job.job["ExitCode"] == "3:0", job.output
    output = _output_with_card(watched_dir, job)
    assert output.count(CARD) == 1, output
    assert "  ✖ FAILED, exit code 3\n" in output  # asked from Slurm: no trap ran
    # The card and, at most, Slurm's one line about ending the watcher's step.
    before_card = output.split("\n─")[0].splitlines()
    assert before_card[0] == "hello" and len(before_card) <= 2, output


@pytest.mark.slurm
@pytest.mark.usefixtures("user_can_run_turingwatch")
def test_a_job_at_its_time_limit_ends_timeout_with_the_card(slurm_cluster, watched_dir):
    job = _job(slurm_cluster, watched_dir, "echo hello\nsleep 300", "--time=1")
    assert job.job["State"].startswith("TIMEOUT"), job.output
    output = _output_with_card(watched_dir, job)
    assert output.count(CARD) == 1, output
    assert "  ✖ TIMEOUT after 00:01:" in output, output
