"""`turingwatch run` against what a job's surroundings throw at it: arguments that are not UTF-8,
closed standard streams, SIGKILL, signals sent to a whole process group or to every process of
a Slurm step, and the watcher's own subprocesses ending while it waits for the command."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from watcher.watch import runner

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
ENV.pop("TURINGWATCH_CONFIG", None)
WATCHER = [sys.executable, "-m", "watcher"]

# A job that counts the SIG<name> it receives: it says it is ready (its pid in ./ready), waits
# for the first one, gives a second copy a second to arrive, and writes the count to ./count.
COUNTER = """\
import os, signal, sys, time
got = []
signal.signal(signal.SIG{name}, lambda *a: got.append(1))
{before}
with open('ready.tmp', 'w') as f: f.write(str(os.getpid()))
os.rename('ready.tmp', 'ready')
deadline = time.monotonic() + 30
while not got and time.monotonic() < deadline: time.sleep(0.02)
time.sleep(1.0)
open('count', 'w').write(str(len(got)))
"""
# Slurm's step daemon as far as the watcher can tell: a root process named slurmstepd that
# signals the processes of the step one by one, or the batch script's process group. Like the
# real one it outlives the step: it stays until the job has counted (the watcher reads who sent
# a signal from /proc, which a sender already gone no longer tells).
FAKE_STEPD = """\
import os, sys, time
open('/proc/self/comm', 'w').write('slurmstepd')
how, signum, targets = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
for target in targets:
    (os.killpg if how == 'group' else os.kill)(target, signum)
deadline = time.monotonic() + 60
while not os.path.exists('count') and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def turingwatch(tmp_path, *args, env=None, timeout=120, **kwargs):
    return subprocess.run([*WATCHER, *args], env={**ENV, **(env or {})}, cwd=tmp_path,
                          capture_output=True, timeout=timeout, **kwargs)


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def wait_for(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)
    return path.read_text()


def counter(name: str, before: str = "") -> str:
    return COUNTER.format(name=name, before=before)


# -- bytes, descriptors, exit ----------------------------------------------------------------
def test_an_argument_that_is_not_utf8_is_watched(tmp_path):
    (tmp_path / os.fsdecode(b"caf\xe9.dat")).write_bytes(b"12345")
    done = turingwatch(tmp_path, "run", "-i", "0.5", "-o", "o", "--", "wc", "-c", b"caf\xe9.dat")
    assert done.returncode == 0, done.stderr
    assert b"5 caf\xe9.dat" in done.stdout        # the command got its bytes as they were
    assert b"unwatched" not in done.stderr and b"turingwatch report card" in done.stderr
    (spool,) = (tmp_path / "o" / "spool").glob("*.jsonl")
    head = json.loads(spool.read_bytes().splitlines()[0])
    assert head["session"]["command"] == "wc -c caf\ufffd.dat"
    assert summary(tmp_path / "o")["exit_code"] == 0


@pytest.mark.parametrize(("closed", "fd"), [(">&-", 1), ("2>&-", 2), (">&- 2>&-", 1)])
def test_a_closed_stdout_or_stderr_keeps_the_exit_status(tmp_path, closed, fd):
    # The command finds the descriptor closed, as it would without the watcher.
    job = f"[ -e /proc/self/fd/{fd} ] && exit 9; exit 3"
    done = subprocess.run(["sh", "-c", f'exec "$@" {closed}', "sh", *WATCHER, "run", "-i", "0.5",
                           "-o", "o", "--", "sh", "-c", job], env=ENV, cwd=tmp_path,
                          capture_output=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert summary(tmp_path / "o")["exit_code"] == 3
    # The card goes to stderr: there when only stdout is closed, nowhere (and no trouble)
    # when stderr is, and never into stdout.
    assert (b"turingwatch report card" in done.stderr) == (closed == ">&-")
    assert b"report card" not in done.stdout


def test_a_card_the_terminal_cannot_encode_is_printed_with_replacements(tmp_path):
    done = turingwatch(tmp_path, "run", "-i", "0.5", "-o", "o", "--", "true",
                       env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0
    assert b"turingwatch report card" in done.stderr and b"could not write" not in done.stderr


@pytest.mark.parametrize("pipe", ['"$@" | true', '"$@" 2>&1 >/dev/null | true'])
def test_a_reader_that_went_away_costs_the_card_not_the_status(tmp_path, pipe):
    # Its stdout's reader, or its stderr's (where the card goes), has gone.
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {pipe}", "bash", *WATCHER, "run",
                           "-i", "0.5", "-o", "o", "--", "sh", "-c", "sleep 0.5; exit 4"],
                          env=ENV, cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 4 and b"Traceback" not in done.stderr
    assert summary(tmp_path / "o")["exit_code"] == 4


def test_a_command_killed_by_sigkill_kills_the_watcher_the_same_way(tmp_path):
    done = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "o", "--", "sh", "-c", "kill -KILL $$")
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert summary(tmp_path / "o")["exit_signal"] == signal.SIGKILL


def test_an_inherited_descriptor_reaches_the_command(tmp_path):
    # `turingwatch run -- CMD 3>file` must leave CMD the descriptor the shell gave it.
    done = subprocess.run(["bash", "-c", '"$@" 3>fd3.txt', "bash", *WATCHER, "run", "-q", "-i", "0.5",
                           "-o", "o", "--", "sh", "-c", "echo through >&3"],
                          env=ENV, cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fd3.txt").read_text() == "through\n"


def test_the_command_gets_the_signal_mask_and_dispositions_it_would_get_alone(tmp_path):
    show = "grep -E '^(SigBlk|SigIgn)' /proc/self/status"
    alone = subprocess.run(["sh", "-c", show], capture_output=True, text=True, check=True).stdout
    watched = turingwatch(tmp_path, "run", "-q", "-i", "0.5", "-o", "o", "--", "sh", "-c", show)
    assert watched.stdout.decode() == alone


# -- signals that reach the job by two ways ----------------------------------------------
def _start_watcher(tmp_path, job: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([*WATCHER, "run", "-q", "-i", "0.5", "-o", "o", "--", sys.executable,
                             "-c", job], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **popen)


def test_ctrl_c_on_the_terminal_reaches_the_job_once(tmp_path):
    # The terminal sends SIGINT to its foreground process group: the watcher and the job.
    pid, master = pty.fork()
    if pid == 0:  # the child: the watcher, on a terminal of its own
        try:
            os.chdir(tmp_path)
            os.execve(sys.executable, [*WATCHER, "run", "-q", "-i", "0.5", "-o", "o", "--",
                                       sys.executable, "-c", counter("INT")], ENV)
        finally:
            os._exit(127)
    try:
        wait_for(tmp_path / "ready")
        os.write(master, b"\x03")
        _, status = os.waitpid(pid, 0)
    finally:
        drained = b""
        try:
            while chunk := os.read(master, 4096):
                drained += chunk
        except OSError:
            pass
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0, drained
    assert (tmp_path / "count").read_text() == "1"


@pytest.mark.parametrize("how", ["each", "group"])
def test_slurm_signalling_the_step_reaches_the_job_once(tmp_path, how):
    # slurmstepd signals every process of the step (scancel, the time limit, srun passing on
    # a Ctrl-C), or with `scancel --full` the batch script's process group.
    watcher = _start_watcher(tmp_path, counter("USR1"), start_new_session=True)
    job = int(wait_for(tmp_path / "ready"))
    targets = [watcher.pid, job] if how == "each" else [watcher.pid]
    subprocess.run([sys.executable, "-c", FAKE_STEPD, how, str(int(signal.SIGUSR1)),
                    *map(str, targets)], cwd=tmp_path, check=True, timeout=90)
    assert watcher.wait(timeout=60) == 0, watcher.stderr.read()
    assert (tmp_path / "count").read_text() == "1"


def test_the_job_signalling_its_own_group_gets_it_once(tmp_path):
    # `kill 0` in a job script (a cleanup trap) reaches the watcher too: it is not sent back.
    job = counter("USR1", before="os.kill(0, signal.SIGUSR1)")
    watcher = _start_watcher(tmp_path, job, start_new_session=True)
    assert watcher.wait(timeout=60) == 0, watcher.stderr.read()
    assert (tmp_path / "count").read_text() == "1"


def test_a_signal_to_the_watcher_alone_is_passed_on_once(tmp_path):
    watcher = _start_watcher(tmp_path, counter("USR1"), start_new_session=True)
    wait_for(tmp_path / "ready")
    watcher.send_signal(signal.SIGUSR1)
    assert watcher.wait(timeout=60) == 0, watcher.stderr.read()
    assert (tmp_path / "count").read_text() == "1"


@pytest.mark.parametrize(
    ("signum", "sender", "facts", "forward"),
    [
        (signal.SIGINT, "kernel", {}, False),                             # Ctrl-C: the job got it
        (signal.SIGINT, "kernel", {"child_in_our_group": False}, True),   # the job left our group
        (signal.SIGHUP, "kernel", {"session_leader": True}, True),        # hangup: the leader alone
        (signal.SIGHUP, "kernel", {}, False),                             # a foreground group's hangup
        (signal.SIGUSR1, "job", {}, False),                               # the job's own `kill 0`
        (signal.SIGTERM, "slurm", {}, False),                             # scancel, the time limit
        (signal.SIGUSR1, "slurm", {}, False),                             # scancel --full, srun
        (signal.SIGUSR1, "slurm", {"batch_script": True}, True),          # --signal=B:USR1, exec'd
        (signal.SIGTERM, "slurm", {"batch_script": True}, False),         # the job's cancellation
        (signal.SIGTERM, None, {}, True),                                 # kill PID, Popen.terminate
    ],
)
def test_which_signals_are_passed_on(signum, sender, facts, forward):
    given = {"child_in_our_group": True, "session_leader": False, "batch_script": False, **facts}
    who = runner.Sender(**({sender: True} if sender else {}))
    assert runner.should_forward(signum, who, **given) is forward


# -- the watcher's own subprocesses ----------------------------------------------------
def test_the_reaper_leaves_the_watchers_own_subprocesses_alone():
    # The sampling thread runs squeue and scontrol while the main thread waits for the
    # command: the main thread must not take their exit status (Python then reads 0).
    result = {}

    def slurm_query() -> None:
        query = subprocess.Popen(["sh", "-c", "exit 5"])
        time.sleep(0.6)          # it has ended; the main thread is waiting meanwhile
        result["status"] = query.wait()

    command = subprocess.Popen(["sleep", "1.2"])
    orphan_maker = subprocess.Popen(["sh", "-c", "exit 0"])  # any other child: an orphan
    thread = threading.Thread(target=slurm_query)
    thread.start()
    deadline = time.monotonic() + 10
    status = None
    while status is None:
        assert time.monotonic() < deadline
        status = runner.reap(command.pid)
        time.sleep(0.05)
    thread.join()
    assert os.waitstatus_to_exitcode(status) == 0
    assert result["status"] == 5
    with pytest.raises(ChildProcessError):
        os.waitpid(orphan_maker.pid, os.WNOHANG)   # reaped along the way


# -- the same against the real Slurm ---------------------------------------------------
def _slurm_counting_job(slurm_cluster, turingwatch_command, signame: str, *, exec_: bool,
                        traps: str = "") -> tuple[Path, int]:
    """Submit a batch job whose command counts SIG<signame>; return its directory and id once
    the command is ready. ``traps``: the batch shell's own (a shell without one dies of the
    signal first, and Slurm then kills the rest of the step)."""
    job_dir = slurm_cluster.make_job_dir("signals-")
    (job_dir / "count.py").write_text(counter(signame))
    run = turingwatch_command.shell("run", "-q", "-i", "0.5", "-o", f"{job_dir}/out")
    # `exec env VAR=... python`: env execs in turn, so the watcher keeps the script's pid.
    line = f"{'exec env ' if exec_ else ''}{run} -- {turingwatch_command.argv[0]} count.py"
    script = f"#!/bin/sh\n{traps}\ncd {job_dir}\n{line}\n"
    job_id = slurm_cluster.sbatch(script, "-J", f"tw-{signame.lower()}", cwd=job_dir)
    try:
        wait_for(job_dir / "ready", timeout=240)
    except AssertionError:
        subprocess.run(["scancel", str(job_id)], env=slurm_cluster.env, check=False)
        raise
    return job_dir, job_id


def _scancel(slurm_cluster, job_id: int, *options: str) -> None:
    subprocess.run(["scancel", *options, str(job_id)], env=slurm_cluster.env, check=True, timeout=30)


@pytest.mark.slurm
def test_scancel_reaches_the_job_once(slurm_cluster, turingwatch_command):
    # Slurm sends SIGTERM to every process of the step, then SIGKILL after KillWait (5 s here).
    job_dir, job_id = _slurm_counting_job(slurm_cluster, turingwatch_command, "TERM", exec_=False,
                                          traps="trap 'true' TERM")
    _scancel(slurm_cluster, job_id)
    assert wait_for(job_dir / "count") == "1"
    slurm_cluster.wait(job_id)


@pytest.mark.slurm
def test_scancel_full_reaches_the_job_once(slurm_cluster, turingwatch_command):
    # --full: the batch script's process group, the shell, the watcher and the command.
    job_dir, job_id = _slurm_counting_job(slurm_cluster, turingwatch_command, "USR1", exec_=False,
                                          traps="trap 'true' USR1")
    _scancel(slurm_cluster, job_id, "--full", "--signal=USR1")
    assert wait_for(job_dir / "count") == "1"
    rows = slurm_cluster.wait(job_id)
    assert rows[str(job_id)]["State"] == "COMPLETED"


@pytest.mark.slurm
def test_a_signal_for_the_batch_script_alone_is_passed_on_when_the_watcher_is_the_script(
    slurm_cluster, turingwatch_command
):
    # `exec turingwatch run` in the script: scancel --batch (sbatch --signal=B:) reaches only it.
    job_dir, job_id = _slurm_counting_job(slurm_cluster, turingwatch_command, "USR1", exec_=True)
    _scancel(slurm_cluster, job_id, "--batch", "--signal=USR1")
    assert wait_for(job_dir / "count") == "1"
    rows = slurm_cluster.wait(job_id)
    assert rows[str(job_id)]["State"] == "COMPLETED"
