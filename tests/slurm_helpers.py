"""Drive the real local Slurm cluster from tests: start it, submit jobs, read sacct.

The cluster is the one ``scripts/slurm-cluster.sh`` runs. Nothing here imports turingwatch: the
tests compare turingwatch's numbers with Slurm's own, read independently.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = "/tmp/turingwatch-slurm"
REQUIRE_ENV = "TURINGWATCH_TEST_REQUIRE_SLURM"
# What sacct says once a job has ended; anything else means "not yet".
FINAL_STATES = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
                "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT")
# Fields the tests read; none holds free text, so one row is one line and '|' splits it.
SACCT_FIELDS = ("JobID", "JobIDRaw", "User", "State", "ExitCode", "Elapsed", "NCPUS", "ReqMem",
                "TotalCPU", "UserCPU", "SystemCPU", "MaxRSS", "AveRSS", "Start", "Eligible", "End")
_UNSET = ("", "Unknown", "None")


class ClusterUnavailable(RuntimeError):
    """The cluster is not running and could not be started."""


@dataclass(frozen=True)
class FinishedJob:
    job_id: int
    output: str                   # the job's stdout and stderr (sbatch --output)
    rows: dict[str, dict[str, str]]  # sacct rows by JobID: "12", "12.batch", "12.0", ...

    @property
    def job(self) -> dict[str, str]:
        return self.rows[str(self.job_id)]

    def step(self, name: str) -> dict[str, str]:
        """The sacct row of step ``name`` ("batch", "0", ...)."""
        return self.rows[f"{self.job_id}.{name}"]


@dataclass
class SlurmCluster:
    """A running cluster: its client environment, test user and a shared scratch dir."""

    repo_root: Path
    state_dir: Path
    user: str
    env: dict[str, str] = field(repr=False)

    @property
    def work_dir(self) -> Path:
        """World-writable (sticky) dir on the node where jobs of every user may write."""
        return self.state_dir / "work"

    def make_job_dir(self, prefix: str = "job-") -> Path:
        """A fresh dir under :attr:`work_dir` that the test user may write to."""
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_dir))
        path.chmod(0o777)
        return path

    def user_env(self) -> dict[str, str]:
        """A login-like environment for the test user, so root's own PATH and HOME (pyenv under
        /root) do not leak into that user's jobs through sbatch's --export=ALL."""
        return {
            "HOME": f"/home/{self.user}",
            "USER": self.user,
            "LOGNAME": self.user,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "SLURM_CONF": self.env["SLURM_CONF"],
        }

    def as_user_prefix(self) -> list[str]:
        """Command prefix that runs the rest as the test user (root only)."""
        # By absolute path: the user's environment has no /usr/sbin in PATH.
        return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", self.user, "--"]

    def sbatch(self, script: str, *options: str, cwd: Path, as_user: bool = False) -> int:
        """Write ``script`` to ``cwd``/job.sh and submit it; returns the job id.

        Output goes to ``cwd``/slurm-<id>.out. ``as_user``: submitted by the non-root test user.
        """
        path = cwd / "job.sh"
        path.write_text(script)
        path.chmod(0o755)
        argv = ["sbatch", "--parsable", f"--output={cwd}/slurm-%j.out", *options, str(path)]
        env = self.env
        if as_user:
            argv = [*self.as_user_prefix(), *argv]
            env = self.user_env()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch failed ({done.returncode}): {done.stderr.strip()}")
        return int(done.stdout.strip().split(";")[0])

    def wait(self, job_id: int, timeout: float = 300) -> dict[str, dict[str, str]]:
        """Wait until sacct has the job's final record (all its steps); return the rows.

        ``timeout`` includes the time in the queue, behind other jobs on the one node."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sacct(job_id)
            job = rows.get(str(job_id))
            # The job row ends first; steps follow within a second or two.
            if job and is_final(job) and all(is_final(row) for row in rows.values()):
                return rows
            time.sleep(0.5)
        subprocess.run(["scancel", str(job_id)], env=self.env, check=False)
        raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f} s")

    def run_job(
        self, script: str, *options: str, cwd: Path, as_user: bool = False, timeout: float = 300
    ) -> FinishedJob:
        """Submit ``script``, wait for it to end, return its output and sacct rows."""
        job_id = self.sbatch(script, *options, cwd=cwd, as_user=as_user)
        rows = self.wait(job_id, timeout)
        output = (cwd / f"slurm-{job_id}.out").read_text(errors="replace")
        return FinishedJob(job_id, output, rows)

    def sacct(self, job_id: int) -> dict[str, dict[str, str]]:
        """sacct rows of one job and its steps, keyed by JobID."""
        done = subprocess.run(
            ["sacct", "--parsable2", "--noheader", "--duplicates", "-j", str(job_id),
             "-o", ",".join(SACCT_FIELDS)],
            env=self.env, capture_output=True, text=True, check=True, timeout=30,
        )
        rows = (dict(zip(SACCT_FIELDS, line.split("|"), strict=True))
                for line in done.stdout.splitlines() if line)
        return {row["JobID"]: row for row in rows}


def is_final(row: dict[str, str]) -> bool:
    """Ended, and stored whole: slurmdbd gets the eligible time of a job that started at once
    seconds after its end, and until then sacct's time windows (the importer's) leave it out."""
    if row["State"].split()[0] not in FINAL_STATES or row["End"] in _UNSET:
        return False
    return row["Start"] in _UNSET or row["Eligible"] not in _UNSET


def connect(repo_root: Path) -> SlurmCluster:
    """The running cluster, started first when it is down and we are root."""
    state_dir = Path(os.environ.get("TURINGWATCH_TEST_SLURM_DIR", DEFAULT_STATE_DIR))
    script = repo_root / "scripts" / "slurm-cluster.sh"
    status = subprocess.run([script, "status"], capture_output=True, text=True)
    if status.returncode != 0:
        if os.geteuid() != 0:
            raise ClusterUnavailable("the cluster is down and starting it needs root")
        start = subprocess.run([script, "start"], capture_output=True, text=True, timeout=600)
        if start.returncode != 0:
            tail = "\n".join(start.stderr.strip().splitlines()[-5:])
            raise ClusterUnavailable(f"scripts/slurm-cluster.sh start failed:\n{tail}")
    env = dict(os.environ, SLURM_CONF=str(state_dir / "etc" / "slurm.conf"))
    user = os.environ.get("TURINGWATCH_TEST_SLURM_USER", "alice")
    return SlurmCluster(repo_root, state_dir, user, env)


# --- Slurm's number formats -------------------------------------------------------------

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """sacct memory ("132652K", "0.05M", "1G") in bytes; a bare number is bytes."""
    match = re.fullmatch(r"([\d.]+)([KMGT]?)", text.strip())
    if not match:
        raise ValueError(f"not a Slurm size: {text!r}")
    return round(float(match[1]) * _UNITS[match[2]])


def parse_duration(text: str) -> float:
    """sacct times ("00:03.280", "01:02:03", "2-01:02:03") in seconds."""
    days, _, clock = text.strip().rpartition("-")
    parts = [float(part) for part in clock.split(":")]
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds + 86400 * int(days or 0)


def shell_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    """``argv`` as one line of shell, with ``env`` assignments in front."""
    assignments = [f"{key}={shlex.quote(value)}" for key, value in (env or {}).items()]
    return " ".join([*assignments, *(shlex.quote(arg) for arg in argv)])
