"""``turingwatch run``: start the job's command, watch it, report, and exit as it did.

The command comes first: whatever fails in the watcher (its configuration, an output directory
it may not use, a broken sampler, a locked store), the command is started, receives its
signals, and its exit status is ours (or the signal that killed it kills us, SIGKILL
included). Every watcher failure is one logged warning: a ``turingwatch:`` line on stderr.

What the command is given is what it would have had without the watcher. It gets its
arguments as the bytes they were (the session records a name
that is not UTF-8 with U+FFFD in it), every descriptor the watcher was given (a closed stdout
stays closed, ``3>file`` stays open), the watcher's umask, and the signal mask and ignored
signals the watcher found (``nohup``'s SIGHUP stays ignored). Only then does the watcher make
its own choices: ``/dev/null`` on a closed standard descriptor (so that no file it opens lands
there), umask 077 (everything it writes is its owner's only). The card goes to stderr, as
``time`` writes its numbers, so that ``run -- gen.py > out.csv`` keeps it out of the data
(``--card PATH`` or ``-`` for stdout); it is skipped without a word when that stream is closed
or its reader has gone.

Signals. The watcher shares the command's process group and, in Slurm, its step, so many
signals reach the command twice: directly, and once more passed on by the watcher. Linux does
not say whether a signal was sent to one process or to its group, but it says who sent it
(``si_code``, ``si_pid``). The watcher blocks the signals it passes on (in every thread: the
sampling thread starts after this) and takes each with ``sigtimedwait``; it passes one on
unless its sender says that the command got it too (:func:`should_forward`):

- from the kernel (``si_code > 0``): the terminal's Ctrl-C and Ctrl-\\, a hangup, an orphaned
  group's SIGHUP go to a whole process group, so they are not passed on while the command is
  in ours. A hangup the kernel sends to a session's leader alone (SIGHUP, SIGCONT) is passed
  on when the watcher leads the session (``srun --pty turingwatch run -- bash``).
- from the job (the command, or any process under the watcher): a job script's ``kill 0``
  reaches the watcher as well, and is not sent back to it.
- from ``slurmstepd`` (root): Slurm signals every process of the step (``scancel``, the time
  limit, ``srun`` passing on a Ctrl-C, ``scancel --signal``) or, with ``scancel --full``, the
  batch script's process group; the command is in both. A signal Slurm sends to the batch
  script alone (``scancel --batch``, ``sbatch --signal=B:USR1@60``) reaches only the watcher
  when it is itself the batch script (``exec turingwatch run`` in the script), and is passed
  on then; SIGTERM and SIGCONT from Slurm stay the whole step's (the job's end, its resumption).
- from anyone else (``kill PID``, a parent's ``Popen.terminate``, a script's trap): passed on.

The limit: a process outside the job and outside Slurm that signals the watcher's whole
process group by hand (``kill -TERM -PGID``, an interactive shell's ``kill %1``) reaches the
command directly and through the watcher; signal the command itself, or the watcher's pid.

Reaping. The watcher is a subreaper (orphans of the command's tree are re-parented to it, and
counted) and reaps them while it waits, but only children of its main thread (``__WNOTHREAD``):
the squeue and scontrol the sampling thread runs are that thread's children, and their status
is its to read (had another thread taken it, Python would have reported 0).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcher.config import Config
from watcher.files import private_dir
from watcher.sampling.cgroups import STEPD_COMM
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
MIN_INTERVAL_S = 0.5
MAX_INTERVAL_S = 3600.0
_PR_SET_CHILD_SUBREAPER = 36
_WNOTHREAD = 0x20000000          # linux/wait.h: only children of the calling thread
# sigtimedwait wakes at each signal and each child's end (SIGCHLD); this is only a safety net.
_WAKE_S = 5.0
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


def sampling_interval(
    given: float | str | None, configured: float, *, logger: logging.Logger = log
) -> float:
    """Seconds between samples: ``--interval`` when given (a number, or the text given), else
    the configured one (which the configuration has checked), kept a finite number from 0.5 s
    to an hour. A value that had to change is said once, through the command's ``logger``;
    ``run`` starts its command whatever was given."""
    if given is None:
        return configured
    try:
        seconds = float(given)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        logger.warning("--interval %s is not a number of seconds; using %g s", given, configured)
        return configured
    given = seconds
    if given < MIN_INTERVAL_S:
        logger.warning("--interval %s is below %s s; using %s", given, MIN_INTERVAL_S, MIN_INTERVAL_S)
        return MIN_INTERVAL_S
    if given > MAX_INTERVAL_S:
        logger.warning("--interval %s is above %g s; using %g", given, MAX_INTERVAL_S, MAX_INTERVAL_S)
        return MAX_INTERVAL_S
    return given


@dataclass
class RunOptions:
    command: list[str]
    interval_s: float
    output_dir: Path | None
    recycle_malloc: bool = False
    mail: bool = False
    quiet: bool = False
    gpu: bool = True
    card_to: str | None = None       # None: stderr; "-": stdout; else a file's path


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
    """Run the command under the watcher; return how it ended (the CLI exits accordingly).

    The signals passed on stay blocked when it returns (they are ignored while the report is
    written): :func:`exit_like` is meant to follow.
    """
    become_subreaper()
    name_this_process()
    job = jobenv.detect()
    output_dir = resolve_output_dir(config, job, options.output_dir)
    env = dict(os.environ)
    env["TURINGWATCH_OUTPUT"] = str(output_dir)

    intercept_dir: Path | None = None
    unwatched: str | None = None       # why the job is not watched: said once, below
    if options.recycle_malloc:
        env, intercept_dir, unwatched = _with_recycler(env, output_dir, job.mem_requested_bytes)
    without = ", without the recycler" if unwatched is not None else ""

    # What our process had already reaped before (a shell that exec'd us keeps its history).
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcome = Outcome(started=time.time())
    outcome.extra["usage_before"] = usage_before
    passed_on = _signals_to_pass_on()
    mask = _take_signals(passed_on)
    try:
        child = _spawn(options.command, env, mask)
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        log.warning("cannot start %s: %s", options.command[0], exc.strerror)
        outcome.exit_code = 127 if isinstance(exc, FileNotFoundError) else 126
        outcome.ended = time.time()
        return outcome

    # The command runs with what it was given; from here on the watcher's choices are its own.
    _reserve_standard_streams()
    os.umask(0o077)
    router = SignalRouter(child.pid, batch_script=_is_batch_script(job))
    watch = None
    if unwatched is None:
        watch, unwatched = _start_watch(config, options, job, output_dir)
    if unwatched is not None:
        log.warning("not watching this job (%s); the command runs unwatched%s", unwatched, without)
    status = supervise(child.pid, router, passed_on)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped: subprocess must not wait
    outcome.ended = time.time()
    # The command is gone. A job killed at its time limit gets SIGTERM and, KillWait seconds
    # later, SIGKILL: the signals stay blocked (ignored) for the few seconds the report takes,
    # so a timed-out job still leaves its report card.
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
    watch.finish_sending()  # bounded: what is left stays in the spool for a later sender
    return outcome


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _recorded(command: list[str]) -> str:
    """The command line as the session records it: bytes that are not UTF-8 (a file name
    typed in another encoding) become U+FFFD, as /proc's command lines do in the samples."""
    return " ".join(os.fsencode(arg).decode("utf-8", "replace") for arg in command)


def _start_watch(
    config: Config, options: RunOptions, job: jobenv.JobContext, output_dir: Path
) -> tuple[Watch | None, str | None]:
    """The running watch, or None and why not."""
    try:
        from watcher.sampling.gpu import GpuSampler, visible_devices_from_env
        from watcher.sampling.sources import SlurmSource, TreeSource

        private_dir(output_dir)
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
            command=_recorded(options.command),
            cores_available=cores,
            slurm_times=slurm_times,
        )
        watch.start()
        watch.start_sending(config)
        return watch, None
    except Exception as exc:  # no watcher, but the job runs
        return None, _why(exc)


def _with_recycler(
    env: dict[str, str], output_dir: Path, mem_requested_bytes: int | None
) -> tuple[dict[str, str], Path | None, str | None]:
    """The job's environment with the recycler preloaded, its statistics directory, and why
    the output directory cannot be used (the job then runs unwatched, without the recycler)."""
    try:
        private_dir(output_dir)
        stats_dir = private_dir(output_dir / "intercepter")
    except OSError as exc:
        return env, None, _why(exc)
    try:
        from watcher.watch import intercept

        env = intercept.preload_environment(env, stats_dir / "stats")
        # Pooled blocks stay resident and count against the job's memory limit: keep the pool
        # to an eighth of what the job asked for, unless the user chose a size.
        if mem_requested_bytes and "TURINGWATCH_INTERCEPT_POOL_BYTES" not in env:
            env["TURINGWATCH_INTERCEPT_POOL_BYTES"] = str(max(1 << 20, mem_requested_bytes // 8))
        return env, stats_dir, None
    except Exception as exc:  # run without the recycler rather than not at all
        log.warning("--recycle-malloc: %s; running without the recycler", exc)
        return env, None, None


# -- the command's start, its standard descriptors and signals -----------------------------
def _spawn(command: list[str], env: dict[str, str], mask: Collection[int]) -> subprocess.Popen:
    """Start the command with every descriptor the watcher was given and the signal mask it
    had (``mask``; the watcher blocks more by now). Dispositions are reset as subprocess does:
    the watcher's handlers and its ignored SIGPIPE go back to the defaults, signals it was
    started ignoring stay ignored.

    The caller keeps the Popen and sets its ``returncode`` once it has reaped the command:
    a Popen left to the garbage collector is polled by subprocess from whichever thread starts
    the next subprocess (the sampler's squeue), which would take the command's status.
    """
    return subprocess.Popen(  # the watcher has no other thread yet: preexec_fn is safe here
        command, env=env, close_fds=False,
        preexec_fn=functools.partial(signal.pthread_sigmask, signal.SIG_SETMASK, mask),
    )


def _reserve_standard_streams() -> None:
    """Put /dev/null on a standard descriptor the watcher was given closed (the command has
    already started with it closed), so that no file the watcher opens later lands there and
    gets what a library writes to stdout or stderr."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if null != fd:
                os.dup2(null, fd, inheritable=False)
                os.close(null)


def _signals_to_pass_on() -> list[int]:
    """The forwarded signals, less those the watcher was started ignoring: the command
    inherits them ignored (``nohup``), and they are ignored for the watcher too."""
    return [sig for sig in FORWARDED_SIGNALS if signal.getsignal(sig) != signal.SIG_IGN]


def _take_signals(passed_on: Collection[int]) -> set[int]:
    """Block the signals passed on, and SIGCHLD, so that :func:`supervise` takes them with
    their sender; the mask the watcher had (the command's) is returned.

    A SIGCHLD inherited ignored would have the kernel reap the command itself and lose its
    status: it goes back to the default, for the command too.
    """
    if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    return signal.pthread_sigmask(signal.SIG_BLOCK, [*passed_on, signal.SIGCHLD])


@dataclass(frozen=True)
class Sender:
    """Where a signal came from, as far as it decides whether the command got it too."""

    kernel: bool = False    # the kernel raised it: a terminal's keys, a hangup
    job: bool = False       # the command, or a process under the watcher
    slurm: bool = False     # Slurm's step daemon


def should_forward(
    signum: int, sender: Sender, *, child_in_our_group: bool, session_leader: bool,
    batch_script: bool,
) -> bool:
    """Whether a signal the watcher got is passed on to the command (see the module's text).

    Args:
        signum: the signal.
        sender: who sent it.
        child_in_our_group: the command is still in the watcher's process group.
        session_leader: the watcher leads its session (the kernel's hangup is for it alone).
        batch_script: the watcher is itself the Slurm job's batch script.
    """
    if sender.kernel:
        if session_leader and signum in (signal.SIGHUP, signal.SIGCONT):
            return True
        return not child_in_our_group
    if sender.job:
        return False
    if sender.slurm:
        return batch_script and signum not in (signal.SIGTERM, signal.SIGCONT)
    return True


class SignalRouter:
    """Passes a signal the watcher took on to the command, when the command did not get it."""

    def __init__(self, child: int, *, batch_script: bool = False, proc_root: str = "/proc") -> None:
        self.child = child
        self.own = os.getpid()
        self.batch_script = batch_script
        self.proc_root = proc_root

    def route(self, info: signal.struct_siginfo) -> bool:
        """Pass ``info``'s signal on if it should be; whether it was."""
        sender = self.sender(info)
        try:
            in_group = os.getpgid(self.child) == os.getpgrp()
        except OSError:  # already gone
            in_group = True
        forward = should_forward(
            info.si_signo, sender, child_in_our_group=in_group,
            session_leader=os.getsid(0) == self.own, batch_script=self.batch_script,
        )
        log.debug("signal %d from pid %d (code %d, %s): %s", info.si_signo, info.si_pid,
                  info.si_code, sender, "passed on" if forward else "the command has it")
        if forward:
            try:
                os.kill(self.child, info.si_signo)
            except ProcessLookupError:
                pass
        return forward

    def sender(self, info: signal.struct_siginfo) -> Sender:
        if info.si_code > 0:  # SI_KERNEL and the other kernel codes; a process sends <= 0
            return Sender(kernel=True)
        pid = info.si_pid
        if pid == self.child or self._under_us(pid):
            return Sender(job=True)
        if info.si_uid == 0 and _comm(pid, self.proc_root) == STEPD_COMM:
            return Sender(slurm=True)
        return Sender()

    def _under_us(self, pid: int) -> bool:
        """Whether ``pid`` descends from the watcher (orphans re-parented to it included)."""
        for _ in range(64):
            if pid <= 1 or pid == self.own:
                return False
            parent = _parent(pid, self.proc_root)
            if parent is None:
                return False
            if parent == self.own:
                return True
            pid = parent
        return False


def _comm(pid: int, proc_root: str = "/proc") -> str | None:
    try:
        with open(f"{proc_root}/{pid}/comm", "rb") as f:
            return f.read().decode(errors="replace").strip()
    except OSError:
        return None


def _parent(pid: int, proc_root: str = "/proc") -> int | None:
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            raw = f.read()
        return int(raw[raw.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_batch_script(job: jobenv.JobContext) -> bool:
    """Whether the watcher is the job's batch script itself (``exec turingwatch run``)."""
    return job.step == "batch" and _comm(os.getppid()) == STEPD_COMM


def supervise(pid: int, router: SignalRouter, passed_on: Collection[int]) -> int:
    """Take signals and reap orphans until the command ends; return its wait status."""
    waited = {*passed_on, signal.SIGCHLD}
    while True:
        info = signal.sigtimedwait(waited, _WAKE_S)
        if info is not None and info.si_signo != signal.SIGCHLD:
            router.route(info)
        status = reap(pid)
        if status is not None:
            return status


def reap(pid: int) -> int | None:
    """Reap the main thread's ended children; the wait status of ``pid`` once it is one.

    Only the calling thread's children (``__WNOTHREAD``): the command and the orphans
    re-parented to us belong to the main thread, a subprocess another thread started stays
    that thread's to wait for.
    """
    while True:
        try:
            found, status = os.waitpid(-1, os.WNOHANG | _WNOTHREAD)
        except ChildProcessError:
            # Nobody left, the command included: its status went elsewhere (only possible if
            # something reaped it behind our back).
            log.warning("the command's exit status was lost; reporting 0")
            return 0
        if found == 0:
            return None
        if found == pid:
            return status


# -- the end ------------------------------------------------------------------------------
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
    finish_job(
        config,
        output_dir=output_dir,
        job=watch.job,
        session_id=watch.session_id,
        outcome=outcome,
        batch_host=True,
        intercept_stats=intercept_stats,
        watcher_usage=watcher_usage,
        mail=options.mail,
        show=None if options.quiet else card_destination(options.card_to),
    )


def card_destination(card_to: str | None) -> Callable[[str], None]:
    """Where the card goes: stderr (None), stdout ("-"), or a file written whole."""
    if card_to is None:
        return print_card
    if card_to == "-":
        return functools.partial(print_card, stream=sys.stdout)

    def to_file(card: str) -> None:
        try:
            Path(card_to).write_text(card, encoding="utf-8")
        except OSError as exc:  # the report files hold the same
            log.warning("cannot write the card to %s: %s", card_to, exc.strerror or exc)

    return to_file


def print_card(card: str, stream: Any = None) -> None:
    """Print the card to stderr (or ``stream``), if it can be: nothing when it is closed or its
    reader went away (the files hold the same), characters the terminal's encoding lacks as
    ``?``, and a bad end in red on a terminal (not when piped, nor with ``NO_COLOR`` set)."""
    out = sys.stderr if stream is None else stream
    if out is None:
        return
    try:
        encoding = getattr(out, "encoding", None) or "utf-8"
        if _colour(out):
            from watcher.card.text import paint

            card = paint(card)
        out.write(card.encode(encoding, "replace").decode(encoding))
        out.flush()
    except (OSError, ValueError):
        pass


def _colour(stream: Any) -> bool:
    """ANSI colour only for a terminal, and never with NO_COLOR set (no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def exit_like(outcome: Outcome) -> None:
    """Leave the way the command did: same status, or the same signal."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed, or its reader went away: nothing to lose now
            pass
    if outcome.exit_signal:
        sig = outcome.exit_signal
        try:
            # No core file of ours: the command already dumped its own if it was going to.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if sig not in (signal.SIGKILL, signal.SIGSTOP):  # neither can have a handler
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
        os._exit(128 + sig)
    os._exit(outcome.exit_code or 0)
