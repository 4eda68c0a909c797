"""``turingwatch run``: start the job's command, watch it, report, and exit as it did.

The command comes first: whatever fails in the watcher (an unwritable output directory, a
broken sampler, a locked store), the command is started, receives its signals, and its exit
status is ours. Every watcher failure is one logged warning: a ``turingwatch:`` line on stderr.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcher.config import Config
from watcher.slurm import env as jobenv
from watcher.slurm.commands import SlurmCommands
from watcher.watch.session import Watch

FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCONT,
)
_PR_SET_CHILD_SUBREAPER = 36
log = logging.getLogger(__name__)


def name_this_process() -> None:
    """Show as ``turingwatch`` in ps and /proc, so samplers can tell watchers from the job."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write("turingwatch")
    except OSError:
        pass


def become_subreaper() -> bool:
    """Orphans of the command's tree are re-parented to us instead of init, so we keep them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@dataclass
class RunOptions:
    command: list[str]
    interval_s: float
    output_dir: Path | None
    recycle_malloc: bool = False
    mail: bool = False
    quiet: bool = False
    gpu: bool = True


@dataclass
class Outcome:
    exit_code: int | None = None       # the command's status when it exited
    exit_signal: int | None = None     # the signal that killed it
    started: float = 0.0
    ended: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.ended - self.started)


def resolve_output_dir(config: Config, job: jobenv.JobContext, given: Path | None) -> Path:
    if given is not None:
        return given
    label = str(job.job_id) if job.job_id is not None else jobenv.local_job_label()
    return Path(config.sampler.output_dir.replace("{job}", label))


def run(config: Config, options: RunOptions) -> Outcome:
    """Run the command under the watcher; return how it ended (the CLI exits accordingly)."""
    become_subreaper()
    name_this_process()
    job = jobenv.detect()
    output_dir = resolve_output_dir(config, job, options.output_dir)
    env = dict(os.environ)
    env["TURINGWATCH_OUTPUT"] = str(output_dir)

    intercept_dir: Path | None = None
    if options.recycle_malloc:
        env, intercept_dir = _with_recycler(env, output_dir, job.mem_requested_bytes)

    # What our process had already reaped before (a shell that exec'd us keeps its history).
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcome = Outcome(started=time.time())
    outcome.extra["usage_before"] = usage_before
    try:
        child = subprocess.Popen(options.command, env=env)
    except OSError as exc:
        log.warning("cannot start %s: %s", options.command[0], exc.strerror)
        outcome.exit_code = 127 if isinstance(exc, FileNotFoundError) else 126
        outcome.ended = time.time()
        return outcome

    # The command is running before the watcher spends a moment on NVML or the output dir.
    previous = _forward_signals(child.pid)
    watch = _start_watch(config, options, job, output_dir)
    status = _reap_until(child.pid)
    outcome.ended = time.time()
    # The command is gone. A job killed at its time limit gets SIGTERM and, KillWait seconds
    # later, SIGKILL: ignore the polite signals for the few seconds the report takes, so a
    # timed-out job still leaves its report card.
    for sig in previous:
        if sig != signal.SIGCONT:
            signal.signal(sig, signal.SIG_IGN)
    if os.WIFSIGNALED(status):
        outcome.exit_signal = os.WTERMSIG(status)
    else:
        outcome.exit_code = os.WEXITSTATUS(status)

    if watch is None:
        return outcome
    try:
        _finish(config, options, job, watch, outcome, output_dir, intercept_dir)
    except Exception as exc:  # the report must never change the job's outcome
        log.warning("could not write the report: %s", exc)
    return outcome


def _start_watch(
    config: Config, options: RunOptions, job: jobenv.JobContext, output_dir: Path
) -> Watch | None:
    try:
        from watcher.sampling.gpu import GpuSampler, visible_devices_from_env
        from watcher.sampling.sources import SlurmSource, TreeSource

        slurm = SlurmCommands.from_config(config.slurm)
        if job.in_slurm:
            source: Any = SlurmSource(job.job_id, os.environ, slurm=slurm)
            cores = job.cpus_on_node or source.fallback_cpus
        else:
            source = TreeSource()
            cores = source.cpus
        gpu = None
        if options.gpu and config.sampler.gpu:
            gpu = GpuSampler(visible_devices_from_env(os.environ))
        slurm_times = (
            functools.partial(slurm.job_times, job.job_id, os.environ)
            if job.job_id is not None
            else None
        )
        watch = Watch(
            output_dir=output_dir,
            job=job,
            mode="run",
            interval_s=options.interval_s,
            source=source,
            gpu=gpu,
            command=" ".join(options.command),
            cores_available=cores,
            slurm_times=slurm_times,
        )
        watch.start()
        return watch
    except Exception as exc:  # no watcher, but the job runs
        log.warning("not watching this job (%s); the command runs unwatched", exc)
        return None


def _with_recycler(
    env: dict[str, str], output_dir: Path, mem_requested_bytes: int | None
) -> tuple[dict[str, str], Path | None]:
    try:
        from watcher.watch import intercept

        stats_dir = output_dir / "intercepter"
        stats_dir.mkdir(parents=True, exist_ok=True)
        env = intercept.preload_environment(env, stats_dir / "stats")
        # Pooled blocks stay resident and count against the job's memory limit: keep the pool
        # to an eighth of what the job asked for, unless the user chose a size.
        if mem_requested_bytes and "TURINGWATCH_INTERCEPT_POOL_BYTES" not in env:
            env["TURINGWATCH_INTERCEPT_POOL_BYTES"] = str(max(1 << 20, mem_requested_bytes // 8))
        return env, stats_dir
    except Exception as exc:  # run without the recycler rather than not at all
        log.warning("--recycle-malloc: %s; running without the recycler", exc)
        return env, None


def _forward_signals(pid: int) -> dict[int, Any]:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    previous = {}
    for sig in FORWARDED_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, forward)
        except (OSError, ValueError):
            pass
    return previous


def _reap_until(pid: int) -> int:
    """Wait for the command, reaping any orphan re-parented to us meanwhile."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if reaped == pid:
            return status


def _finish(
    config: Config,
    options: RunOptions,
    job: jobenv.JobContext,
    watch: Watch,
    outcome: Outcome,
    output_dir: Path,
    intercept_dir: Path | None,
) -> None:
    from watcher.watch.finish import finish_job

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = outcome.extra["usage_before"]
    # The watcher's own cost while sampling (before DuckDB is loaded for the report); Slurm
    # counts it in the job too, so the report says how much of its numbers it is.
    own = resource.getrusage(resource.RUSAGE_SELF)
    watcher_usage = {"cpu_s": round(own.ru_utime + own.ru_stime, 3),
                     "peak_rss_bytes": own.ru_maxrss * 1024}
    intercept_stats = None
    if intercept_dir is not None:
        try:
            from watcher.watch import intercept

            intercept_stats = intercept.collect_stats(intercept_dir)
        except Exception as exc:
            log.warning("could not read the recycler's statistics: %s", exc)
    watch.stop(
        {
            "exit_code": outcome.exit_code,
            "exit_signal": outcome.exit_signal,
            "elapsed_s": outcome.elapsed_s,
            # Everything the command's tree used, as the kernel counted it at reaping.
            "rusage_children": {"user_s": usage.ru_utime - before.ru_utime,
                                "system_s": usage.ru_stime - before.ru_stime,
                                "maxrss_kib": usage.ru_maxrss},
            "intercepter": intercept_stats,
            "watcher": watcher_usage,
        }
    )
    if watch.job_started_at is not None:
        # Inside Slurm the job began before the watcher did (the script's first lines, our
        # own start): its elapsed time, and the cores it held, count from the job's start.
        outcome.started = min(outcome.started, watch.job_started_at)
    card = finish_job(
        config,
        output_dir=output_dir,
        job=watch.job,
        session_id=watch.session_id,
        outcome=outcome,
        batch_host=True,
        intercept_stats=intercept_stats,
        watcher_usage=watcher_usage,
        mail=options.mail,
    )
    if card and not options.quiet:
        sys.stdout.write(card)
        sys.stdout.flush()


def exit_like(outcome: Outcome) -> None:
    """Leave the way the command did: same status, or the same signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if outcome.exit_signal:
        sig = outcome.exit_signal
        try:
            # No core file of ours: the command already dumped its own if it was going to.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
        os._exit(128 + sig)
    os._exit(outcome.exit_code or 0)
