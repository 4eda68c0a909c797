"""A watch session: sample a job on this node into a spool until told to stop.

Used by ``run`` (which also owns the command) and ``attach``. The loop runs in a daemon
thread at lowered priority; every failure inside it is logged once as a warning (a
``turingwatch:`` line in the job's stderr) and never reaches the job. The spool is the only
thing written while the job runs.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher import __version__
from watcher.config import Config
from watcher.errors import TuringwatchError
from watcher.files import private_dir
from watcher.sampling.sampler import GpuSource, ProcessSource, Sampler
from watcher.slurm.env import JobContext, SlurmTimes, process_user
from watcher.spool import SpoolWriter
from watcher.watch.sinks import start_sending

if TYPE_CHECKING:
    from watcher.sending import SendingThread

STOP_MARKER = "STOP"          # written by the batch host's run: other nodes finish up
_MAX_CONSECUTIVE_ERRORS = 5
log = logging.getLogger(__name__)


def warn(message: str) -> None:
    """Log a watcher problem at WARNING: one ``turingwatch:`` line in the job's stderr.

    Kept for the callers that take a plain function; new code logs through its own logger.
    """
    log.warning(message, stacklevel=2)  # logging never raises into the caller


class AlreadyWatched(TuringwatchError):
    """Another watcher samples this job on this node (run and attach, or two attach)."""


def _lock_node(path: Path) -> int:
    """One watcher per node and output directory; the lock dies with the process.

    The spool directory must be this user's (:func:`private_dir`), and the lock a file of its
    own, never a link: it is truncated, so a planted ``<node>.lock`` link would truncate any
    file the user can write.
    """
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise PermissionError(errno.EPERM, "not a file of this user's", str(path))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise AlreadyWatched(f"this node is already watched into {path.parent} (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Watch:
    def __init__(
        self,
        *,
        output_dir: Path,
        job: JobContext,
        mode: str,
        interval_s: float,
        source: ProcessSource,
        gpu: GpuSource | None,
        command: str | None = None,
        cores_available: int | None = None,
        meta: dict[str, Any] | None = None,
        slurm_times: Callable[[], SlurmTimes] | None = None,
    ) -> None:
        self.output_dir = output_dir
        self.job = job
        self.interval_s = interval_s
        self.session_id = str(uuid.uuid4())
        self.sampler = Sampler(source, gpu, own_pid=os.getpid())
        self.gpu = gpu
        self.started_at = time.time()
        self.spool_path = output_dir / "spool" / f"{job.node}.{os.getpid()}.jsonl"
        self._node_lock = _lock_node(output_dir / "spool" / f"{job.node}.lock")
        self.spool = SpoolWriter(self.spool_path)
        self._stop = threading.Event()
        self._lock = threading.Lock()     # one sample at a time: the loop's or the final one
        self._errors = 0
        self.empty_rounds = 0             # consecutive samples that found none of the job
        self._reported: set[str] = set()
        self._thread: threading.Thread | None = None
        self.sending: SendingThread | None = None   # to the server, when one is configured
        # Asked once from the sampling thread (it may mean an squeue call): never on the
        # job's path, and while the job still exists (after its end Slurm may not say).
        self._slurm_times = slurm_times
        self.time_limit_s: int | None = job.time_limit_s
        self.job_started_at: float | None = None
        self.spool.write_session(
            {
                "session_id": self.session_id,
                "job_id": job.job_id,
                "cluster": job.cluster,
                "node": job.node,
                "mode": mode,
                # Who runs this process (its uid), not who the environment says: see process_user.
                "user_name": process_user(job.job_id),
                "command": command,
                "started_at": self.started_at,
                "interval_s": interval_s,
                "cores_available": cores_available,
                "mem_requested_bytes": job.mem_requested_bytes,
                "time_limit_s": job.time_limit_s,
                "gpu_status": gpu.status if gpu is not None else "disabled",
                "watcher_version": __version__,
                "meta": meta or {},
            }
        )

    # -- the loop -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="turingwatch-sampler", daemon=True)
        self._thread.start()

    def start_sending(self, config: Config) -> None:
        """Send the spool to ``server.url`` while the job runs, if it is set (never raises)."""
        self.sending = start_sending(config, self.spool_path, self.spool)

    def finish_sending(self) -> bool:
        """Wait, at most ``2 * server.send_timeout_s`` from the end line, for the final
        flush; whether everything was delivered (what is not stays for a later sender)."""
        if self.sending is None:
            return False
        try:
            return self.sending.join()
        except Exception:  # the sender's trouble is never the job's
            return False

    def request_stop(self) -> None:
        """Safe from a signal handler: the loop ends at its next wake-up (within a second)."""
        self._stop.set()

    def wait(self) -> None:
        """Block until the loop ends by itself (see should_stop_early) or is asked to stop."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _loop(self) -> None:
        try:  # a busy job should not wait for its watcher
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            if self._slurm_times is not None:
                query, self._slurm_times = self._slurm_times, None
                try:
                    times = query()
                    self.time_limit_s, self.job_started_at = times.time_limit_s, times.started_at
                except Exception:  # niceties; the samples are what matter
                    pass
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:  # we fell behind (suspended job, slow /proc): skip, don't burst
                next_at = now + self.interval_s
            if self.should_stop_early():
                break
            self._wait_until(next_at)

    def _wait_until(self, deadline: float) -> None:
        # Wake at least once a second so attach notices the batch host's stop marker quickly.
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self.should_stop_early():
                return
            self._stop.wait(min(left, 1.0))

    def should_stop_early(self) -> bool:
        """Overridden by attach: the job has ended or the batch host asked us to finish."""
        return False

    def sample_once(self) -> bool:
        with self._lock:
            if self.spool is None:
                return False
            try:
                record = self.sampler.sample()
            except Exception:
                self._errors += 1
                self._report("sample", "sampling failed; the job is not affected:\n"
                             + traceback.format_exc(limit=3))
                if self._errors == _MAX_CONSECUTIVE_ERRORS:
                    log.warning("sampling keeps failing; stopping the watcher, the job runs on")
                    self._stop.set()
                return False
            self._errors = 0
            self.empty_rounds = 0 if record.steps else self.empty_rounds + 1
            try:
                self.spool.write_sample(record)
            except OSError as exc:
                self._report("spool", f"cannot write {self.spool_path}: {exc}; sampling stops, "
                             "the job runs on")
                self.spool = None
                self._stop.set()
                return False
            return True

    def _report(self, kind: str, message: str) -> None:
        if kind not in self._reported:
            self._reported.add(kind)
            log.warning("%s", message)

    # -- the end --------------------------------------------------------------------------
    def stop(self, end: dict[str, Any]) -> None:
        """Stop the loop, take one last sample, and close the spool with its end record."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(30.0, self.interval_s * 2))
        self.sample_once()
        with self._lock:
            if self.spool is None:
                return
            try:
                facts = {"time_limit_s": self.time_limit_s, "job_started_at": self.job_started_at}
                self.spool.write_end(time.time(), {**facts, **end})
            except OSError as exc:
                log.warning("cannot finish %s: %s", self.spool_path, exc)
            finally:
                self.spool.close()
                self.spool = None
        if self.sending is not None:
            self.sending.finish()  # the final flush runs while the card is made
        close = getattr(self.gpu, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # shutting NVML down must not fail the job
                pass
