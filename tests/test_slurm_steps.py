"""Finding a job's processes by step (fixtures: tests/fixtures/proc/README.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from watcher.config import SlurmSettings
from watcher.sampling.slurm_steps import (
    JobProcessFinder,
    calling_job_id,
    find_job_processes,
    parse_stepd_title,
    step_cpus,
)
from watcher.sampling.sources import affinity_cpus
from watcher.slurm.commands import SlurmCommands, parse_listpids
from watcher.slurm.env import job_step_from_env, parse_environ, slurm_cpus_on_node, step_name

FIXTURES = Path(__file__).parent / "fixtures"
JOB14 = FIXTURES / "proc/linuxproc-job14"  # recorded from a real job on the local cluster
HYBRID = str(FIXTURES / "cgroup/hybrid-recorded")
LISTPIDS = FIXTURES / "proc/listpids"
NO_SCONTROL = SlurmCommands.from_config(SlurmSettings(scontrol="/nonexistent/scontrol"))


def recorded(pid: int, name: str) -> bytes:
    return (JOB14 / str(pid) / name).read_bytes()


def find14(job: int | None = 14, **kwargs):
    return find_job_processes(job, str(JOB14), HYBRID, NO_SCONTROL, **kwargs)


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (b"slurmstepd: [123.batch]\0", (123, "batch")),
        (b"slurmstepd: [123.extern]", (123, "extern")),
        (b"slurmstepd: [123.interactive]\0\0\0", (123, "interactive")),
        (b"slurmstepd: [123.7]\0", (123, "7")),
        (b"slurmstepd: [123.0+1]\0", (123, "0+1")),
        (b"slurmstepd: [123.batch] extra\0", None),
        (b"slurmstepd: [123]\0", None),
        (b"/usr/sbin/slurmstepd\0", None),
        (b"sleep\0slurmstepd: [123.0]\0", None),
        (b"", None),
    ],
)
def test_parse_stepd_title(cmdline, expected):
    assert parse_stepd_title(cmdline) == expected


def test_parse_recorded_stepd_titles():
    assert parse_stepd_title(recorded(11632, "cmdline")) == (14, "batch")
    assert parse_stepd_title(recorded(11650, "cmdline")) == (14, "0")
    assert parse_stepd_title(recorded(11636, "cmdline")) is None  # the batch script


@pytest.mark.parametrize(
    ("step_id", "name"),
    [("0", "0"), ("12", "12"), ("4294967291", "batch"), ("4294967294", "batch"),
     ("4294967292", "extern"), ("4294967290", "interactive")],
)
def test_step_name(step_id, name):
    assert step_name(step_id) == name


def test_job_and_step_from_recorded_environments():
    batch = parse_environ(recorded(11636, "environ"))
    assert batch["SLURM_JOB_ID"] == "14" and "SLURM_STEP_ID" not in batch
    assert "HOME" not in batch  # only Slurm's variables are kept
    assert job_step_from_env(batch) == (14, "batch")
    assert job_step_from_env(parse_environ(recorded(11655, "environ"))) == (14, "0")
    assert job_step_from_env(parse_environ(recorded(11639, "environ"))) == (14, "batch")
    assert job_step_from_env({"SLURM_JOBID": "9", "SLURM_STEPID": "3"}) == (9, "3")
    assert job_step_from_env({}) is None
    assert job_step_from_env({"SLURM_JOB_ID": "abc"}) is None


def test_parse_recorded_listpids():
    text = (LISTPIDS / "job14-alice.txt").read_text()
    assert parse_listpids(text, 14) == {"0": [11655, 11656], "batch": [11636, 11637, 11640, 11643]}
    assert parse_listpids(text, 15) == {}
    every_job = (LISTPIDS / "all-jobs-root.txt").read_text()
    assert parse_listpids(every_job, 18) == {"batch": [14777, 14778]}
    assert parse_listpids(every_job, 14) == parse_listpids(text, 14)
    assert parse_listpids((LISTPIDS / "job999-unknown.txt").read_text(), 999) == {}


def test_stepd_trees_of_a_recorded_job():
    steps = find14()
    # The stepds 11632 and 11650 are Slurm's; job 15's processes are not job 14's.
    assert steps.pids == {
        "batch": [11636, 11637, 11639, 11640, 11643],
        "0": [11655, 11656],
    }
    assert steps.method == "stepd-tree"
    # 11639 was started with setsid and re-parented to init: only its environment tells.
    assert steps.methods == {"batch": ["stepd-tree", "environ"], "0": ["stepd-tree"]}
    assert steps.step_of()[11639] == "batch"
    assert steps.stepds == {"batch": [11632], "0": [11650]}
    assert steps.cpus == {}


def test_ignored_pids_are_left_out_but_not_their_children():
    finder = JobProcessFinder(14, str(JOB14), HYBRID, NO_SCONTROL, ignore_pids=[11636, 11655])
    steps = finder.find()
    assert steps.pids == {"batch": [11637, 11639, 11640, 11643], "0": [11656]}
    finder = JobProcessFinder(14, str(JOB14), HYBRID, NO_SCONTROL, ignore_pids=[11655, 11656])
    assert "0" not in finder.find().methods


def _fake_process(proc: Path, pid: int, ppid: int, like: int, cmdline: bytes) -> None:
    """A copy of recorded process ``like`` as ``pid``, child of ``ppid``."""
    shutil.copytree(proc / str(like), proc / str(pid))
    fields = (proc / str(like) / "stat").read_text().split(" ")
    fields[0], fields[3] = str(pid), str(ppid)
    (proc / str(pid) / "stat").write_text(" ".join(fields))
    (proc / str(pid) / "cmdline").write_bytes(cmdline)


def test_a_forked_slurmstepd_is_a_daemon_and_its_child_a_task(tmp_path):
    proc = tmp_path / "proc"
    shutil.copytree(JOB14, proc)
    # slurmstepd forks before exec'ing a task; the fork keeps the title for a moment.
    _fake_process(proc, 11700, 11650, like=11650, cmdline=b"slurmstepd: [14.0]\0")
    _fake_process(proc, 11701, 11700, like=11655, cmdline=b"/usr/bin/sleep\0242\0")
    steps = find_job_processes(14, str(proc), HYBRID, NO_SCONTROL)
    assert steps.pids["0"] == [11655, 11656, 11701]
    assert steps.stepds["0"] == [11650, 11700]


def test_another_job_on_the_same_node():
    assert find14(15).pids == {"batch": [12655, 12656]}


def test_environment_is_read_only_for_the_jobs_user():
    finder = JobProcessFinder(14, str(JOB14), HYBRID, NO_SCONTROL, uid=4321)
    assert 11639 not in finder.find().all_pids()


def test_processes_under_another_jobs_stepd_stay_that_jobs(tmp_path):
    shutil.copytree(JOB14, tmp_path / "proc")
    # A job-15 process whose environment (inherited from job 14's shell) names job 14.
    (tmp_path / "proc/12656/environ").write_bytes(b"SLURM_JOB_ID=14\0")
    steps = find_job_processes(14, str(tmp_path / "proc"), HYBRID, NO_SCONTROL)
    assert 12656 not in steps.all_pids()


def test_job_of_the_calling_process():
    assert find14(None, env={"SLURM_JOB_ID": "14"}).job_id == 14
    inside = str(FIXTURES / "proc/inside-container")
    assert calling_job_id({}, inside) == 4242
    assert calling_job_id({}, str(JOB14)) is None
    empty = find_job_processes(None, str(JOB14), HYBRID, NO_SCONTROL, env={})
    assert empty.job_id is None and empty.pids == {} and empty.method is None


def test_cgroups_win_over_the_process_table():
    steps = find_job_processes(4242, str(FIXTURES / "proc/cgroup-node"),
                               str(FIXTURES / "cgroup/v2"), NO_SCONTROL)
    assert steps.method == "cgroup-v2"
    assert steps.pids == {"batch": [2002, 2003], "0": [2011, 2012], "extern": [2021]}
    assert steps.cpus == {"batch": 4, "0": 2, "extern": 4}
    assert steps.stepds == {"batch": [2001], "0": [2010], "extern": [2020]}


def test_no_processes_anywhere_and_scontrol_finds_none():
    assert find14(999).pids == {}
    # "false" is a real program that prints nothing and fails, like listpids for a gone job.
    steps = find_job_processes(999, str(JOB14), HYBRID,
                               SlurmCommands.from_config(SlurmSettings(scontrol="false")))
    assert steps.pids == {} and steps.method is None


def test_processes_that_vanish_are_skipped(tmp_path):
    proc = tmp_path / "proc"
    shutil.copytree(JOB14, proc)
    finder = JobProcessFinder(14, str(proc), HYBRID, NO_SCONTROL)
    assert finder.find().pids["0"] == [11655, 11656]
    shutil.rmtree(proc / "11656")            # gone before listing
    (proc / "11655/stat").unlink()           # gone between listing and reading
    (proc / "11639/environ").unlink()        # its environment was read once and kept
    steps = finder.find()
    assert "0" not in steps.pids
    assert steps.stepds["0"] == [11650]  # the step's stepd still holds its reaped CPU time
    assert steps.pids["batch"] == [11636, 11637, 11639, 11640, 11643]


def test_slurm_cpus_on_node():
    assert slurm_cpus_on_node(parse_environ(recorded(11636, "environ"))) == 2
    assert slurm_cpus_on_node({"SLURM_CPUS_ON_NODE": "8"}) == 8
    per_node = {"SLURM_JOB_CPUS_PER_NODE": "4(x2),2"}
    assert slurm_cpus_on_node({**per_node, "SLURM_NODEID": "1"}) == 4
    assert slurm_cpus_on_node({**per_node, "SLURM_NODEID": "2"}) == 2
    assert slurm_cpus_on_node(per_node) is None  # which node is this?
    assert slurm_cpus_on_node({"SLURM_JOB_CPUS_PER_NODE": "4(x3)"}) == 4
    assert slurm_cpus_on_node({"SLURM_JOB_CPUS_PER_NODE": "lots"}) is None
    assert slurm_cpus_on_node({}) is None


def test_step_cpus_prefers_the_cpuset_then_slurms_count_then_affinity():
    steps = find_job_processes(4242, str(FIXTURES / "proc/cgroup-node"),
                               str(FIXTURES / "cgroup/v2"), NO_SCONTROL)
    assert step_cpus(steps, "0", {"SLURM_CPUS_ON_NODE": "8"}) == (2, "cpuset")
    assert step_cpus(steps, "7", {"SLURM_CPUS_ON_NODE": "8"}) == (8, "slurm-env")
    assert step_cpus(steps, "7", {}) == (affinity_cpus(), "affinity")
    assert step_cpus(steps, "7") == (None, None)  # not inside the job: nothing to go by


def test_affinity_cpus():
    assert 1 <= affinity_cpus() <= (os.cpu_count() or 1)


# -- the real local cluster ------------------------------------------------------------------

def _cluster_env() -> dict[str, str] | None:
    script = Path(__file__).parents[1] / "scripts/slurm-cluster.sh"
    if not script.exists() or not shutil.which("sbatch"):
        return None
    status = subprocess.run([str(script), "status"], capture_output=True, text=True, check=False)
    exported = subprocess.run([str(script), "env"], capture_output=True, text=True, check=False)
    if status.returncode != 0 or "SLURM_CONF=" not in exported.stdout:
        return None
    conf = exported.stdout.split("SLURM_CONF=", 1)[1].split()[0].strip("'\"")
    return {**os.environ, "SLURM_CONF": conf}


def _job_state(job: int, env: dict[str, str]) -> str:
    squeue = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"],
                            capture_output=True, text=True, env=env, check=False)
    return squeue.stdout.strip()


@pytest.mark.slurm
def test_find_a_real_jobs_processes():
    env = _cluster_env()
    if env is None:
        pytest.skip("the local Slurm cluster is not up (scripts/slurm-cluster.sh start)")
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-n1", "-t2", "-o/dev/null", "-Jtw-find-steps",
         "--wrap", "sleep 90 & srun -n1 sleep 90; wait"],
        capture_output=True, text=True, env=env, check=True)
    job = int(submitted.stdout.strip().split(";")[0])
    try:
        deadline = time.monotonic() + 180  # the cluster is shared: wait for a free CPU
        while _job_state(job, env) == "PENDING" and time.monotonic() < deadline:
            time.sleep(1)
        if _job_state(job, env) != "RUNNING":
            pytest.skip(f"job {job} did not start within 3 minutes: the cluster is busy")
        deadline = time.monotonic() + 30
        steps = find_job_processes(job, env=env)
        while not steps.pids.get("0") and time.monotonic() < deadline:
            time.sleep(0.5)
            steps = find_job_processes(job, env=env)
        listed = subprocess.run(["scontrol", "listpids", str(job)],
                                capture_output=True, text=True, env=env, check=True).stdout
        steps = find_job_processes(job, env=env)  # after listpids: it lists nothing newer
        assert steps.method == "stepd-tree"
        assert steps.pids["0"] and steps.pids["batch"]
        for step, pids in parse_listpids(listed, job).items():
            assert set(pids) <= set(steps.pids[step])
    finally:
        subprocess.run(["scancel", str(job)], env=env, check=False)
