"""Where the job's processes are, for the sampler (see ``sampler.ProcessSource``)."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from watcher.sampling import procfs
from watcher.sampling.sampler import StepProcesses

if TYPE_CHECKING:
    from watcher.sampling.slurm_steps import JobProcessFinder, StepMap
    from watcher.slurm.commands import SlurmCommands

LOCAL_STEP = "local"


def affinity_cpus() -> int:
    """CPUs this process may run on (its affinity mask), which Slurm's task binding narrows."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # AttributeError: a platform without sched_getaffinity
        return os.cpu_count() or 1


class TreeSource:
    """Outside Slurm: the watcher's own process tree, as one step named ``local``.

    The watcher is a child subreaper, so children that daemonize are re-parented to it and
    stay in the tree. The watcher itself counts only for the children it has reaped.
    """

    def __init__(self, root: int | None = None, proc_root: str = "/proc") -> None:
        self.root = os.getpid() if root is None else root
        self.proc_root = proc_root
        self.cpus = affinity_cpus()
        self.files = procfs.ProcFiles(proc_root)

    def steps(self) -> Mapping[str, StepProcesses]:
        # One pass over /proc finds the tree; the sampler parses the same bytes, not re-reads.
        stats = self.files.scan_stats()
        pids = [self.root, *procfs.descendants(self.root, stats=stats)]
        return {
            LOCAL_STEP: StepProcesses(
                pids,
                children_only={self.root},
                cpus_available=self.cpus,
                cpus_source="affinity",
                stats=stats,
            )
        }


class SlurmSource:
    """Inside a Slurm job: every process of the job on this node, by step.

    The discovery (job cgroups v2/v1, slurmstepd trees, environ, scontrol listpids) lives in
    ``slurm_steps``; this adapter adds the CPUs per step and marks the processes whose own
    work is not the job's: the watcher itself and each step's slurmstepd, which reap the
    step's processes and so keep their CPU time after they exit.
    """

    def __init__(
        self,
        job_id: int,
        job_env: Mapping[str, str] | None = None,
        proc_root: str = "/proc",
        cgroup_root: str = "/sys/fs/cgroup",
        slurm: SlurmCommands | None = None,
    ) -> None:
        """``slurm``: the configured Slurm commands (``config.slurm``), for scontrol listpids."""
        from watcher.sampling.slurm_steps import JobProcessFinder

        self.self_pid = os.getpid()
        # The job's environment gives Slurm's CPU count when the step has no cpuset; only
        # when we run inside the job (attach from outside must not take our own).
        self.job_env = job_env
        self.finder = JobProcessFinder(job_id, proc_root, cgroup_root, slurm)
        self.fallback_cpus = affinity_cpus()
        self.method: str | None = None

    def steps(self) -> Mapping[str, StepProcesses]:
        found = self.finder.find()
        self.method = found.method
        return job_steps(found, self.finder, self.job_env, {self.self_pid})


def job_steps(
    found: StepMap,
    finder: JobProcessFinder,
    job_env: Mapping[str, str] | None,
    watchers: Collection[int],
) -> dict[str, StepProcesses]:
    """The sampler's view of one job's processes found this round (``finder.find()``):
    the CPUs per step, its memory cgroup, and the processes whose own work is not the job's
    (``watchers``, each step's slurmstepd)."""
    from watcher.sampling.slurm_steps import step_cpus

    # The job's memory cgroups, where Slurm made them: memory as the kernel charges it.
    layout = finder.layout if finder.layout is not None and finder.layout.found else None
    stepds = found.stepds
    result: dict[str, StepProcesses] = {}
    # A step whose tasks have all exited still has its slurmstepd for a moment, holding
    # their CPU time: one more sample of it makes the step's totals exact.
    for step in sorted(found.pids.keys() | stepds.keys()):
        pids = found.pids.get(step, [])
        if pids and all(pid in watchers for pid in pids):
            continue  # a step holding nothing but this watcher (attach's own step)
        daemons = stepds.get(step, [])
        cpus, source = step_cpus(found, step, job_env)
        result[step] = StepProcesses(
            [*pids, *daemons], {*watchers, *daemons}, cpus, source, stats=found.stats or None,
            memory_cgroup=layout.memory_cgroup(step) if layout is not None else None,
        )
    return result
