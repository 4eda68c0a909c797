"""Where Slurm puts a job in the cgroup tree, and what that tells us.

Slurm's cgroup plugins give every job step a cgroup of its own (paths from Slurm's
``src/plugins/cgroup/v1`` and ``v2`` sources; docs/process-discovery.md has the full layouts):

* cgroup v2: ``<root>/system.slice/slurmstepd.scope/job_<J>/step_<S>/user/task_<N>`` for the
  step's tasks and ``.../step_<S>/slurm`` for its slurmstepd (``<node>_slurmstepd.scope``
  when a node runs several slurmd);
* cgroup v1: ``<root>/<controller>/slurm/uid_<U>/job_<J>/step_<S>[/task_<N>]`` in each of
  freezer, cpuset, memory, cpuacct and devices (``slurm_<node>`` with several slurmd).

``<S>`` is Slurm's step name: ``batch``, ``extern``, ``interactive``, a number, or
``<number>+<het component>`` for a heterogeneous step. Every function takes the /proc and
cgroup roots as parameters so that tests can point them at recorded trees.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator

from watcher.sampling.memory import MemoryCgroup

PROC_ROOT = "/proc"
CGROUP_ROOT = "/sys/fs/cgroup"

# The v1 controllers Slurm creates job cgroups in, most complete first: proctrack/cgroup
# puts every process of a step in the freezer cgroup, task/cgroup only the tasks in the rest.
V1_CONTROLLERS = ("freezer", "cpuacct", "memory", "cpuset", "devices")

# ".../job_<J>/step_<S>" anywhere in a cgroup path, for both versions.
_STEP_IN_PATH = re.compile(r"(?:^|/)job_(\d+)/step_([^/]+)(?:/|$)")
_JOB_IN_PATH = re.compile(r"(?:^|/)job_(\d+)(?:/|$)")
# The name slurmstepd's process has (its comm; the proctitle is "slurmstepd: [J.S]").
STEPD_COMM = "slurmstepd"


def parse_cpu_list(text: str) -> int:
    """Count the CPUs in a kernel CPU list such as ``"0-3,8,10-11\\n"`` (7); ``""`` is 0."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        count += int(last) - int(first) + 1 if last else 1
    return count


def read_proc_cgroup(pid: int | str, proc_root: str = PROC_ROOT) -> dict[str, str] | None:
    """A process's cgroup paths from ``/proc/<pid>/cgroup``, by controller.

    v1 lines (``4:memory:/slurm/...``) give one key per controller, so ``cpu,cpuacct`` gives
    ``cpu`` and ``cpuacct``; named hierarchies keep their ``name=...`` key. The v2 line
    (``0::/system.slice/...``) has the key ``""``. None when the process is gone.
    """
    try:
        with open(f"{proc_root}/{pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return None
    paths: dict[str, str] = {}
    for line in text.splitlines():
        _hierarchy, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not (sep and sep2):
            continue
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def slurm_step_from_cgroup(paths: dict[str, str]) -> tuple[int, str] | None:
    """The Slurm ``(job id, step name)`` a process's cgroup paths place it in, or None.

    The v2 path (key ``""``) wins, then the v1 controllers Slurm uses, then any other.
    """
    ordered = ["", *V1_CONTROLLERS, *sorted(paths)]
    for key in ordered:
        path = paths.get(key)
        if path and (m := _STEP_IN_PATH.search(path)):
            return int(m.group(1)), m.group(2)
    return None


def cgroup_version(cgroup_root: str = CGROUP_ROOT) -> str:
    """How cgroups are mounted under ``cgroup_root``: ``v2``, ``v1``, ``hybrid`` or ``none``.

    ``hybrid`` is v1 controllers plus a v2 tree at ``<root>/unified`` (systemd's hybrid mode);
    Slurm runs its cgroup/v1 plugin there, as cgroup/v2 refuses hybrid systems.
    """
    if os.path.exists(f"{cgroup_root}/cgroup.controllers"):
        return "v2"
    v1 = any(_is_v1_hierarchy(f"{cgroup_root}/{c}") for c in (*V1_CONTROLLERS, "cpu", "pids"))
    if v1:
        return "hybrid" if os.path.exists(f"{cgroup_root}/unified/cgroup.controllers") else "v1"
    return "none"


def _is_v1_hierarchy(path: str) -> bool:
    return os.path.exists(f"{path}/cgroup.procs") or os.path.exists(f"{path}/tasks")


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _read_pids(directory: str, proc_root: str) -> list[int]:
    """The processes directly in one cgroup; [] when it is gone.

    ``cgroup.procs`` lists processes. A v1 hierarchy without it (kernels before 2.6.24)
    only has ``tasks``, which lists threads: keep each thread's process (its Tgid) once.
    """
    text = _read_text(f"{directory}/cgroup.procs")
    if text is not None:
        return [int(tok) for tok in text.split()]
    text = _read_text(f"{directory}/tasks")
    if text is None:
        return []
    processes: set[int] = set()
    for tid in text.split():
        tgid = _thread_group(tid, proc_root)
        if tgid is not None:
            processes.add(tgid)
    return sorted(processes)


def _thread_group(tid: str, proc_root: str) -> int | None:
    status = _read_text(f"{proc_root}/{tid}/status") or ""
    for line in status.splitlines():
        if line.startswith("Tgid:"):
            return int(line.split()[1])
    return None  # the thread is gone


def _subdirs(directory: str) -> Iterator[os.DirEntry]:
    try:
        with os.scandir(directory) as it:
            yield from (e for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return


class CgroupJobLayout:
    """One job's cgroups on this node: found once, then listed every sample round.

    Finding the job's directory is the costly part (globbing the tree, or reading our own
    /proc/self/cgroup when we run inside the job), so it is done at construction and
    retried by :meth:`refresh` while not found. Steps come and go during a job, so the
    step directories under the job's are listed afresh on each call, which costs one
    ``scandir`` per cgroup plus one read per ``cgroup.procs``.

    slurmstepd processes are left out: on v2 they live in ``step_<S>/slurm``, which is not
    read; on v1 they share the step cgroup with the tasks and are recognised by name.
    """

    def __init__(self, job_id: int, cgroup_root: str = CGROUP_ROOT, proc_root: str = PROC_ROOT):
        self.job_id = job_id
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self.version = cgroup_version(cgroup_root)
        # v2: one job directory. v1: the job directory in each controller that has one.
        self.job_dirs: dict[str, str] = {}
        self._cpus: dict[str, int] = {}
        self._memory: dict[str, MemoryCgroup] = {}
        self._stepd_verdicts: dict[int, bool] = {}
        # Step -> its slurmstepd pids, as of the last pids_by_step() call.
        self.stepds: dict[str, list[int]] = {}
        self.refresh()

    @property
    def found(self) -> bool:
        return bool(self.job_dirs)

    @property
    def method(self) -> str:
        """``cgroup-v2`` or ``cgroup-v1``: how this layout lists processes."""
        return "cgroup-v2" if self.version == "v2" else "cgroup-v1"

    def refresh(self) -> bool:
        """Look for the job's cgroups again if they were not found yet; returns :attr:`found`."""
        if self.found or self.version == "none":
            return self.found
        if self.version == "v2":
            job_dir = self._find_v2_job_dir()
            if job_dir:
                self.job_dirs[""] = job_dir
        else:
            for controller in V1_CONTROLLERS:
                job_dir = self._find_v1_job_dir(controller)
                if job_dir:
                    self.job_dirs[controller] = job_dir
        return self.found

    def _own_job_path(self, key: str) -> str | None:
        """Our own cgroup path cut after ``job_<J>``, when this process runs inside the job.

        This finds the job wherever the site's tree puts it (containers, several slurmd,
        a non-default scope) without guessing.
        """
        paths = read_proc_cgroup("self", self.proc_root) or {}
        path = paths.get(key, "")
        m = _JOB_IN_PATH.search(path)
        if m and int(m.group(1)) == self.job_id:
            return path[: m.end(1)]
        return None

    def _find_v2_job_dir(self) -> str | None:
        root = self.cgroup_root
        own = self._own_job_path("")
        if own and os.path.isdir(root + own):
            return root + own
        # slurmstepd.scope, or <node>_slurmstepd.scope with several slurmd per host.
        for pattern in (f"system.slice/*slurmstepd.scope/job_{self.job_id}",
                        f"*/system.slice/*slurmstepd.scope/job_{self.job_id}"):
            hits = sorted(glob.glob(f"{root}/{pattern}"))
            if hits:
                return hits[0]
        return None

    def _find_v1_job_dir(self, controller: str) -> str | None:
        base = f"{self.cgroup_root}/{controller}"
        own = self._own_job_path(controller)
        if own and os.path.isdir(base + own):
            return base + own
        # "slurm", or "slurm_<node>" with several slurmd per host.
        hits = sorted(glob.glob(f"{base}/slurm*/uid_*/job_{self.job_id}"))
        return hits[0] if hits else None

    def step_dirs(self) -> dict[str, list[str]]:
        """Step name -> its directories (one on v2, one per controller on v1)."""
        steps: dict[str, list[str]] = {}
        for job_dir in self.job_dirs.values():
            for entry in _subdirs(job_dir):
                if entry.name.startswith("step_"):
                    steps.setdefault(entry.name[5:], []).append(entry.path)
        return steps

    def pids_by_step(self) -> dict[str, list[int]]:
        """Step name -> sorted pids of the job's processes in it, slurmstepd excluded."""
        self.stepds = {}
        if not self.found:
            return {}
        result: dict[str, list[int]] = {}
        listed: set[int] = set()
        for step, dirs in self.step_dirs().items():
            pids: set[int] = set()
            stepds: set[int] = set()
            for step_dir in dirs:
                pids.update(self._pids_below(step_dir))
                if self.version == "v2":
                    stepds.update(_read_pids(f"{step_dir}/slurm", self.proc_root))
            pids -= listed  # a process that moved between steps while we listed counts once
            listed |= pids
            if self.version != "v2":
                stepds = {pid for pid in pids if self._is_stepd(pid)}
                pids -= stepds
            if pids:
                result[step] = sorted(pids)
            if stepds:
                self.stepds[step] = sorted(stepds)
        self._forget_gone(listed)
        return result

    def _pids_below(self, step_dir: str) -> Iterator[int]:
        stack = [step_dir]
        while stack:
            directory = stack.pop()
            yield from _read_pids(directory, self.proc_root)
            for entry in _subdirs(directory):
                # v2 keeps the step's slurmstepd in step_<S>/slurm, apart from the tasks.
                if not (self.version == "v2" and directory == step_dir and entry.name == "slurm"):
                    stack.append(entry.path)

    def _is_stepd(self, pid: int) -> bool:
        verdict = self._stepd_verdicts.get(pid)
        if verdict is None:
            comm = _read_text(f"{self.proc_root}/{pid}/comm")
            verdict = comm is not None and comm.strip() == STEPD_COMM
            self._stepd_verdicts[pid] = verdict
        return verdict

    def _forget_gone(self, listed: set[int]) -> None:
        # A pid's verdict holds while it stays listed; a reused pid is judged afresh.
        for pid in [p for p in self._stepd_verdicts if p not in listed]:
            del self._stepd_verdicts[pid]

    def cpus_available(self, step: str) -> int | None:
        """CPUs in the step's cpuset, else in the job's; None without a cpuset.

        Kept once read: Slurm sets a step's cpuset when it starts and leaves it alone.
        """
        cpus = self._cpus.get(step)
        if cpus is None:
            cpus = self._read_cpus(step)
            if cpus is not None:
                self._cpus[step] = cpus
        return cpus

    def _read_cpus(self, step: str) -> int | None:
        if self.version == "v2":
            job_dir, files = self.job_dirs.get(""), ("cpuset.cpus.effective",)
        else:
            # cpuset.effective_cpus came with kernel 4.x; older kernels only have cpuset.cpus.
            job_dir, files = self.job_dirs.get("cpuset"), ("cpuset.effective_cpus", "cpuset.cpus")
        if job_dir is None:
            return None
        for directory in (f"{job_dir}/step_{step}", job_dir):
            for name in files:
                text = _read_text(f"{directory}/{name}")
                if text is not None and text.strip():
                    return parse_cpu_list(text)
        return None

    def memory_cgroup(self, step: str) -> MemoryCgroup | None:
        """The step's memory cgroup, None when it has none (no memory controller there).

        v2: ``step_<S>/user``, the tasks without their slurmstepd (``step_<S>/slurm``), when
        the memory controller reaches that far, else ``step_<S>``; v1: ``memory/.../step_<S>``,
        which holds the tasks only. Kept once found: a step's cgroup lives as long as the step.
        """
        found = self._memory.get(step)
        if found is not None:
            return found
        if self.version == "v2":
            job_dir, version, probe = self.job_dirs.get(""), "v2", "memory.current"
            tails = ("/user", "")
        else:
            job_dir, version, probe = self.job_dirs.get("memory"), "v1", "memory.usage_in_bytes"
            tails = ("",)
        if job_dir is None:
            return None
        for tail in tails:
            directory = f"{job_dir}/step_{step}{tail}"
            if os.path.exists(f"{directory}/{probe}"):
                found = self._memory[step] = MemoryCgroup(directory, version)
                return found
        return None
