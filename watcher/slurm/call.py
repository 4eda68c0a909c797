"""One call of a Slurm command: a timeout, the whole process group killed, errors that explain.

Every Slurm command turingwatch runs goes through :func:`run_command` (usually by way of
:class:`watcher.slurm.commands.SlurmCommands`, which knows each command's setting and timeout):

* The command is a setting (``slurm.sacct``, ``slurm.squeue``, ...), split the way a shell
  splits words, so a site can name another path or a wrapper (``ssh head sacct``).
* The timeout is not optional. The command runs in a session of its own, so that on timeout
  the whole process group is killed: a wrapper's children (ssh, a sudo) go with it instead of
  lingering, holding the pipes open.
* stdin is ``/dev/null``: no call here waits for input, and none may steal the job's.
* Output is decoded as UTF-8 with replacement: job names and submit lines are whatever bytes
  users typed.
* Failures raise :class:`SlurmCommandError`, whose message says what failed and what to try,
  and whose ``reason`` lets a caller react (the sampler stops asking for a command that is not
  installed, and asks again after a timeout).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from watcher.errors import SlurmError

log = logging.getLogger(__name__)

Reason = Literal["not-found", "cannot-run", "timeout", "failed"]

# Lines of stderr a failure message quotes: Slurm's own message is its last line or two.
_STDERR_LINES = 3


class SlurmCommandError(SlurmError):
    """A Slurm command was not found, could not be started, timed out, or failed."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class Completed:
    """What a command that ran to its end left: its status and its decoded output."""

    returncode: int
    stdout: str
    stderr: str


def run_command(
    command: str,
    args: Sequence[str],
    *,
    setting: str,
    timeout_s: float,
    what: str | None = None,
    hint: str = "",
    env: Mapping[str, str] | None = None,
    check: bool = True,
    error: type[SlurmCommandError] = SlurmCommandError,
) -> Completed:
    """Run ``command`` (split into words) with ``args`` and wait at most ``timeout_s`` seconds.

    Args:
        command: the configured command, e.g. ``"sacct"`` or ``"/opt/slurm/bin/squeue"``.
        args: the arguments after it.
        setting: the command's key in ``[slurm]``, named in the "not found" message.
        timeout_s: how long it may run before its process group is killed.
        what: how messages name the call (``"scontrol listpids"``); default ``setting``.
        hint: what to try, appended to the timeout message.
        env: variables set for the command on top of this process's environment.
        check: raise when the command exits non-zero; with False the caller reads the status.
        error: the class raised (a subclass of :class:`SlurmCommandError`).

    Raises:
        SlurmCommandError: (or ``error``) not found, not runnable, timed out, or (with
            ``check``) exited non-zero, quoting the last lines of its stderr.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")
    try:
        words = shlex.split(command)
    except ValueError as exc:  # an unbalanced quote
        raise error(f"slurm.{setting} = {command!r} is not a command line: {exc}", "cannot-run") from None
    if not words:
        raise error(f"slurm.{setting} is empty: set it to the {setting} command", "not-found")
    argv = [*words, *args]
    what = what or setting
    log.debug("running %s (timeout %g s)", shlex.join(argv), timeout_s)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env} if env else None,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise error(
            f"{argv[0]} not found: install the Slurm client or set slurm.{setting}", "not-found"
        ) from None
    except OSError as exc:
        raise error(
            f"cannot run {argv[0]}: {exc.strerror}; check slurm.{setting}", "cannot-run"
        ) from None
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            message = f"{what} timed out after {timeout_s:g} s"
            raise error(f"{message}; {hint}" if hint else message, "timeout") from None
        except BaseException:  # KeyboardInterrupt and the like: leave no command behind
            _kill_group(proc)
            raise
    done = Completed(proc.returncode, _text(out), _text(err))
    if check and done.returncode != 0:
        raise error(f"{what} failed ({_status(done.returncode)}): {last_lines(done.stderr)}", "failed")
    return done


def last_lines(stderr: str, count: int = _STDERR_LINES) -> str:
    """The last ``count`` non-blank lines of a command's stderr, joined with `` / ``."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return " / ".join(lines[-count:]) if lines else "(no message)"


def _status(returncode: int) -> str:
    return f"exit {returncode}" if returncode >= 0 else f"killed by signal {-returncode}"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The command leads its own session (start_new_session), so its group id is its pid.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:  # already gone
        pass
