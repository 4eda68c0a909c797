"""Slurm job cgroups on recorded and hand-built trees (tests/fixtures/cgroup/README.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from watcher.sampling.cgroups import (
    CgroupJobLayout,
    cgroup_version,
    parse_cpu_list,
    read_proc_cgroup,
    slurm_step_from_cgroup,
)

FIXTURES = Path(__file__).parent / "fixtures"
CGROUP = FIXTURES / "cgroup"
PROC = FIXTURES / "proc"
NODE_PROC = str(PROC / "cgroup-node")


def layout(tree: str, job: int = 4242, proc: str = NODE_PROC) -> CgroupJobLayout:
    return CgroupJobLayout(job, cgroup_root=str(CGROUP / tree), proc_root=proc)


@pytest.mark.parametrize(
    ("text", "count"),
    [("0-3,8,10-11\n", 7), ("", 0), ("\n", 0), ("5", 1), ("0,2,4,6\n", 4), ("0-127", 128)],
)
def test_parse_cpu_list(text, count):
    assert parse_cpu_list(text) == count


def test_parse_cpu_list_of_recorded_cpusets():
    machine = CGROUP / "hybrid-recorded/cpuset/cpuset.effective_cpus"
    assert parse_cpu_list(machine.read_text()) == 2
    step = CGROUP / "v1-recorded/cpuset/slurm/uid_1001/job_4242/step_0"
    assert parse_cpu_list((step / "cpuset.effective_cpus").read_text()) == 1


def test_read_proc_cgroup_of_a_recorded_hybrid_process():
    paths = read_proc_cgroup(11636, str(PROC / "linuxproc-job14"))
    assert paths[""] == "/"
    assert paths["cpuset"] == "/"
    assert paths["memory"].startswith("/process_api/")
    assert paths["name=systemd"] == "/"


def test_read_proc_cgroup_splits_joined_controllers(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7/cgroup").write_text("2:cpu,cpuacct:/slurm/uid_5/job_9/step_1\n0::/\n")
    paths = read_proc_cgroup(7, str(tmp_path))
    assert paths["cpu"] == paths["cpuacct"] == "/slurm/uid_5/job_9/step_1"
    assert slurm_step_from_cgroup(paths) == (9, "1")


def test_read_proc_cgroup_of_a_gone_process_is_none():
    assert read_proc_cgroup(999999, NODE_PROC) is None


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ({"": "/system.slice/slurmstepd.scope/job_123/step_batch/user/task_0"}, (123, "batch")),
        ({"": "/system.slice/slurmstepd.scope/job_123/step_0/user/task_1"}, (123, "0")),
        ({"": "/system.slice/slurmstepd.scope/job_123/step_extern/slurm"}, (123, "extern")),
        ({"": "/system.slice/slurmstepd.scope/job_123/step_interactive"}, (123, "interactive")),
        ({"": "/system.slice/node7_slurmstepd.scope/job_5/step_0+1/user/task_0"}, (5, "0+1")),
        ({"cpuacct": "/slurm/uid_1000/job_123/step_0/task_1", "": "/"}, (123, "0")),
        ({"freezer": "/slurm_node7/uid_1000/job_8/step_batch"}, (8, "batch")),
        ({"": "/system.slice/slurmstepd.scope/job_123"}, None),
        ({"": "/user.slice/user-1000.slice/session-3.scope"}, None),
        ({}, None),
    ],
)
def test_slurm_step_from_cgroup(paths, expected):
    assert slurm_step_from_cgroup(paths) == expected


def test_slurm_step_from_a_recorded_v1_process():
    paths = read_proc_cgroup(13315, str(PROC / "v1-recorded"))
    assert slurm_step_from_cgroup(paths) == (4242, "0")
    # A recorded job process on the local cluster (proctrack/linuxproc): no Slurm cgroups.
    assert slurm_step_from_cgroup(read_proc_cgroup(11655, str(PROC / "linuxproc-job14"))) is None


@pytest.mark.parametrize(
    ("tree", "version"),
    [("v2", "v2"), ("v1", "v1"), ("v1-old-kernel", "v1"), ("hybrid-recorded", "hybrid")],
)
def test_cgroup_version(tree, version):
    assert cgroup_version(str(CGROUP / tree)) == version


def test_cgroup_version_none(tmp_path):
    assert cgroup_version(str(tmp_path)) == "none"
    assert not CgroupJobLayout(1, str(tmp_path), NODE_PROC).found


def test_v2_steps_leave_out_slurmstepd():
    job = layout("v2")
    assert job.found and job.method == "cgroup-v2"
    # step_interactive exists but is empty; step_<S>/slurm holds the stepds 2001, 2010, 2020.
    assert job.pids_by_step() == {"batch": [2002, 2003], "0": [2011, 2012], "extern": [2021]}
    assert job.stepds == {"batch": [2001], "0": [2010], "extern": [2020]}


def test_v2_cpus_come_from_the_step_else_the_job():
    job = layout("v2")
    assert job.cpus_available("batch") == 4
    assert job.cpus_available("0") == 2
    assert job.cpus_available("extern") == 4  # no cpuset in step_extern: the job's 2-5


def test_other_jobs_and_unknown_jobs():
    assert layout("v2", job=777).pids_by_step() == {"batch": [3002]}
    unknown = layout("v2", job=5)
    assert not unknown.found
    assert unknown.pids_by_step() == {}
    assert unknown.cpus_available("batch") is None


def test_v2_several_slurmd_per_host_and_a_heterogeneous_step():
    job = layout("v2-nodename")
    assert job.pids_by_step() == {"0+1": [2011]}
    assert job.cpus_available("0+1") == 2


def test_v2_job_in_a_container_is_found_from_our_own_cgroup():
    assert not layout("v2-container").found  # too deep for the usual places
    job = layout("v2-container", proc=str(PROC / "inside-container"))
    assert job.pids_by_step() == {"batch": [2002, 2003]}
    assert job.cpus_available("batch") == 4


def test_v1_steps_merge_controllers_and_leave_out_slurmstepd():
    job = layout("v1")
    assert job.method == "cgroup-v1"
    assert set(job.job_dirs) == {"freezer", "cpuset", "memory"}
    assert job.pids_by_step() == {"batch": [2002, 2003], "0": [2011, 2012], "extern": [2021]}
    assert job.stepds == {"batch": [2001], "0": [2010], "extern": [2020]}
    assert [job.cpus_available(s) for s in ("batch", "0", "extern")] == [4, 2, 4]


def test_v1_old_kernel_dedups_threads_from_tasks():
    job = layout("v1-old-kernel")
    # tasks lists 2001 (slurmstepd), 2002, 2003 and 2004, a thread of 2003.
    assert job.pids_by_step() == {"batch": [2002, 2003]}
    assert job.stepds == {"batch": [2001]}
    assert job.cpus_available("batch") == 4  # cpuset.cpus "0,2,4,6" of the job


def test_v1_recorded_kernel_tree():
    job = layout("v1-recorded", proc=str(PROC / "v1-recorded"))
    assert job.pids_by_step() == {"0": [13315]}
    assert job.cpus_available("0") == 1


def test_hybrid_machine_without_slurm_cgroups():
    assert not layout("hybrid-recorded", job=14, proc=str(PROC / "linuxproc-job14")).found


@pytest.fixture
def v2_copy(tmp_path):
    shutil.copytree(CGROUP / "v2", tmp_path / "cgroup")
    shutil.copytree(PROC / "cgroup-node", tmp_path / "proc")
    job_dir = tmp_path / "cgroup/system.slice/slurmstepd.scope/job_4242"
    return job_dir, CgroupJobLayout(4242, str(tmp_path / "cgroup"), str(tmp_path / "proc"))


def test_steps_that_start_and_end_between_rounds(v2_copy):
    job_dir, job = v2_copy
    assert "1" not in job.pids_by_step()
    (job_dir / "step_1/user/task_0").mkdir(parents=True)
    (job_dir / "step_1/user/task_0/cgroup.procs").write_text("2050\n")
    shutil.rmtree(job_dir / "step_0")
    assert job.pids_by_step() == {"batch": [2002, 2003], "1": [2050], "extern": [2021]}


def test_a_task_cgroup_that_vanishes_is_skipped(v2_copy):
    job_dir, job = v2_copy
    (job_dir / "step_0/user/task_1/cgroup.procs").unlink()
    assert job.pids_by_step()["0"] == [2011]


def test_v1_stepd_verdict_is_dropped_when_its_pid_leaves(tmp_path):
    shutil.copytree(CGROUP / "v1-old-kernel", tmp_path / "cgroup")
    shutil.copytree(PROC / "cgroup-node", tmp_path / "proc")
    tasks = tmp_path / "cgroup/freezer/slurm_node7/uid_1000/job_4242/step_batch/tasks"
    job = CgroupJobLayout(4242, str(tmp_path / "cgroup"), str(tmp_path / "proc"))
    assert job.pids_by_step() == {"batch": [2002, 2003]}
    # slurmstepd 2001 exits; later its pid is reused by one of the job's processes.
    tasks.write_text("2002\n2003\n")
    assert job.pids_by_step() == {"batch": [2002, 2003]}
    (tmp_path / "proc/2001/comm").write_text("worker\n")
    tasks.write_text("2001\n2002\n2003\n")
    assert job.pids_by_step() == {"batch": [2001, 2002, 2003]}
