"""How the job ended, as the card and report.html lead with it, and the job's own lines of
``summary.json`` (name, command, start, end, state).

Light on purpose (no store, no DuckDB): the text card imports it.
"""

from __future__ import annotations

import signal
from datetime import datetime
from typing import Any

from watcher.jobstate import EndState, end_state
from watcher.units import clock

# A job killed this close to its time limit (or past it) was stopped by it: Slurm signals at the
# limit, within its scheduler's tick, and outcome times are whole seconds apart.
_LIMIT_SLACK_S = 1.0
# Killed outright with its peak this near its memory request: the kernel's OOM killer did it
# (Slurm's OUT_OF_MEMORY) - a sample every few seconds may miss the last climb, hence 90 %.
_OOM_SHARE = 0.9


def job_state(summary: dict[str, Any]) -> str | None:
    """Slurm's word for how the job ended, from what the watcher saw: COMPLETED, FAILED,
    TIMEOUT (a SIGTERM/SIGKILL at the time limit, or an end the watcher was not told of past
    it) or OUT_OF_MEMORY (a SIGKILL at the memory request); None when nothing says how it
    ended (``attach`` from outside). Slurm's own accounting may say more (CANCELLED by a
    user); this is what the card can tell at the job's end, before sacct knows."""
    sig, code = summary.get("exit_signal"), summary.get("exit_code")
    limit, elapsed = summary.get("time_limit_s"), summary.get("elapsed_s") or 0.0
    at_limit = bool(limit) and elapsed >= limit - _LIMIT_SLACK_S
    # Slurm enforces limits on a timer (tens of seconds late): a job still there well past its
    # limit was stopped by it, whatever clean status raced its way to the watcher first (Slurm
    # says 0:0 of a job it is still killing).
    past_limit = bool(limit) and elapsed > limit + _LIMIT_SLACK_S
    # A batch shell reports its child's signal as 128 + N.
    killed = sig or (code - 128 if code is not None and 128 < code < 160 else None)
    if at_limit and (killed in (signal.SIGTERM, signal.SIGKILL) or (code is None and not sig)):
        return "TIMEOUT"
    if past_limit and not sig and not code:
        return "TIMEOUT"
    if code is None and not sig:
        return None
    if killed == signal.SIGKILL and (summary.get("mem_used_share") or 0) >= _OOM_SHARE:
        return "OUT_OF_MEMORY"
    return "COMPLETED" if not sig and not code else "FAILED"


def end_text(summary: dict[str, Any]) -> EndState:
    """The card's first line: "FAILED, exit code 3", "killed by SIGSEGV", "TIMEOUT after
    01:00:00", "OUT_OF_MEMORY", "COMPLETED" (watcher.jobstate, as every reader says it)."""
    state = summary.get("state") or job_state(summary)
    # A signal says it better than FAILED does: "killed by SIGSEGV".
    end = end_state(None if state == "FAILED" and summary.get("exit_signal") else state,
                    summary.get("exit_code"), summary.get("exit_signal"))
    text = end.text[:1].upper() + end.text[1:]
    if state == "TIMEOUT":
        text += f" after {clock(summary.get('elapsed_s'))}"
    elif state is None and end.state is None and summary.get("exit_code") is None:
        text = "Ended (its exit status is not known)"   # attach from outside the job
    return EndState(end.state, text, end.bad, end.running)


def describe_job(
    summary: dict[str, Any],
    *,
    job_name: str | None,
    command: str | None,
    started: float,
    ended: float,
) -> dict[str, Any]:
    """The summary with the job's name, command, start, end (ISO 8601, local time with its
    offset) and state, for the card's first lines and report.html's header."""
    summary["job_name"] = job_name
    summary["command"] = command
    summary["start"] = _iso(started)
    summary["end"] = _iso(ended)
    summary["state"] = job_state(summary)
    return summary


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
