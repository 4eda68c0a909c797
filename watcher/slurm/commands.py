"""Slurm's commands as turingwatch uses them, each with its configured path and timeout.

:class:`SlurmCommands` is built once from ``[slurm]`` (:meth:`SlurmCommands.from_config`) and
handed to whoever needs Slurm: the importer (sacct, the cluster name), the sampler (``scontrol
listpids``, when a job's processes can be found no other way), the watch session (the job's
time limit and start, from squeue) and the distributor (squeue, sbatch, scancel). Each
operation runs through :func:`watcher.slurm.call.run_command` and raises
:class:`~watcher.slurm.call.SlurmCommandError` when Slurm cannot answer; callers on the job's
path (the sampler, the session) catch it and carry on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from watcher.config import SlurmSettings
from watcher.slurm.call import Completed, SlurmCommandError, last_lines, run_command
from watcher.slurm.env import SlurmTimes, parse_time_limit, times_from_env
from watcher.slurm.sacct import SACCT_ENV, SacctError

log = logging.getLogger(__name__)

# squeue's columns for a queue listing: id, state, requested nodes, allocated nodes, submit time,
# name last (a name may hold the separator; nothing after it can be misread).
_QUEUE_FORMAT = "%i|%T|%n|%N|%V|%j"

# The daemon a command's answer comes from, for the timeout hint; the rest ask slurmctld.
_DAEMONS = {"sacct": "slurmdbd"}


@dataclass(frozen=True)
class SlurmCommands:
    """The Slurm commands (as configured) and how long each may take."""

    sacct: str
    squeue: str
    scontrol: str
    sbatch: str
    salloc: str
    scancel: str
    timeout_s: float          # every command but sacct
    sacct_timeout_s: float    # one sacct call: one import window, which may be days of jobs

    @classmethod
    def from_config(cls, settings: SlurmSettings | None = None) -> SlurmCommands:
        """The commands of ``config.slurm``; without one, the defaults of ``[slurm]``."""
        s = settings if settings is not None else SlurmSettings()
        return cls(
            sacct=s.sacct,
            squeue=s.squeue,
            scontrol=s.scontrol,
            sbatch=s.sbatch,
            salloc=s.salloc,
            scancel=s.scancel,
            timeout_s=s.command_timeout_s,
            sacct_timeout_s=s.sacct_timeout_s,
        )

    def _run(
        self,
        setting: str,
        args: Sequence[str],
        *,
        what: str | None = None,
        daemon: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        error: type[SlurmCommandError] = SlurmCommandError,
    ) -> Completed:
        if setting == "sacct":
            timeout_s, limit = self.sacct_timeout_s, "sacct_timeout_s"
        else:
            timeout_s, limit = self.timeout_s, "command_timeout_s"
        daemon = daemon or _DAEMONS.get(setting, "slurmctld")
        return run_command(
            getattr(self, setting),
            args,
            setting=setting,
            timeout_s=timeout_s,
            what=what,
            hint=f"is {daemon} reachable? (the limit is slurm.{limit})",
            env=env,
            check=check,
            error=error,
        )

    # -- sacct ---------------------------------------------------------------------------
    def run_sacct(self, args: Sequence[str]) -> str:
        """sacct's output (header line first) for arguments from ``sacct.sacct_arguments``.

        Raises:
            SacctError: sacct is missing, timed out (``slurm.sacct_timeout_s``) or failed.
        """
        return self._run("sacct", args, env=SACCT_ENV, error=SacctError).stdout

    # -- squeue --------------------------------------------------------------------------
    def job_times(self, job_id: int, env: Mapping[str, str]) -> SlurmTimes:
        """The job's time limit and start: from ``env`` where Slurm sets them (23.02+), else
        one squeue call. Ask while the job runs: once it has ended, squeue may not know it.
        """
        from_env = times_from_env(env)
        if from_env is not None:
            return from_env
        out = self._run("squeue", ["-h", "-j", str(job_id), "-o", "%l|%S"]).stdout
        return parse_squeue_times(out.splitlines()[0]) if out.strip() else SlurmTimes(None, None)

    def jobs_times(self, job_ids: Iterable[int]) -> dict[int, SlurmTimes]:
        """Several jobs' time limits and starts in one squeue call (the node scraper's new
        jobs); a job squeue does not list is left out."""
        ids = ",".join(str(int(job_id)) for job_id in job_ids)
        if not ids:
            return {}
        out = self._run("squeue", ["-h", "-j", ids, "-o", "%A|%l|%S"], check=False).stdout
        return parse_squeue_jobs_times(out)

    def job_owner(self, job_id: int) -> str | None:
        """The user a job belongs to: squeue while slurmctld knows the job, else sacct's record
        (a job long finished); None when neither knows it.
        """
        done = self._run("squeue", ["-h", "-j", str(int(job_id)), "-o", "%u"], check=False)
        owner = parse_owner(done.stdout)
        if owner is None:
            out = self._run("sacct", ["-n", "-X", "-P", "-a", "-j", str(int(job_id)), "-o", "User"],
                            env=SACCT_ENV, error=SacctError).stdout
            owner = parse_owner(out)
        return owner

    def running_per_node(self) -> dict[str, list[str]]:
        """Node -> names of the jobs running on it (every user's), from one squeue call."""
        out = self._run(
            "squeue", ["-h", "-a", "-t", "RUNNING", "-o", "%N|%j"], what="squeue (running jobs)"
        ).stdout
        return parse_running_per_node(out)

    def queued_jobs(self, name: str, user: str) -> list[QueuedJob]:
        """The pending and running jobs of ``user`` named ``name`` (``squeue -u -n``)."""
        out = self._run(
            "squeue", ["-h", "-a", "-u", user, "-n", name, "-t", "PENDING,RUNNING,CONFIGURING",
                       "-o", _QUEUE_FORMAT],
            what="squeue (own jobs)",
        ).stdout
        return parse_queued(out)

    # -- scontrol ------------------------------------------------------------------------
    def listpids(self, job_id: int) -> dict[str, list[int]]:
        """Step -> pids of the job on this node, from ``scontrol listpids <job>``.

        A non-zero exit is no error: listpids exits 1 for a job with no step here, and still
        prints what it found for the steps that answered.
        """
        done = self._run(
            "scontrol", ["listpids", str(job_id)],
            what="scontrol listpids", daemon="this node's slurmstepd", check=False,
        )  # fmt: skip
        if done.returncode != 0:
            log.debug("scontrol listpids %s (exit %d): %s",
                      job_id, done.returncode, last_lines(done.stderr))  # fmt: skip
        return parse_listpids(done.stdout, job_id)

    def job_exit(self, job_id: int) -> JobExit:
        """The job's state and its batch script's exit status, from ``scontrol show job``:
        right after the script's end, while the job is COMPLETING, slurmctld already has it."""
        out = self._run("scontrol", ["show", "job", "-o", str(int(job_id))]).stdout
        return parse_job_exit(out)

    def cluster_name(self) -> str:
        """ClusterName from ``scontrol show config``."""
        out = self._run("scontrol", ["show", "config"], what="scontrol show config").stdout
        name = parse_cluster_name(out)
        if name is None:
            raise SlurmCommandError(
                "scontrol show config names no ClusterName; set slurm.cluster", "failed"
            )
        return name

    # -- sbatch and scancel --------------------------------------------------------------
    def submit(self, args: Sequence[str]) -> int:
        """Submit a job (``sbatch --parsable <args>``) and return its id."""
        out = self._run("sbatch", ["--parsable", *args]).stdout
        job_id = parse_submitted(out)
        if job_id is None:
            raise SlurmCommandError(f"sbatch printed no job id: {out.strip()[:200]!r}", "failed")
        return job_id

    def cancel(self, job_ids: Iterable[int]) -> None:
        """Cancel jobs (``scancel <ids>``); nothing to cancel runs nothing."""
        ids = [str(int(job_id)) for job_id in job_ids]
        if ids:
            self._run("scancel", ids)

    def cancel_named(self, name: str, user: str) -> None:
        """Cancel every job of ``user`` named ``name`` (``scancel -n -u``), pending or running."""
        self._run("scancel", ["-n", name, "-u", user], what="scancel (own jobs)")


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """One job in the queue, as squeue lists it."""

    job_id: int
    state: str              # PENDING, RUNNING, CONFIGURING, ...
    nodes: tuple[str, ...]  # the nodes it runs on, else those it asked for (--nodelist)
    submitted: float | None  # epoch seconds
    name: str


def parse_queued(text: str) -> list[QueuedJob]:
    """Rows of ``squeue -o '%i|%T|%n|%N|%V|%j'``; lines that do not parse are skipped."""
    jobs = []
    for line in text.splitlines():
        cols = line.strip().split("|", 5)
        if len(cols) != 6 or not cols[0].isdigit():
            continue
        job_id, state, requested, allocated, submit, name = cols
        nodes = expand_hostlist(allocated) or expand_hostlist(requested)
        try:
            submitted = datetime.fromisoformat(submit).astimezone().timestamp()
        except ValueError:
            submitted = None
        jobs.append(QueuedJob(int(job_id), state, tuple(nodes), submitted, name))
    return jobs


def parse_running_per_node(text: str) -> dict[str, list[str]]:
    """Node -> job names from ``squeue -t RUNNING -o '%N|%j'`` (a job on three nodes counts
    on each of them)."""
    nodes: dict[str, list[str]] = {}
    for line in text.splitlines():
        nodelist, sep, name = line.strip().partition("|")
        if not sep:
            continue
        for node in expand_hostlist(nodelist):
            nodes.setdefault(node, []).append(name)
    return nodes


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed host list (``n[01-03,7],gpu1``) as names; ``(null)``, ``N/A`` and
    blanks are none. Ranges keep their zero padding."""
    text = text.strip()
    if not text or text in ("(null)", "N/A", "None"):
        return []
    hosts: list[str] = []
    for item in _split_top(text):
        prefix, bracket, rest = item.partition("[")
        if not bracket:
            hosts.append(item)
            continue
        body, _, suffix = rest.partition("]")
        for part in body.split(","):
            low, dash, high = part.partition("-")
            if dash and low.isdigit() and high.isdigit():
                width = len(low)
                hosts.extend(f"{prefix}{n:0{width}d}{suffix}" for n in range(int(low), int(high) + 1))
            else:
                hosts.append(f"{prefix}{part}{suffix}")
    return hosts


def _split_top(text: str) -> list[str]:
    """Split on the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item]


@dataclass(frozen=True)
class JobExit:
    """What ``scontrol show job`` says of a job's end: its state, and the batch script's exit
    code and the signal that ended it (``ExitCode=code:signal``, 0:0 while it runs)."""

    state: str | None
    exit_code: int | None
    exit_signal: int | None


def parse_job_exit(text: str) -> JobExit:
    """``JobState=`` and ``ExitCode=<code>:<signal>`` from ``scontrol show job -o`` output."""
    state = code = signal = None
    for word in text.split():
        key, _, value = word.partition("=")
        if key == "JobState" and value:
            state = value
        elif key == "ExitCode":
            first, _, second = value.partition(":")
            if first.isdigit() and second.isdigit():
                code, signal = int(first), int(second)
    return JobExit(state, code, signal)


def parse_squeue_times(line: str) -> SlurmTimes:
    """``squeue -o '%l|%S'``: the limit ([D-]HH:MM:SS, UNLIMITED) and the local start time."""
    limit, _, start = line.strip().partition("|")
    try:
        started = datetime.fromisoformat(start).astimezone().timestamp() if start else None
    except ValueError:  # N/A, Unknown
        started = None
    return SlurmTimes(parse_time_limit(limit), started)


def parse_squeue_jobs_times(text: str) -> dict[int, SlurmTimes]:
    """``squeue -o '%A|%l|%S'`` (``%A``: the job's own id, an array task's too), one job a line."""
    times: dict[int, SlurmTimes] = {}
    for line in text.splitlines():
        job, _, rest = line.strip().partition("|")
        if job.isdigit():
            times[int(job)] = parse_squeue_times(rest)
    return times


def parse_listpids(text: str, job_id: int) -> dict[str, list[int]]:
    """Step -> pids from ``scontrol listpids`` output, keeping the rows of ``job_id``.

    The table is ``PID JOBID STEPID LOCALID GLOBALID`` with a header line; STEPID uses Slurm's
    names (``batch``, ``extern``, ``0``) and LOCALID/GLOBALID are ``-`` for processes that are
    not a task.
    """
    steps: dict[str, set[int]] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 3 or not cols[0].isdigit():
            continue  # header, blank or message lines
        job = cols[1].partition("+")[0]
        if job.isdigit() and int(job) == job_id:
            steps.setdefault(cols[2], set()).add(int(cols[0]))
    return {step: sorted(pids) for step, pids in steps.items()}


def parse_cluster_name(text: str) -> str | None:
    """ClusterName from ``scontrol show config`` output (``ClusterName = x``); None if absent."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "ClusterName" and value.strip():
            return value.strip()
    return None


def parse_submitted(text: str) -> int | None:
    """The job id from ``sbatch --parsable`` (``<id>`` or ``<id>;<cluster>``); None if absent."""
    for line in text.splitlines():
        job, _, _cluster = line.strip().partition(";")
        if job.isdigit():
            return int(job)
    return None


def parse_owner(text: str) -> str | None:
    """The first user name of ``squeue -o %u`` or ``sacct -o User`` output; None if none."""
    for line in text.splitlines():
        name = line.strip()
        if name and " " not in name:
            return name
    return None
