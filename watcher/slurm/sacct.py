"""Running ``sacct`` (and ``scontrol`` for the cluster name) the way the importer needs it.

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

import os
import shlex
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime

from watcher.errors import SlurmError

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


class SacctError(SlurmError):
    """sacct or scontrol could not be run, or failed."""


def sacct_time(moment: datetime) -> str:
    """A window bound as sacct reads it under TZ=UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def sacct_command(
    sacct: str, start: datetime, end: datetime, *, user: str | None = None
) -> list[str]:
    """The argv of one sacct call for the window [start, end].

    ``user=None`` asks for every user's jobs (``--allusers``; sacct returns only the
    caller's own jobs to a plain user when the site sets PrivateData=jobs); a user name
    asks for that user's jobs only.
    """
    who = ["--allusers"] if user is None else [f"--user={user}"]
    return [
        *shlex.split(sacct),
        "--parsable2",
        f"--delimiter={DELIMITER}",
        "--noconvert",
        *who,
        f"--starttime={sacct_time(start)}",
        f"--endtime={sacct_time(end)}",
        f"--format={','.join(FIELDS)}",
    ]


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


def _run(argv: Sequence[str], what: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except FileNotFoundError:
        raise SacctError(
            f"{argv[0]} not found: install the Slurm client or set slurm.{what}"
        ) from None
    except OSError as exc:
        raise SacctError(f"cannot run {argv[0]}: {exc.strerror}") from None
    stderr = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        tail = stderr.splitlines()[-3:] if stderr else ["(no message)"]
        raise SacctError(f"{what} failed (exit {done.returncode}): {' / '.join(tail)}")
    # Submit lines are whatever bytes the user typed; never fail on their encoding.
    return done.stdout.decode("utf-8", "replace")


def run_sacct(argv: Sequence[str]) -> str:
    """sacct's output (header line first) for a command from :func:`sacct_command`."""
    return _run(argv, "sacct", SACCT_ENV)


def slurm_cluster_name(scontrol: str) -> str:
    """ClusterName from ``scontrol show config``."""
    out = _run([*shlex.split(scontrol), "show", "config"], "scontrol")
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "ClusterName" and value.strip():
            return value.strip()
    raise SacctError("scontrol show config names no ClusterName; set slurm.cluster")
