"""The ``sacct`` call the importer makes: its arguments, its environment, its error.

It is run by :meth:`watcher.slurm.commands.SlurmCommands.run_sacct` (with
``slurm.sacct_timeout_s``); this module only says what to ask for and how.

The output is asked for in a form that can always be split back into fields:

* ``--parsable2 --delimiter=<US>``: fields are separated by the ASCII unit separator
  (0x1F), a byte nobody types into a job name or a shell command, so a ``|`` inside a
  submit line is just text. sacct has accepted any delimiter string since long before 21.08.
* The free-text fields (WorkDir, JobName, SubmitLine) come last, SubmitLine very last: a
  newline inside it makes a continuation line that the parser glues back on.
* ``TZ=UTC`` and ``SLURM_TIME_FORMAT=standard`` in sacct's environment: times come out as
  ISO 8601 in UTC whatever the site's locale or the user's own SLURM_TIME_FORMAT, and the
  window bounds we pass are read in UTC too. No DST hour is ambiguous.
* ``--noconvert``: sizes in their base unit (MaxRSS in bytes, ReqMem in MiB), not rounded.
* No ``-X``: steps are wanted. No ``--state``: with ``-S``/``-E`` alone sacct returns every
  job that was eligible or running at some time inside the window, which is what an
  incremental import needs (a job still running is returned again, and replaced).
* No ``--duplicates``: a requeued job keeps its id; sacct then shows its latest run, the
  one the store keeps (one row per job id).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import UTC, datetime

from watcher.slurm.call import SlurmCommandError

DELIMITER = "\x1f"

# The fields requested, in output order. Free text last (see the module docstring).
FIELDS: tuple[str, ...] = (
    "JobID", "JobIDRaw", "Cluster", "User", "UID", "Account", "Partition", "QOS",
    "State", "ExitCode", "Submit", "Start", "End", "ElapsedRaw", "Timelimit",
    "NNodes", "NCPUS", "ReqCPUS", "NTasks", "ReqMem", "AllocTRES", "ReqTRES", "NodeList",
    "TotalCPU", "UserCPU", "SystemCPU", "MaxRSS", "MaxRSSNode", "AveRSS",
    "WorkDir", "JobName", "SubmitLine",
)  # fmt: skip

# Environment that makes sacct's output independent of the caller's settings.
SACCT_ENV = {
    "TZ": "UTC",
    "SLURM_TIME_FORMAT": "standard",
    # A pending array's JobID ("12_[3-999%10]") is cut at 64 bytes unless this is 0.
    "SLURM_BITSTR_LEN": "0",
}


class SacctError(SlurmCommandError):
    """sacct was not found, could not be run, timed out, or failed."""


def sacct_time(moment: datetime) -> str:
    """A window bound as sacct reads it under TZ=UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def sacct_arguments(start: datetime, end: datetime, *, user: str | None = None) -> list[str]:
    """The arguments of one sacct call for the window [start, end].

    ``user=None`` asks for every user's jobs (``--allusers``; sacct returns only the
    caller's own jobs to a plain user when the site sets PrivateData=jobs); a user name
    asks for that user's jobs only.
    """
    who = ["--allusers"] if user is None else [f"--user={user}"]
    return [
        "--parsable2",
        f"--delimiter={DELIMITER}",
        "--noconvert",
        *who,
        f"--starttime={sacct_time(start)}",
        f"--endtime={sacct_time(end)}",
        f"--format={','.join(FIELDS)}",
    ]


def sacct_command(
    sacct: str, start: datetime, end: datetime, *, user: str | None = None
) -> list[str]:
    """The whole argv (the configured ``sacct`` split into words first), for :func:`shell_line`."""
    return [*shlex.split(sacct), *sacct_arguments(start, end, user=user)]


def shell_line(argv: Sequence[str]) -> str:
    """argv as a bash command line an admin can paste, with the delimiter spelled $'\\x1f'."""
    env = " ".join(f"{k}={v}" for k, v in SACCT_ENV.items())
    words = []
    for word in argv:
        if DELIMITER in word:
            words.append(shlex.quote(word.replace(DELIMITER, "")) + "$'\\x1f'")
        else:
            words.append(shlex.quote(word))
    return f"{env} {' '.join(words)}"
