"""Where the job's processes are, for the sampler (see ``sampler.ProcessSource``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from watcher.sampling import procfs
from watcher.sampling.sampler import StepProcesses

LOCAL_STEP = "local"


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
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

    def steps(self) -> Mapping[str, StepProcesses]:
        pids = [self.root, *procfs.descendants(self.root, self.proc_root)]
        return {
            LOCAL_STEP: StepProcesses(
                pids, children_only={self.root}, cpus_available=self.cpus, cpus_source="affinity"
            )
        }


class SlurmSource:
    """Inside a Slurm job: every process of the job on this node, by step.

    The discovery (job cgroups v2/v1, slurmstepd trees, environ, scontrol listpids) lives in
    ``slurm_steps``; this adapter adds the CPUs per step and marks the processes whose own
    work is not the job's: the watcher itself and each step's slurmstepd, which reaps the
    step's tasks and so keeps their CPU time after they exit.
    """

    def __init__(
        self,
        job_id: int,
        cpus_on_node: int | None,
        exclude_pids: set[int] | None = None,
        proc_root: str = "/proc",
        cgroup_root: str = "/sys/fs/cgroup",
    ) -> None:
        self.job_id = job_id
        self.cpus_on_node = cpus_on_node
        self.self_pid = os.getpid()
        self.exclude = exclude_pids or set()
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.fallback_cpus = affinity_cpus()
        self.method: str | None = None

    def steps(self) -> Mapping[str, StepProcesses]:
        from watcher.sampling.slurm_steps import find_job_processes

        found = find_job_processes(
            self.job_id, proc_root=self.proc_root, cgroup_root=self.cgroup_root
        )
        self.method = found.method
        stepd = set(getattr(found, "stepd_pids", {}) .keys()) if isinstance(
            getattr(found, "stepd_pids", None), dict
        ) else set(getattr(found, "stepd_pids", ()) or ())
        result: dict[str, StepProcesses] = {}
        for step, pids in found.pids_by_step.items():
            members = [p for p in pids if p not in self.exclude]
            step_stepd = [p for p in _stepd_for(found, step)]
            members += [p for p in step_stepd if p not in members]
            children_only = ({self.self_pid} | stepd) & set(members)
            if not set(members) - children_only - {self.self_pid} and self.self_pid in members:
                continue  # a step holding nothing but this watcher (attach's own step)
            cpus, source = _step_cpus(found, step, self.cpus_on_node, self.fallback_cpus)
            result[step] = StepProcesses(members, children_only, cpus, source)
        return result


def _stepd_for(found: object, step: str) -> list[int]:
    stepd = getattr(found, "stepd_pids", None)
    if isinstance(stepd, dict):
        return [pid for pid, s in stepd.items() if s == step]
    return []


def _step_cpus(
    found: object, step: str, cpus_on_node: int | None, fallback: int
) -> tuple[int, str]:
    cpusets = getattr(found, "cpus_by_step", None) or {}
    if cpusets.get(step):
        return cpusets[step], "cpuset"
    if cpus_on_node:
        return cpus_on_node, "slurm"
    return fallback, "affinity"
