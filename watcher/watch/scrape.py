"""The node scraper: every Slurm job on this node, sampled in one pass per interval.

Each round reads the process table once (``sampling/node_jobs.py``), finds every job's
processes by step from it, reads the GPUs once, and samples each job with a sampler of its
own (cumulative counters are per job) that parses the bytes the one scan read. Each job on the
node gets one session (``mode = "node"``, the job's owner as its user) in a spool of its own
under the scraper's spool directory, opened in the first round that sees the job and closed
with its end line in the first round that does not; the senders deliver the spools to
``server.url`` as an in-job watcher's are (docs/sending.md). docs/scrape.md has the rest.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher import __version__
from watcher.sampling.node_jobs import NodeGpus, NodeJob, NodeJobs
from watcher.sampling.sampler import Sampler, StepProcesses
from watcher.slurm import env as jobenv
from watcher.spool import SpoolWriter

if TYPE_CHECKING:
    from watcher.sending import SendingThread, SpoolSender
    from watcher.slurm.commands import SlurmCommands

MODE = "node"
log = logging.getLogger(__name__)


class _RoundSource:
    """A job's steps as this round's scan found them (the sampler's ProcessSource)."""

    def __init__(self) -> None:
        self.current: dict[str, StepProcesses] = {}

    def steps(self) -> dict[str, StepProcesses]:
        return self.current


@dataclass
class JobSession:
    """One job's session on this node: its sampler and its spool."""

    job_id: int
    session_id: str
    path: Path
    spool: SpoolWriter
    sampler: Sampler
    source: _RoundSource
    facts: dict[str, Any] = field(default_factory=dict)


class Scraper:
    """Samples every job on the node each :meth:`round`; :meth:`run` loops until stopped."""

    def __init__(
        self,
        *,
        spool_dir: Path,
        jobs: NodeJobs,
        interval_s: float,
        node: str | None = None,
        cluster: str | None = None,
        gpus: NodeGpus | None = None,
        slurm: SlurmCommands | None = None,
        sender: SpoolSender | None = None,
        max_spool_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool_dir = spool_dir
        self.jobs = jobs
        self.interval_s = interval_s
        self.node = node
        self.cluster = cluster
        self.gpus = gpus if gpus is not None else NodeGpus(None)
        self.slurm = slurm
        self.sender = sender
        self.max_spool_bytes = max_spool_bytes
        self.clock = clock
        self.sessions: dict[int, JobSession] = {}
        self.rounds = 0
        self._stop = threading.Event()
        self._reported: set[str] = set()

    # -- one round ------------------------------------------------------------------------
    def round(self) -> None:
        """Scan the node once: open sessions of new jobs, sample all, close those gone."""
        found = self.jobs.scan()
        new = [job for job_id, job in found.items() if job_id not in self.sessions]
        times = self._squeue_times([job.job_id for job in new])
        for job in new:
            try:
                self.sessions[job.job_id] = self._open(job, times.get(job.job_id))
            except OSError as exc:
                self._report(f"open-{job.job_id}", f"cannot write a spool for job {job.job_id}: {exc}")
        self.gpus.read({pid for job in found.values() for pid in job.pids()})
        for job_id, session in list(self.sessions.items()):
            job = found.get(job_id)
            if job is None:
                self._close(session, "job left this node")
            else:
                self._sample(session, job)
        self.rounds += 1

    def _open(self, job: NodeJob, times: jobenv.SlurmTimes | None) -> JobSession:
        env = self.jobs.job_environment(job)
        context = jobenv.detect(env) if env else None
        node = self.node or (context.node if context else jobenv.detect({}).node)
        cluster = (context.cluster if context else None) or self.cluster
        limit = (jobenv.times_from_env(env) if env else None) or times
        cores = max(job.found.cpus.values(), default=None) or (context.cpus_on_node if context else None)
        session_id = str(uuid.uuid4())
        name = f"{_safe(cluster or 'local')}.{job.job_id}.{_safe(node)}.{session_id[:8]}.jsonl"
        path = self.spool_dir / name
        spool = SpoolWriter(path)
        source = _RoundSource()
        sampler = Sampler(source, self.gpus.for_job(), proc_root=self.jobs.proc_root,
                          files=self.jobs.files.lend())
        user = jobenv.user_name(job.uid) if job.uid is not None else None
        facts = {"time_limit_s": limit.time_limit_s if limit else None,
                 "job_started_at": limit.started_at if limit else None}
        spool.write_session({
            "session_id": session_id,
            "job_id": job.job_id,
            "cluster": cluster,
            "node": node,
            "mode": MODE,
            "user_name": user,
            "command": None,
            "started_at": self.clock(),
            "interval_s": self.interval_s,
            "cores_available": cores,
            "mem_requested_bytes": context.mem_requested_bytes if context else None,
            "time_limit_s": facts["time_limit_s"],
            "gpu_status": self.gpus.status,
            "watcher_version": __version__,
            "meta": {"scraper_pid": os.getpid(), "method": job.found.method},
        })
        if self.sender is not None:
            self.sender.add(path)
            if self.max_spool_bytes is not None:
                sender = self.sender
                spool.bound(self.max_spool_bytes, lambda: sender.delivered(path))
        log.info("job %s (%s) on %s: session %s", job.job_id, user, node, session_id)
        return JobSession(job.job_id, session_id, path, spool, sampler, source, facts)

    def _sample(self, session: JobSession, job: NodeJob) -> None:
        session.source.current = job.steps
        try:
            record = session.sampler.sample()
        except Exception:
            self._report(f"sample-{job.job_id}", f"sampling job {job.job_id} failed:\n"
                         + traceback.format_exc(limit=3))
            return
        try:
            session.spool.write_sample(record)
        except OSError as exc:
            self._report(f"spool-{job.job_id}", f"cannot write {session.path}: {exc}")

    def _close(self, session: JobSession, ended_by: str) -> None:
        self.sessions.pop(session.job_id, None)
        try:
            end = {"exit_code": None, "exit_signal": None, "ended_by": ended_by, **session.facts}
            session.spool.write_end(self.clock(), end)
        except OSError as exc:
            log.warning("cannot finish %s: %s", session.path, exc)
        finally:
            session.spool.close()
        log.info("job %s: session %s ended (%s)", session.job_id, session.session_id, ended_by)

    def _squeue_times(self, job_ids: list[int]) -> dict[int, jobenv.SlurmTimes]:
        """Time limits and starts of the new jobs, in one squeue call (with its timeout)."""
        if not job_ids or self.slurm is None:
            return {}
        try:
            return self.slurm.jobs_times(job_ids)
        except Exception as exc:  # niceties; the samples are what matter
            self._report("squeue", f"cannot ask squeue for the jobs' time limits: {exc}")
            return {}

    def _report(self, kind: str, message: str) -> None:
        if kind not in self._reported:
            self._reported.add(kind)
            log.warning("%s", message)

    # -- the loop -------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Safe from a signal handler: the loop ends within a second."""
        self._stop.set()

    def run(self, duration_s: float | None = None) -> None:
        """Round after round every ``interval_s`` until stopped or ``duration_s`` passed; then
        end every open session with its end line."""
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 10)  # the jobs come first
        except OSError:
            pass
        start = next_at = time.monotonic()
        until = start + duration_s if duration_s is not None else None
        while not self._stop.is_set():
            try:
                self.round()
            except Exception:  # a bug costs a round, not the node's sampling
                self._report("round", "a scrape round failed:\n" + traceback.format_exc(limit=5))
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:  # fell behind (a slow /proc): skip, don't burst
                next_at = now + self.interval_s
            if until is not None and next_at >= until:
                self._wait(until)
                break
            self._wait(next_at)
        self.close_all("scraper stopped")

    def _wait(self, deadline: float) -> None:
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 1.0))

    def close_all(self, ended_by: str) -> None:
        for session in list(self.sessions.values()):
            self._close(session, ended_by)
        self.gpus.close()


def start_node_sending(sender: SpoolSender, interval_s: float, final_wait_s: float) -> SendingThread:
    from watcher.sending import SendingThread

    thread = SendingThread(sender, interval_s=interval_s, final_wait_s=final_wait_s)
    thread.start()
    return thread


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:64]
