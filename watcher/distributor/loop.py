"""The distributor's loop: look at the queue, submit scrape jobs to busy nodes, tidy up.

One :meth:`Distributor.step` is one look: its own jobs (``squeue -u <me> -n <job_name>``), the
ones pending past ``allocation_timeout_s`` cancelled, the running jobs per node, then one
1-CPU job per chosen node (:func:`~watcher.distributor.choose.choose_nodes`). Each job asks for
``--nodelist=<node>``, a time limit a minute over ``time_s`` and a ``--deadline``, so a request
that cannot start in time is removed by Slurm even if the distributor is gone.

Slurm's errors never stop the loop: each is counted by cause and logged the first time its cause
appears (again only after that command has worked in between). The state is written atomically
to ``distributor.state`` after every step, for ``turingwatch distributor --status``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcher.config import DistributorSettings
from watcher.distributor.choose import choose_nodes
from watcher.files import atomic_write
from watcher.slurm.call import SlurmCommandError
from watcher.slurm.commands import QueuedJob, SlurmCommands

log = logging.getLogger(__name__)

STATE_FILE = "distributor.state"
# How far the time limit is over the scrape's duration: time to start Python and hand over.
TIME_MARGIN_S = 60
# Slurm's messages -> the cause a failure is counted and logged under.
_CAUSES = (  # the first that matches wins: "invalid account or account/partition combination"
    ("invalid account", "account"),
    ("association", "account"),
    ("invalid partition", "partition"),
    ("invalid qos", "qos"),
    ("qos", "qos"),
    ("partition", "partition"),
    ("node", "node"),
    ("memory", "memory"),
)


def failure_cause(command: str, exc: SlurmCommandError) -> str:
    """A short, stable name of what failed: ``sbatch: partition``, ``squeue: timeout``."""
    if exc.reason != "failed":
        return f"{command}: {exc.reason}"
    text = str(exc).lower()
    for needle, cause in _CAUSES:
        if needle in text:
            return f"{command}: {cause}"
    return f"{command}: failed"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _epoch(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass
class Counters:
    submitted: int = 0
    cancelled: int = 0
    loops: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class Distributor:
    """The distributor of one user (the service account) and its state directory."""

    def __init__(
        self,
        settings: DistributorSettings,
        commands: SlurmCommands,
        *,
        user: str,
        job_command: str,
        state_dir: Path,
        clock: Any = time.time,
    ) -> None:
        self.settings = settings
        self.commands = commands
        self.user = user
        self.job_command = job_command
        self.state_path = state_dir / STATE_FILE
        self.clock = clock
        self.counters = Counters()
        self.sampled_at: dict[str, float] = {}
        self.node_jobs: dict[str, int] = {}
        self.own: list[QueuedJob] = []
        self.errors: dict[str, str] = {}   # cause -> message, while the cause lasts
        self.started_at = clock()
        self._restore()
        # What the last step left, for readers in other threads (the metrics endpoint).
        self.snapshot: dict[str, Any] = self.state()

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Loop until ``stop`` is set (SIGTERM, SIGINT), then cancel every own job.

        ``once``: one step only, and no cancelling at start or end (for a cron job or a test).
        """
        if once:
            self.step()
            return
        self.cancel_all("start")
        try:
            while not stop.is_set():
                self.step()
                if stop.wait(self.settings.interval_s):
                    break
        finally:
            self.cancel_all("stop")

    def step(self) -> None:
        """One look at the queue: tidy own jobs, submit to the busiest free nodes, save state."""
        now = self.clock()
        self.counters.loops += 1
        own = self._own_jobs()
        if own is not None:
            own = self._cancel_stale(own, now)
            running = self._call("squeue", self.commands.running_per_node)
            if running is not None:
                s = self.settings
                nodes = choose_nodes(
                    running, own, self.sampled_at, now=now, job_name=s.job_name,
                    cooldown_s=s.cooldown_s, concurrent=s.concurrent,
                )  # fmt: skip
                for node in nodes:
                    self._submit(node, now)
        self.save()

    def cancel_all(self, why: str) -> None:
        """Cancel every pending and running job of this user named ``job_name``."""
        own = self._own_jobs() or []
        if self._call("scancel", self.commands.cancel_named, self.settings.job_name, self.user) is None:
            self.save()
            return
        if own:
            log.info("cancelled %d own jobs at %s: %s", len(own), why,
                     ", ".join(str(j.job_id) for j in own))  # fmt: skip
        self.counters.cancelled += len(own)
        self.own = []
        self.save()

    # -- pieces --------------------------------------------------------------------------
    def _own_jobs(self) -> list[QueuedJob] | None:
        own = self._call("squeue", self.commands.queued_jobs, self.settings.job_name, self.user)
        if own is not None:
            self.own = own
        return own

    def _cancel_stale(self, own: list[QueuedJob], now: float) -> list[QueuedJob]:
        limit = self.settings.allocation_timeout_s
        stale = [j for j in own if j.state == "PENDING" and j.submitted is not None
                 and now - j.submitted > limit]  # fmt: skip
        if not stale or self._call("scancel", self.commands.cancel, [j.job_id for j in stale]) is None:
            return own
        log.info("cancelled %s: pending longer than %g s",
                 ", ".join(f"{j.job_id} ({','.join(j.nodes) or 'any node'})" for j in stale), limit)
        self.counters.cancelled += len(stale)
        self.own = [j for j in own if j not in stale]
        return self.own

    def sbatch_args(self, node: str) -> list[str]:
        """The options of one scrape job on ``node``, its command last (``--wrap``)."""
        s = self.settings
        limit_min = math.ceil((s.time_s + TIME_MARGIN_S) / 60)
        # Slurm removes the job (state DEADLINE) once it can no longer end by then.
        deadline_s = math.ceil(s.allocation_timeout_s) + limit_min * 60
        args = [
            f"--job-name={s.job_name}",
            f"--nodelist={node}",
            "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
            f"--mem={s.mem}",
            f"--time={limit_min}",
            f"--deadline=now+{deadline_s}",
            "--no-requeue",
            "--chdir=/tmp",
            "--output=/dev/null",
        ]
        for option, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos)):
            if value:
                args.append(f"--{option}={value}")
        return [*args, "--wrap", self.job_command]

    def _submit(self, node: str, now: float) -> None:
        job_id = self._call("sbatch", self.commands.submit, self.sbatch_args(node), node=node)
        if job_id is None:
            return
        log.info("submitted scrape job %d to %s", job_id, node)
        self.counters.submitted += 1
        self.sampled_at[node] = now
        self.node_jobs[node] = job_id
        self.own.append(QueuedJob(job_id, "PENDING", (node,), now, self.settings.job_name))

    def _call(self, command: str, fn: Any, *args: Any, node: str | None = None) -> Any:
        """``fn(*args)``, or None after counting (and, the first time, logging) its failure."""
        try:
            result = fn(*args)
        except SlurmCommandError as exc:
            cause = failure_cause(command, exc)
            self.counters.failures[cause] = self.counters.failures.get(cause, 0) + 1
            if cause not in self.errors:
                where = f" (node {node})" if node else ""
                log.warning("%s%s: %s; the distributor goes on and says this once per cause",
                            cause, where, exc)  # fmt: skip
            self.errors[cause] = str(exc)
            return None
        for cause in [c for c in self.errors if c.startswith(f"{command}:")]:
            log.info("%s works again (was %s)", command, cause)
            del self.errors[cause]
        return result if result is not None else True

    # -- state ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        c = self.counters
        return {
            "user": self.user,
            "job_name": self.settings.job_name,
            "started_at": _iso(self.started_at),
            "updated_at": _iso(self.clock()),
            "loops": c.loops,
            "submitted": c.submitted,
            "running": sum(1 for j in self.own if j.state in ("RUNNING", "CONFIGURING")),
            "pending": sum(1 for j in self.own if j.state == "PENDING"),
            "cancelled": c.cancelled,
            "failures": dict(sorted(c.failures.items())),
            "errors": dict(sorted(self.errors.items())),
            "nodes": {
                node: {"sampled_at": _iso(ts), "job_id": self.node_jobs.get(node)}
                for node, ts in sorted(self.sampled_at.items())
            },
        }

    def save(self) -> None:
        self.snapshot = self.state()
        try:
            atomic_write(self.state_path, json.dumps(self.snapshot, indent=2) + "\n")
        except OSError as exc:
            if "state" not in self.errors:
                log.warning("cannot write %s: %s", self.state_path, exc.strerror)
            self.errors["state"] = f"cannot write {self.state_path}: {exc.strerror}"

    def _restore(self) -> None:
        """The nodes sampled before a restart stay on their cooldown."""
        try:
            old = read_state(self.state_path)
        except (OSError, ValueError):
            return
        for node, facts in (old.get("nodes") or {}).items():
            ts = _epoch(facts.get("sampled_at")) if isinstance(facts, dict) else None
            if isinstance(node, str) and ts is not None:
                self.sampled_at[node] = ts


def read_state(path: Path) -> dict[str, Any]:
    """The state file as written by :meth:`Distributor.save`.

    Raises:
        OSError: it cannot be read (FileNotFoundError: no distributor ran here yet).
        ValueError: it is not a JSON object.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds no JSON object")
    return data
