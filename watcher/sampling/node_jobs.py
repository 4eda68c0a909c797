"""Every Slurm job on this node, in one pass per round: the node scraper's discovery.

One read of the process table serves every job (``slurm_steps.ProcessTable``): it names the
jobs that have a ``slurmstepd`` here and, without cgroups, their stepd trees; each job's
:class:`~watcher.slurm_steps.JobProcessFinder` then finds its processes by step as it does for
one job (cgroup v2, cgroup v1, stepd tree, environment), never reading the table again. Jobs
whose cgroup directory exists but whose stepd is not seen (a hidden /proc) are found through
the cgroup tree too. A job is on the node while it has a process or a slurmstepd here.

An unprivileged scraper keeps only its own user's jobs (``uid``): the kernel's word on who
owns the job's processes, never the job's environment.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from watcher.records import GpuReading
from watcher.sampling.cgroups import CGROUP_ROOT, PROC_ROOT, V1_CONTROLLERS, cgroup_version
from watcher.sampling.procfs import ProcFiles
from watcher.sampling.sampler import GpuSource, StepProcesses
from watcher.sampling.slurm_steps import JobProcessFinder, ProcessTable, ProcessTableReader, StepMap
from watcher.sampling.sources import job_steps
from watcher.slurm.env import job_step_from_env, parse_environ

_JOB_DIR = re.compile(r"job_(\d+)$")
# Steps whose processes carry the job's environment, best first (extern's sleep has little).
_ENV_STEPS = ("batch", "interactive", "0")


@dataclass(slots=True)
class NodeJob:
    """One job on this node this round."""

    job_id: int
    uid: int | None                     # its owner, from its processes
    found: StepMap                      # its processes by step
    steps: dict[str, StepProcesses]     # ... as the sampler takes them
    finder: JobProcessFinder

    def pids(self) -> list[int]:
        return self.found.all_pids()


class NodeJobs:
    """Finds every job on the node each round; keeps one finder per job while it lasts."""

    def __init__(
        self,
        proc_root: str = PROC_ROOT,
        cgroup_root: str = CGROUP_ROOT,
        *,
        uid: int | None = None,
        ignore_pids: Iterable[int] = (),
        files: ProcFiles | None = None,
    ) -> None:
        """``uid``: keep only this user's jobs (None: every job; what root sees).
        ``ignore_pids``: the scraper's own processes, never a job's."""
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.uid = uid
        self.ignore_pids = frozenset(ignore_pids)
        self.reader = ProcessTableReader(proc_root, files)
        self.version = cgroup_version(cgroup_root)
        self.finders: dict[int, JobProcessFinder] = {}
        self.table: ProcessTable | None = None    # this round's

    @property
    def files(self) -> ProcFiles:
        return self.reader.files

    def scan(self) -> dict[int, NodeJob]:
        """The jobs on this node now, by job id."""
        table = self.table = self.reader.read()
        ids = set(table.stepd_trees) | self._cgroup_job_ids()
        jobs: dict[int, NodeJob] = {}
        for job_id in sorted(ids):
            finder = self.finders.get(job_id)
            if finder is None:
                finder = JobProcessFinder(job_id, self.proc_root, self.cgroup_root,
                                          ignore_pids=self.ignore_pids, listpids=False)
            found = finder.find(table)
            if not found.pids and not found.stepds:
                continue   # its cgroup directory lingers, or its last step just ended
            found.stats = table.stats   # the sampler parses these bytes, never re-reads them
            if finder.uid is None:
                finder.uid = next((u for u in map(table.reader.owner, found.all_pids())
                                   if u is not None), None)
            if self.uid is not None and finder.uid != self.uid:
                continue
            self.finders[job_id] = finder
            steps = job_steps(found, finder, None, self.ignore_pids)
            jobs[job_id] = NodeJob(job_id, finder.uid, found, steps, finder)
        for gone in self.finders.keys() - jobs.keys():
            del self.finders[gone]
        return jobs

    def _cgroup_job_ids(self) -> set[int]:
        root = self.cgroup_root
        if self.version == "v2":
            patterns = [f"{root}/system.slice/*slurmstepd.scope/job_*",
                        f"{root}/*/system.slice/*slurmstepd.scope/job_*"]
        elif self.version in ("v1", "hybrid"):
            patterns = [f"{root}/{c}/slurm*/uid_*/job_*" for c in V1_CONTROLLERS[:1]]
        else:
            return set()
        ids: set[int] = set()
        for pattern in patterns:
            for path in glob.iglob(pattern):
                m = _JOB_DIR.search(path)
                if m:
                    ids.add(int(m.group(1)))
        return ids

    def job_environment(self, job: NodeJob) -> dict[str, str]:
        """The environment of one of the job's tasks (batch first); {} when none is readable."""
        order = [s for s in _ENV_STEPS if s in job.found.pids]
        order += sorted(s for s in job.found.pids if s not in order and s != "extern")
        for step in order:
            for pid in job.found.pids[step]:
                try:
                    with open(f"{self.proc_root}/{pid}/environ", "rb") as f:
                        env = parse_environ(f.read())
                except OSError:
                    continue
                found = job_step_from_env(env)
                if found is not None and found[0] == job.job_id:
                    return env
        return {}


class NodeGpus:
    """The node's GPUs read once per round, then given to each job as a :class:`GpuSource`
    that keeps the GPUs its processes run on, with only its own pids."""

    def __init__(self, gpu: GpuSource | None) -> None:
        self.gpu = gpu
        self.status = gpu.status if gpu is not None else "disabled"
        self.readings: list[GpuReading] = []

    def read(self, all_job_pids: Collection[int]) -> None:
        """One NVML pass for every job of this round."""
        self.readings = []
        if self.gpu is None:
            return
        try:
            self.readings = self.gpu.sample(all_job_pids)
        except Exception:  # the GPU sampler promises not to raise; the jobs matter more
            self.readings = []

    def for_job(self) -> GpuSource:
        return _JobGpus(self)

    def close(self) -> None:
        close = getattr(self.gpu, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # shutting NVML down must not stop the scraper's end
                pass


class _JobGpus:
    def __init__(self, node: NodeGpus) -> None:
        self.node = node
        self.status = node.status

    def sample(self, job_pids: Collection[int]) -> list[GpuReading]:
        job = set(job_pids)
        kept = []
        for r in self.node.readings:
            if not r.job_pids:
                continue   # nobody's job runs there, or NVML will not say whose
            mine = [p for p in r.job_pids if p in job]
            if mine:
                total = len(r.job_pids) + (r.other_pids or 0)
                kept.append(r._replace(job_pids=mine, other_pids=total - len(mine)))
        return kept


def node_uid_filter(service_users: Collection[str] = ()) -> int | None:
    """Whose jobs this scraper keeps: everyone's as root or as one of ``auth.service_users``
    (the distributor's scrape jobs, which run without root), else its own user's.

    Without root, what other users' processes keep to themselves (``io``, ``smaps_rollup``,
    ``environ``) is not read: their I/O and PSS are unknown, their CPU and RSS are not.
    """
    uid = os.getuid()
    if uid == 0:
        return None
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid
    return None if name in service_users else uid
