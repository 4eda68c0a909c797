"""Which processes on this node belong to a Slurm job, by step, and the CPUs each step has.

Sites run Slurm in different ways, so several strategies are tried, most reliable first
(docs/process-discovery.md explains each):

1. ``cgroup-v2`` / ``cgroup-v1``: the job's step cgroups (proctrack/cgroup, task/cgroup).
2. ``stepd-tree``: the ``slurmstepd: [<job>.<step>]`` processes and their descendants
   (proctrack/linuxproc, no cgroups); plus ``environ``: processes that left the tree
   (daemonised, re-parented to init) but still carry ``SLURM_JOB_ID=<job>`` in their
   environment.
3. ``scontrol``: ``scontrol listpids <job>``, asking the step daemons themselves.

Step names are Slurm's own spelling, as strings: ``batch``, ``extern``, ``interactive``,
``0``, ``1``, ... A heterogeneous job's step component is ``<step>+<component>`` (``0+1``),
exactly as slurmstepd's title and the v2 cgroup ``step_0+1`` spell it. slurmstepd itself is
never one of the job's processes; its children are.

Keep one :class:`JobProcessFinder` for the life of a sampling loop: it remembers what does
not change between rounds (the job's cgroup directories, step cpusets, each process's
slurmstepd title and environment verdict). :func:`find_job_processes` is the one-shot form.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from watcher.sampling.cgroups import (
    CGROUP_ROOT,
    PROC_ROOT,
    STEPD_COMM,
    CgroupJobLayout,
    read_proc_cgroup,
    slurm_step_from_cgroup,
)
from watcher.sampling.procfs import ProcFiles, stat_fields
from watcher.sampling.sources import affinity_cpus
from watcher.slurm.call import SlurmCommandError
from watcher.slurm.commands import SlurmCommands
from watcher.slurm.env import job_step_from_env, parse_environ, slurm_cpus_on_node

log = logging.getLogger(__name__)

# The title slurmstepd gives itself, alone in its cmdline (the rest is NUL padding).
_STEPD_TITLE = re.compile(r"slurmstepd: \[(\d+)\.([0-9A-Za-z+]+)\]")

METHODS = ("cgroup-v2", "cgroup-v1", "stepd-tree", "environ", "scontrol")


@dataclass(slots=True)
class StepMap:
    """One round's answer: the job's processes on this node by step, and how they were found."""

    job_id: int | None
    pids: dict[str, list[int]] = field(default_factory=dict)   # step -> sorted pids
    methods: dict[str, list[str]] = field(default_factory=dict)  # step -> METHODS that found it
    cpus: dict[str, int] = field(default_factory=dict)         # step -> CPUs in its cpuset
    # step -> its slurmstepd pids: not the job's, but they reap the step's exited processes,
    # so their children's CPU time is the step's. A step may be here with no pids left (its
    # tasks ended, its stepd lingers). Unknown with the scontrol strategy.
    stepds: dict[str, list[int]] = field(default_factory=dict)
    # pid -> raw /proc/<pid>/stat, when the process table was read this round (the sampler
    # parses these bytes rather than reading the files again).
    stats: dict[int, bytes] = field(default_factory=dict)

    @property
    def method(self) -> str | None:
        """The main strategy that found the job (the first of METHODS in use); None if nothing."""
        used = {m for ms in self.methods.values() for m in ms}
        return next((m for m in METHODS if m in used), None)

    def all_pids(self) -> list[int]:
        return sorted(pid for pids in self.pids.values() for pid in pids)

    def step_of(self) -> dict[int, str]:
        """pid -> step, for attributing per-process readings (GPU processes, for instance)."""
        return {pid: step for step, pids in self.pids.items() for pid in pids}

    def drop(self, pids: frozenset[int]) -> None:
        for step in list(self.pids):
            self.pids[step] = [p for p in self.pids[step] if p not in pids]
            if not self.pids[step]:
                del self.pids[step], self.methods[step]

    def add(self, step: str, pids: Iterable[int], method: str) -> None:
        new = set(pids) - set(self.pids.get(step, ()))
        if not new:
            return
        self.pids[step] = sorted(new.union(self.pids.get(step, ())))
        found_by = self.methods.setdefault(step, [])
        if method not in found_by:
            found_by.append(method)


@dataclass(slots=True)
class ProcEntry:
    """What ``/proc/<pid>/stat`` says about one process that the tree walk needs."""

    ppid: int
    comm: str
    start: int  # start time in clock ticks after boot: with the pid, names one process


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def process_table(stats: Mapping[int, bytes]) -> dict[int, ProcEntry]:
    """pid -> (ppid, comm, start) from raw ``/proc/<pid>/stat`` contents; unreadable ones skipped."""
    table: dict[int, ProcEntry] = {}
    for pid, raw in stats.items():
        fields = stat_fields(raw)
        if fields is not None:
            table[pid] = ProcEntry(ppid=fields[1], comm=fields[0], start=fields[11])
    return table


def _descendants(root: int, children: dict[int, list[int]]) -> set[int]:
    found: set[int] = set()
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid not in found:  # a pid read twice mid-fork cannot loop us
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def parse_stepd_title(cmdline: bytes) -> tuple[int, str] | None:
    """``(job, step)`` from a slurmstepd's ``/proc/<pid>/cmdline``; None for anything else."""
    title = cmdline.split(b"\0", 1)[0].decode(errors="replace").rstrip()
    m = _STEPD_TITLE.fullmatch(title)
    return (int(m.group(1)), m.group(2)) if m else None


def calling_job_id(env: Mapping[str, str] | None = None, proc_root: str = PROC_ROOT) -> int | None:
    """The job this process runs in: ``SLURM_JOB_ID``, else our own cgroup path."""
    env = os.environ if env is None else env
    found = job_step_from_env(env)
    if found:
        return found[0]
    paths = read_proc_cgroup("self", proc_root)
    found = slurm_step_from_cgroup(paths) if paths else None
    return found[0] if found else None


_UNREAD = object()


@dataclass(slots=True)
class ProcessTable:
    """One read of the node's process table, shared by every job's finder in a round.

    ``stepd_trees``: job -> step -> (its task pids, its slurmstepd pids), for every job whose
    slurmstepd is on the node; ``attributed``: every pid below some slurmstepd (and the
    daemons), which no other job can claim through its environment.
    """

    stats: dict[int, bytes]
    table: dict[int, ProcEntry]
    stepd_trees: dict[int, dict[str, tuple[set[int], set[int]]]]
    attributed: set[int]
    reader: ProcessTableReader


class ProcessTableReader:
    """Reads the process table once per round and remembers what does not change between
    rounds: each process's slurmstepd title, its owner and what its environment says."""

    def __init__(self, proc_root: str = PROC_ROOT, files: ProcFiles | None = None) -> None:
        self.proc_root = proc_root
        self.files = files if files is not None else ProcFiles(proc_root)  # every stat, held open
        # (pid, start) -> what we learnt reading it once.
        self._titles: dict[tuple[int, int], tuple[int, str] | None] = {}
        self._environ: dict[tuple[int, int], list] = {}   # [owner uid, (job, step) | None | _UNREAD]

    def read(self) -> ProcessTable:
        stats = self.files.scan_stats()
        table = process_table(stats)
        titles = {pid: self._stepd_title(pid, proc) for pid, proc in table.items()
                  if proc.comm == STEPD_COMM}
        children: dict[int, list[int]] = {}
        for pid, proc in table.items():
            children.setdefault(proc.ppid, []).append(pid)
        # Whatever hangs below a slurmstepd, of any job, needs no look at its environment.
        attributed: set[int] = set(titles)
        trees: dict[int, dict[str, tuple[set[int], set[int]]]] = {}
        for pid, title in titles.items():
            # Start at the top stepd of each step; its forked helpers carry the same title.
            if title is None or titles.get(table[pid].ppid) == title:
                continue
            tree = _descendants(pid, children)
            attributed |= tree
            tasks, daemons = trees.setdefault(title[0], {}).setdefault(title[1], (set(), set()))
            tasks.update(p for p in tree if p not in titles)  # slurmstepd is never the job's
            daemons.update({pid, *(p for p in tree if p in titles)})
        self._forget_gone(table)
        return ProcessTable(stats, table, trees, attributed, self)

    def _stepd_title(self, pid: int, proc: ProcEntry) -> tuple[int, str] | None:
        key = (pid, proc.start)
        if key not in self._titles:
            data = _read_bytes(f"{self.proc_root}/{pid}/cmdline")
            self._titles[key] = parse_stepd_title(data) if data else None
        return self._titles[key]

    def owner(self, pid: int) -> int | None:
        """The process's real uid (``Uid:`` in its status); None when it is gone."""
        data = _read_bytes(f"{self.proc_root}/{pid}/status") or b""
        for line in data.splitlines():
            if line.startswith(b"Uid:"):
                return int(line.split()[1])
        return None

    def environ_job(self, pid: int, start: int, uid: int) -> tuple[int, str] | None:
        """``(job, step)`` the process's environment names, read only if it is ``uid``'s."""
        key = (pid, start)
        hit = self._environ.get(key)
        if hit is None:
            hit = self._environ[key] = [self.owner(pid), _UNREAD]
        if hit[0] != uid:
            return None
        if hit[1] is _UNREAD:
            data = _read_bytes(f"{self.proc_root}/{pid}/environ")
            hit[1] = job_step_from_env(parse_environ(data)) if data else None
        return hit[1]

    def _forget_gone(self, table: dict[int, ProcEntry]) -> None:
        for cache in (self._titles, self._environ):
            for key in [k for k in cache if k[0] not in table or table[k[0]].start != k[1]]:
                del cache[key]


class JobProcessFinder:
    """Finds one job's processes each sample round, remembering what does not change."""

    def __init__(
        self,
        job_id: int | None,
        proc_root: str = PROC_ROOT,
        cgroup_root: str = CGROUP_ROOT,
        slurm: SlurmCommands | None = None,
        uid: int | None = None,
        env: Mapping[str, str] | None = None,
        ignore_pids: Iterable[int] = (),
        listpids: bool = True,
    ):
        """``slurm``: the configured commands (``scontrol listpids``, the last strategy);
        default: ``[slurm]``'s defaults. ``ignore_pids``: processes never reported (the
        watcher's own pid when it runs inside the job); their children still are. ``uid``: the
        job's user, else learnt from its tasks. ``listpids=False`` leaves scontrol out (the
        node scraper, which would otherwise ask for every job that has just ended).
        """
        self.job_id = job_id if job_id is not None else calling_job_id(env, proc_root)
        self.ignore_pids = frozenset(ignore_pids)
        self.proc_root = proc_root
        self.slurm = slurm if slurm is not None else SlurmCommands.from_config()
        # Whose processes may carry the job in their environment; learnt from the job's tasks.
        self.uid = uid
        self.layout = (CgroupJobLayout(self.job_id, cgroup_root, proc_root)
                       if self.job_id is not None else None)
        self._scontrol_works = listpids  # False once scontrol proved missing or unrunnable
        self._scontrol_warned = False    # a failing scontrol is logged once, then at debug
        self._reader: ProcessTableReader | None = None   # made when first needed

    def find(self, table: ProcessTable | None = None) -> StepMap:
        """The job's processes on this node right now (empty when it has none here).

        ``table``: this round's process table, when the caller read it for several jobs;
        else it is read here if the cgroups do not say.
        """
        steps = StepMap(self.job_id)
        if self.job_id is None:
            return steps
        layout = self.layout
        in_cgroups = layout is not None and layout.refresh()
        if in_cgroups:
            for step, pids in layout.pids_by_step().items():
                steps.add(step, pids, layout.method)
            steps.stepds = dict(layout.stepds)
        if not steps.pids:
            self._find_in_process_table(steps, table)
        if not steps.pids:
            self._ask_scontrol(steps)
        if self.ignore_pids:
            steps.drop(self.ignore_pids)
        if in_cgroups:
            # task/cgroup may give steps a cpuset even where processes were found another way.
            for step in steps.pids:
                cpus = layout.cpus_available(step)
                if cpus is not None:
                    steps.cpus[step] = cpus
        return steps

    # -- stepd-tree and environ -------------------------------------------------------------
    def _find_in_process_table(self, steps: StepMap, table: ProcessTable | None) -> None:
        if table is None:
            if self._reader is None:
                self._reader = ProcessTableReader(self.proc_root)
            table = self._reader.read()
        steps.stats = table.stats
        for step, (tasks, daemons) in table.stepd_trees.get(self.job_id, {}).items():
            steps.add(step, tasks, "stepd-tree")
            steps.stepds[step] = sorted(daemons.union(steps.stepds.get(step, ())))
        self._learn_uid(steps.all_pids(), table.reader)
        self._find_by_environ(steps, table)

    def _learn_uid(self, pids: list[int], reader: ProcessTableReader) -> None:
        if self.uid is not None:
            return
        for pid in pids:
            uid = reader.owner(pid)
            if uid is not None:
                self.uid = uid
                return
        if os.getuid() != 0:
            # An unprivileged watcher can only read its own user's environments anyway.
            self.uid = os.getuid()

    def _find_by_environ(self, steps: StepMap, table: ProcessTable) -> None:
        """Processes of the job's user that left the stepd tree but kept SLURM_JOB_ID."""
        if self.uid is None:
            return
        attributed, environ_job = table.attributed, table.reader.environ_job
        for pid, proc in table.table.items():
            if pid in attributed:
                continue
            found = environ_job(pid, proc.start, self.uid)
            if found is not None and found[0] == self.job_id:
                steps.add(found[1], [pid], "environ")

    # -- scontrol listpids -------------------------------------------------------------------
    def _ask_scontrol(self, steps: StepMap) -> None:
        if not self._scontrol_works:
            return
        try:
            listed = self.slurm.listpids(self.job_id)
        except SlurmCommandError as exc:  # the sampler carries on without this strategy
            if exc.reason in ("not-found", "cannot-run"):
                log.info("%s; no scontrol listpids fallback", exc)
                self._scontrol_works = False
            elif not self._scontrol_warned:
                log.warning("%s; asking again in later rounds", exc)
                self._scontrol_warned = True
            else:
                log.debug("%s", exc)
            return
        for step, pids in listed.items():
            pids = [p for p in pids if not self._is_stepd(p)]
            steps.add(step, pids, "scontrol")

    def _is_stepd(self, pid: int) -> bool:
        comm = _read_bytes(f"{self.proc_root}/{pid}/comm")
        return comm is not None and comm.strip() == STEPD_COMM.encode()


def find_job_processes(
    job_id: int | None,
    proc_root: str = PROC_ROOT,
    cgroup_root: str = CGROUP_ROOT,
    slurm: SlurmCommands | None = None,
    env: Mapping[str, str] | None = None,
) -> StepMap:
    """The job's processes on this node by step; ``job_id=None``: the calling process's job."""
    return JobProcessFinder(job_id, proc_root, cgroup_root, slurm, env=env).find()


def step_cpus(
    steps: StepMap, step: str, job_env: Mapping[str, str] | None = None
) -> tuple[int | None, str | None]:
    """CPUs available to one step, and where that number comes from.

    The step's cpuset (``cpuset``) when Slurm made one; else, given the job's environment
    (``os.environ`` when the watcher runs inside the job), Slurm's CPU count for this node
    (``slurm-env``), else our own affinity mask (``affinity``). ``(None, None)`` otherwise.
    """
    if step in steps.cpus:
        return steps.cpus[step], "cpuset"
    if job_env is None:
        return None, None
    cpus = slurm_cpus_on_node(job_env)
    if cpus is not None:
        return cpus, "slurm-env"
    return affinity_cpus(), "affinity"
