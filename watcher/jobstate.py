"""How a job ended, said the same way by the card, ``report.html``, letters, ``turingwatch job``
and the site: Slurm's state with its exit code, the signal by name, and whether it is bad news.

Slurm's states (sacct ``State``) come as ``CANCELLED by 1234`` and, for jobs still in the queue,
``RUNNING``/``PENDING``; a run outside Slurm has no state, only its exit status or signal.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

# States that say all there is to say: no exit code or signal is added to them.
SELF_EXPLAINING = ("OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED")
# States that mean the job did not do what it was asked.
FAILED_STATES = (*SELF_EXPLAINING, "FAILED", "CANCELLED")
RUNNING_STATES = ("RUNNING", "PENDING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING")


def signal_name(number: int | None) -> str | None:
    """9 -> 'SIGKILL'; None for no signal, 'signal 77' for one this system has no name for."""
    if not number:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass(frozen=True)
class EndState:
    """What a reader is told about how a job ended."""

    state: str | None       # Slurm's state without its " by <uid>" tail; None outside Slurm
    text: str               # "FAILED, exit code 2", "TIMEOUT", "killed by SIGSEGV", "exit code 0"
    bad: bool               # show it first and in red
    running: bool = False   # still in the queue: nothing final is known yet

    @property
    def css_class(self) -> str:
        return "bad" if self.bad else "running" if self.running else "ok"


def end_state(state: str | None, exit_code: int | None = None, exit_signal: int | None = None) -> EndState:
    """Slurm's state, exit code and signal, as one short phrase.

    A job COMPLETED with code 0 reads "COMPLETED"; FAILED adds its exit code; a signal is named
    (``FAILED, killed by SIGSEGV``). OUT_OF_MEMORY and TIMEOUT need no code: the state says it.
    """
    base = (state or "").split(" by ")[0].strip().upper() or None
    sig = signal_name(exit_signal)
    if base is None:  # a run outside Slurm: only the process's own ending
        if sig:
            return EndState(None, f"killed by {sig}", True)
        if exit_code is None:
            return EndState(None, "ended", False)
        return EndState(None, f"exit code {exit_code}", exit_code != 0)
    if base in RUNNING_STATES:
        return EndState(base, base, False, running=True)
    if base in SELF_EXPLAINING:
        return EndState(base, base, True)
    bad = base in FAILED_STATES or bool(exit_code) or bool(sig)
    parts = [base]
    if sig:
        parts.append(f"killed by {sig}")
    elif exit_code and base != "CANCELLED":
        parts.append(f"exit code {exit_code}")
    return EndState(base, ", ".join(parts), bad)
