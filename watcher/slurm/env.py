"""What the watcher knows about the job it runs in: Slurm's environment, or the plain machine."""

from __future__ import annotations

import getpass
import os
import re
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from watcher.sampling.slurm_steps import job_step_from_env, slurm_cpus_on_node

_MIB = 1024 * 1024


@dataclass(frozen=True)
class JobContext:
    job_id: int | None            # None outside Slurm
    step: str | None              # the step this process runs in ("batch", "0", …)
    cluster: str | None
    node: str
    user_name: str
    nnodes: int | None
    cpus_on_node: int | None      # Slurm's CPUs for the job on this node
    mem_requested_bytes: int | None   # per node
    time_limit_s: int | None
    submit_dir: str | None

    @property
    def in_slurm(self) -> bool:
        return self.job_id is not None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def requested_memory(env: Mapping[str, str], cpus: int | None) -> int | None:
    """Memory Slurm granted on this node, in bytes (the variables are in MiB)."""
    per_node = _int(env.get("SLURM_MEM_PER_NODE"))
    if per_node:
        return per_node * _MIB
    per_cpu = _int(env.get("SLURM_MEM_PER_CPU"))
    if per_cpu and cpus:
        return per_cpu * cpus * _MIB
    return None


def parse_time_limit(text: str) -> int | None:
    """Slurm's [D-]HH:MM:SS / MM:SS / MM limits in seconds; UNLIMITED and junk give None."""
    text = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        return None
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if c is not None:                 # [D-]HH:MM:SS
        h, mnt, s = a, b, c
    elif b is not None:               # D-HH:MM or MM:SS
        h, mnt, s = (a, b, 0) if days is not None else (0, a, b)
    else:                             # D-HH or MM
        h, mnt, s = (a, 0, 0) if days is not None else (0, a, 0)
    return (days or 0) * 86400 + (h or 0) * 3600 + (mnt or 0) * 60 + (s or 0)


@dataclass(frozen=True)
class SlurmTimes:
    time_limit_s: int | None
    started_at: float | None      # the job's start, seconds since the epoch


def parse_squeue_times(line: str) -> SlurmTimes:
    """``squeue -o '%l|%S'``: the limit ([D-]HH:MM:SS, UNLIMITED) and the local start time."""
    limit, _, start = line.strip().partition("|")
    try:
        started = datetime.fromisoformat(start).astimezone().timestamp() if start else None
    except ValueError:  # N/A, Unknown
        started = None
    return SlurmTimes(parse_time_limit(limit), started)


def slurm_job_times(job_id: int, env: Mapping[str, str], squeue: str = "squeue") -> SlurmTimes:
    """The job's time limit and start: from the environment where Slurm sets them (23.02+),
    else one squeue call. Ask while the job runs: once it has ended, squeue may not know it."""
    start, end = _int(env.get("SLURM_JOB_START_TIME")), _int(env.get("SLURM_JOB_END_TIME"))
    if start and end and end > start:
        return SlurmTimes(end - start, float(start))
    try:
        out = subprocess.run(
            [squeue, "-h", "-j", str(job_id), "-o", "%l|%S"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return SlurmTimes(None, None)
    return parse_squeue_times(out.splitlines()[0]) if out.strip() else SlurmTimes(None, None)


def detect(env: Mapping[str, str] | None = None, *, query_slurm: bool = True) -> JobContext:
    """The job this process belongs to. ``query_slurm`` allows one squeue call (time limit)."""
    env = os.environ if env is None else env
    job_id = _int(env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID"))
    node = env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    try:
        user = env.get("SLURM_JOB_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    if job_id is None:
        return JobContext(None, None, None, node, user, None, None, None, None, None)
    found = job_step_from_env(env)
    step = found[1] if found else "batch"
    cpus = slurm_cpus_on_node(env)
    return JobContext(
        job_id=job_id,
        step=step,
        cluster=env.get("SLURM_CLUSTER_NAME"),
        node=node,
        user_name=user,
        nnodes=_int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")),
        cpus_on_node=cpus,
        mem_requested_bytes=requested_memory(env, cpus),
        time_limit_s=slurm_job_times(job_id, env).time_limit_s if query_slurm else None,
        submit_dir=env.get("SLURM_SUBMIT_DIR"),
    )


def local_job_label(now: float | None = None) -> str:
    """The label of a run outside Slurm, used in the default output directory name."""
    return "local-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
