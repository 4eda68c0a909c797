"""What the watcher knows about the job it runs in: Slurm's environment, or the plain machine.

Every ``SLURM_*`` variable turingwatch reads is read here, from a mapping the caller passes
(``os.environ``, or a process's ``/proc/<pid>/environ``): the job and step, its CPUs, memory
and time limit on this node, and the GPUs Slurm granted. Nothing here runs a command; asking
Slurm itself is :mod:`watcher.slurm.commands`.
"""

from __future__ import annotations

import getpass
import logging
import os
import pwd
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watcher.slurm.commands import SlurmCommands

_MIB = 1024 * 1024
log = logging.getLogger(__name__)

# Slurm's reserved step ids (slurm.h), as they show up in SLURM_STEP_ID. Batch was
# 0xfffffffe before Slurm 20.11 and is 0xfffffffb since.
_RESERVED_STEP_IDS = {
    0xFFFFFFFA: "interactive",
    0xFFFFFFFB: "batch",
    0xFFFFFFFC: "extern",
    0xFFFFFFFD: "TBD",
    0xFFFFFFFE: "batch",
}

# The GPUs Slurm granted (gres/gpu), most specific first: a step's own, then the job's.
_GPU_VARIABLES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS")


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
    # sbatch --job-name; None outside Slurm, and in watch.sh's attach step, which runs under
    # its own name ("turingwatch": the step's, not the job's)
    job_name: str | None = None

    @property
    def in_slurm(self) -> bool:
        return self.job_id is not None


@dataclass(frozen=True)
class SlurmTimes:
    time_limit_s: int | None
    started_at: float | None      # the job's start, seconds since the epoch


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def parse_environ(data: bytes) -> dict[str, str]:
    """The ``SLURM_*`` variables of a ``/proc/<pid>/environ``."""
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        if item.startswith(b"SLURM_"):
            key, _, value = item.decode(errors="replace").partition("=")
            env[key] = value
    return env


def step_name(step_id: str) -> str:
    """A step as Slurm's environment spells it (``SLURM_STEP_ID``) -> our step name."""
    if step_id.isdigit() and int(step_id) in _RESERVED_STEP_IDS:
        return _RESERVED_STEP_IDS[int(step_id)]
    return step_id


def job_step_from_env(env: Mapping[str, str]) -> tuple[int, str] | None:
    """``(job, step)`` from Slurm's variables; a process with a job but no step is ``batch``."""
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job or not job.isdigit():
        return None
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")
    return int(job), step_name(step) if step else "batch"


def inside_job(env: Mapping[str, str]) -> bool:
    """Whether the environment is a Slurm job's (``SLURM_JOB_ID`` is set, whatever its value)."""
    return "SLURM_JOB_ID" in env


def granted_gpus(env: Mapping[str, str]) -> str | None:
    """The GPU list Slurm wrote for the step or job, as written; None when it wrote none.

    The value is in one of the dialects :mod:`watcher.sampling.gpu_devices` reads (indices,
    UUIDs, ``NoDevFiles``); which GPUs it names is decided there.
    """
    for name in _GPU_VARIABLES:
        if name in env:
            return env[name]
    return None


def _expand_cpus_per_node(text: str) -> list[int]:
    """``"4(x2),2"`` -> ``[4, 4, 2]`` (SLURM_JOB_CPUS_PER_NODE's run-length form)."""
    counts: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise ValueError(f"not a CPUs-per-node list: {text!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def slurm_cpus_on_node(env: Mapping[str, str]) -> int | None:
    """CPUs Slurm allocated to the job on this node, from the job's environment.

    ``SLURM_CPUS_ON_NODE`` when set; else this node's entry (``SLURM_NODEID``) of
    ``SLURM_JOB_CPUS_PER_NODE``, or its only value when every node has the same. None if
    neither says.
    """
    value = env.get("SLURM_CPUS_ON_NODE", "").strip()
    if value.isdigit():
        return int(value)
    try:
        counts = _expand_cpus_per_node(env.get("SLURM_JOB_CPUS_PER_NODE", ""))
    except ValueError:
        return None
    node = env.get("SLURM_NODEID", "").strip()
    if node.isdigit() and int(node) < len(counts):
        return counts[int(node)]
    return counts[0] if len(set(counts)) == 1 else None


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


def times_from_env(env: Mapping[str, str]) -> SlurmTimes | None:
    """The job's time limit and start where Slurm sets them (23.02+); None where it does not."""
    start, end = _int(env.get("SLURM_JOB_START_TIME")), _int(env.get("SLURM_JOB_END_TIME"))
    if start and end and end > start:
        return SlurmTimes(end - start, float(start))
    return None


def detect(env: Mapping[str, str] | None = None, *, slurm: SlurmCommands | None = None) -> JobContext:
    """The job this process belongs to.

    With ``slurm``, the time limit is asked for too (from the environment, else one squeue
    call, which raises :class:`~watcher.errors.SlurmError` when it fails); without, it is None.
    """
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
        time_limit_s=slurm.job_times(job_id, env).time_limit_s if slurm is not None else None,
        submit_dir=env.get("SLURM_SUBMIT_DIR"),
        job_name=_job_name(env),
    )


def _job_name(env: Mapping[str, str]) -> str | None:
    name = env.get("SLURM_JOB_NAME")
    return None if not name or name == "turingwatch" else name


def local_job_label(now: float | None = None) -> str:
    """The label of a run outside Slurm, used in the default output directory name."""
    return "local-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def process_user(job_id: int | None = None, env: Mapping[str, str] | None = None) -> str:
    """The user this process runs as, named from its uid (never ``$USER`` or
    ``SLURM_JOB_USER``, which anyone can set): whose samples a watch session records.

    In the job ``job_id`` (the one ``env`` is of), ``SLURM_JOB_UID`` names the job's owner:
    root watching it (an admin's ``attach``) records that owner; any other process records
    itself, with a warning, since its spools are its own files and the site's ingest checks a
    spool's user against the owner of its file.
    """
    env = os.environ if env is None else env
    uid = os.getuid()
    owner = _int(env.get("SLURM_JOB_UID"))
    this_job = job_id is not None and _int(env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")) == job_id
    if this_job and owner is not None and owner != uid:
        if uid == 0:
            return user_name(owner)
        log.warning(
            "job %s belongs to uid %d, and this watcher runs as %s: its samples are recorded as %s's",
            job_id, owner, user_name(uid), user_name(uid))
    return user_name(uid)


def user_name(uid: int) -> str:
    """The name of a uid, else the uid as text (an account the passwd database does not know)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
