"""What the watcher reads from Slurm's environment (watcher/slurm/env.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from watcher.config import SlurmSettings
from watcher.slurm import env as jobenv
from watcher.slurm.commands import SlurmCommands, parse_squeue_times

# squeue cannot run: a test that passes with it asked nothing of Slurm.
NO_SQUEUE = SlurmCommands.from_config(SlurmSettings(squeue="/nonexistent/squeue"))


def test_requested_memory():
    assert jobenv.requested_memory({"SLURM_MEM_PER_NODE": "1024"}, 4) == 1 << 30
    assert jobenv.requested_memory({"SLURM_MEM_PER_CPU": "512"}, 4) == 2 << 30
    assert jobenv.requested_memory({"SLURM_MEM_PER_CPU": "512"}, None) is None
    assert jobenv.requested_memory({}, 4) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1-00:00:00", 86400), ("02:03:04", 7384), ("10:30", 630), ("5", 300), ("2-12", 216000),
     ("1-02:30", 95400), ("UNLIMITED", None), ("Partition_Limit", None), ("", None)],
)
def test_time_limits(text, seconds):
    assert jobenv.parse_time_limit(text) == seconds


INSIDE = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "4294967291", "SLURM_CPUS_ON_NODE": "4",
          "SLURM_MEM_PER_CPU": "256", "SLURMD_NODENAME": "n7", "SLURM_JOB_USER": "alice",
          "SLURM_JOB_START_TIME": "1000", "SLURM_JOB_END_TIME": "4600"}


def test_detect_inside_and_outside_slurm():
    outside = jobenv.detect({"USER": "bob"})
    assert not outside.in_slurm and outside.job_id is None
    inside = jobenv.detect(INSIDE, slurm=NO_SQUEUE)  # the times are in the environment
    assert (inside.job_id, inside.step, inside.node, inside.user_name) == (77, "batch", "n7", "alice")
    assert inside.mem_requested_bytes == 1 << 30 and inside.time_limit_s == 3600
    assert jobenv.detect(INSIDE).time_limit_s is None  # not asked for


def test_times_from_the_environment():
    assert jobenv.times_from_env(INSIDE) == jobenv.SlurmTimes(3600, 1000.0)
    assert jobenv.times_from_env({"SLURM_JOB_START_TIME": "1000"}) is None
    assert jobenv.times_from_env({"SLURM_JOB_START_TIME": "5", "SLURM_JOB_END_TIME": "5"}) is None


def test_squeue_times():
    times = parse_squeue_times("1:00:00|2026-11-22T04:02:45\n")
    assert times.time_limit_s == 3600
    assert times.started_at == datetime(2026, 11, 22, 4, 2, 45).astimezone().timestamp()
    assert parse_squeue_times("UNLIMITED|N/A") == jobenv.SlurmTimes(None, None)


def test_the_gpus_slurm_granted():
    assert jobenv.granted_gpus({"SLURM_JOB_GPUS": "0,1", "SLURM_STEP_GPUS": "1"}) == "1"
    assert jobenv.granted_gpus({"SLURM_JOB_GPUS": "NoDevFiles"}) == "NoDevFiles"
    assert jobenv.granted_gpus({"CUDA_VISIBLE_DEVICES": "0"}) is None
    assert jobenv.inside_job({"SLURM_JOB_ID": ""}) and not jobenv.inside_job({"HOME": "/"})
