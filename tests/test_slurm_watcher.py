"""``turingwatch run`` inside real Slurm jobs, checked against Slurm's own accounting.

The cluster polls every second (JobAcctGatherFrequency=task=1) and sums RSS over a step's
processes per poll, as turingwatch sums it per sample: both peaks are peaks of the same sum.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.slurm_helpers import FinishedJob, SlurmCluster, parse_duration, parse_size

pytestmark = pytest.mark.slurm

# A job's workload: hold MEM_MB resident in this process while N children each keep one core
# busy for S seconds (by the wall clock, so the job lasts S seconds however loaded the machine
# is). `work.py NAME S [N [MEM_MB]]`; NAME becomes the comm of every process, so that the
# report's process lists can be told apart.
WORKLOAD = textwrap.dedent(
    """\
    import subprocess, sys, time

    name, seconds = sys.argv[1], float(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    mem_mb = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with open("/proc/self/comm", "w") as comm:
        comm.write(name)
    if workers == 0:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        sys.exit(0)
    held = bytearray(mem_mb << 20)
    held[::4096] = b"x" * len(held[::4096])   # touch every page: resident, not just mapped
    children = [subprocess.Popen([sys.executable, __file__, name, str(seconds), "0"])
                for _ in range(workers)]
    sys.exit(max(child.wait() for child in children))
    """
)

INTERVAL = "0.5"


@pytest.fixture
def job_dir(slurm_cluster: SlurmCluster) -> Path:
    path = slurm_cluster.make_job_dir("watcher-")
    (path / "work.py").write_text(WORKLOAD)
    return path


def _summary(job_dir: Path, job: FinishedJob) -> dict:
    path = job_dir / "out" / "summary.json"
    assert path.is_file(), f"no summary.json; job {job.job_id} printed:\n{job.output[-3000:]}"
    return json.loads(path.read_text())


def _steps(summary: dict) -> dict[str, dict]:
    return {step["step"]: step for step in summary["steps"]}


def _comms(step: dict) -> set[str]:
    return {process["comm"] for process in step["processes"]}


def _script(job_dir: Path, watch: str, workload: str) -> str:
    return f"#!/bin/sh\ncd {job_dir}\n{watch} -- {workload}\n"


def _watch(turingwatch_command, job_dir: Path) -> str:
    """The job script's turingwatch call, up to its ``--``."""
    return turingwatch_command.shell("run", "--interval", INTERVAL, "--output", f"{job_dir}/out")


def test_run_agrees_with_sacct_on_cpu_and_memory(slurm_cluster, turingwatch_command, job_dir):
    python = turingwatch_command.argv[0]
    watch = _watch(turingwatch_command, job_dir)
    script = _script(job_dir, watch, f"{python} work.py tw-busy 20 2 300")

    job = slurm_cluster.run_job(script, "-J", "tw-busy", "-c", "4", "--mem=1G", cwd=job_dir)
    summary = _summary(job_dir, job)

    assert job.job["State"] == "COMPLETED", job.output[-3000:]
    assert summary["job_id"] == job.job_id
    assert summary["exit_code"] == 0
    assert summary["cores_available"] == 4
    assert summary["mem_requested_bytes"] == 1 << 30
    assert summary["elapsed_s"] >= 20

    # Job-level TotalCPU is the sum over the job's steps; here all work is in the batch step.
    # Slurm also counts the watcher's own CPU (~0.5 s), turingwatch does not: never more.
    slurm_cpu = parse_duration(job.job["TotalCPU"])
    our_cpu = summary["cpu_user_s"] + summary["cpu_system_s"]
    compared = f"turingwatch {our_cpu:.2f} CPU-s, sacct TotalCPU {slurm_cpu:.2f} s"
    assert our_cpu == pytest.approx(slurm_cpu, rel=0.05), compared
    assert our_cpu <= slurm_cpu + 0.1, compared
    assert summary["cpu_efficiency"] == pytest.approx(
        our_cpu / (summary["elapsed_s"] * 4), abs=0.02
    )

    # Memory: MaxRSS exists on step rows only; the batch step holds the whole workload.
    # It includes the watcher's own RSS (~20 MB), turingwatch's peak does not.
    slurm_peak = parse_size(job.step("batch")["MaxRSS"])
    batch = _steps(summary)["batch"]
    assert batch["peak_rss_bytes"] == pytest.approx(slurm_peak, rel=0.10), (
        f"turingwatch peak {batch['peak_rss_bytes'] >> 20} MiB, sacct MaxRSS {slurm_peak >> 20} MiB"
    )
    assert summary["peak_rss_bytes"] >= 300 << 20
    assert "tw-busy" in _comms(batch)


def test_processes_of_two_srun_steps_are_attributed_to_their_step(
    slurm_cluster, turingwatch_command, job_dir
):
    python = turingwatch_command.argv[0]
    (job_dir / "steps.sh").write_text(
        "#!/bin/sh\n"
        f"srun -n1 {python} work.py tw-step0 4 0\n"
        f"srun -n1 {python} work.py tw-step1 4 0\n"
    )
    (job_dir / "steps.sh").chmod(0o755)
    watch = _watch(turingwatch_command, job_dir)
    script = _script(job_dir, watch, "./steps.sh")

    job = slurm_cluster.run_job(script, "-J", "tw-steps", "-n", "1", cwd=job_dir)
    steps = _steps(_summary(job_dir, job))

    assert job.job["State"] == "COMPLETED", job.output[-3000:]
    assert {"batch", "0", "1"} <= steps.keys()
    assert "tw-step0" in _comms(steps["0"]) and "tw-step1" not in _comms(steps["0"])
    assert "tw-step1" in _comms(steps["1"]) and "tw-step0" not in _comms(steps["1"])
    assert not {"tw-step0", "tw-step1"} & _comms(steps["batch"])
    assert "srun" in _comms(steps["batch"])  # the srun client runs in the batch step
    for name in ("0", "1"):
        ours = steps[name]["cpu_user_s"] + steps[name]["cpu_system_s"]
        theirs = parse_duration(job.step(name)["TotalCPU"])
        # A step's last sample may come up to one interval before its end.
        assert ours == pytest.approx(theirs, abs=float(INTERVAL) + 0.25), f"step {name}"


@pytest.mark.usefixtures("user_can_run_turingwatch")
def test_job_of_the_non_root_user(slurm_cluster, turingwatch_command, job_dir):
    python = turingwatch_command.argv[0]
    watch = _watch(turingwatch_command, job_dir)
    script = _script(job_dir, watch, f"{python} work.py tw-alice 3 1 50")

    job = slurm_cluster.run_job(script, "-J", "tw-alice", cwd=job_dir, as_user=True)
    summary = _summary(job_dir, job)

    assert job.job["User"] == slurm_cluster.user
    assert job.job["State"] == "COMPLETED", job.output[-3000:]
    assert summary["job_id"] == job.job_id
    assert (job_dir / "out" / "summary.json").stat().st_uid != 0
    assert "tw-alice" in _comms(_steps(summary)["batch"])
    assert summary["cpu_user_s"] + summary["cpu_system_s"] > 0
    assert summary["peak_rss_bytes"] >= 50 << 20


def test_exit_status_of_the_command_is_the_jobs(slurm_cluster, turingwatch_command, job_dir):
    watch = _watch(turingwatch_command, job_dir)
    script = _script(job_dir, watch, "sh -c 'sleep 1; exit 3'")

    job = slurm_cluster.run_job(script, "-J", "tw-exit3", cwd=job_dir)

    assert job.job["State"] == "FAILED"
    assert job.job["ExitCode"] == "3:0"
    assert _summary(job_dir, job)["exit_code"] == 3
    assert (job_dir / "out" / "report.html").is_file()
    assert (job_dir / "out" / "turingwatch.duckdb").is_file()


def test_a_job_killed_at_its_time_limit_still_leaves_its_report(
    slurm_cluster, turingwatch_command, job_dir
):
    watch = _watch(turingwatch_command, job_dir)
    script = _script(job_dir, watch, "sleep 600")

    job = slurm_cluster.run_job(script, "-J", "tw-timeout", "-t", "1", cwd=job_dir, timeout=400)

    assert job.job["State"].startswith("TIMEOUT"), job.job
    # Slurm records the end when the batch shell dies; the watcher writes on for a moment
    # (KillWait, 5 s on this cluster, until SIGKILL: the card comes before report.html).
    out_file = job_dir / f"slurm-{job.job_id}.out"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        (job_dir / "out" / "summary.json").exists() and "report card" in out_file.read_text()
    ):
        time.sleep(0.2)
    summary = _summary(job_dir, job)
    assert summary["exit_signal"] == 15  # SIGTERM, passed on to the command
    assert summary["time_limit_s"] == 60 and summary["time_limit_share"] >= 0.99
    output = out_file.read_text()
    assert "turingwatch report card" in output and "of 00:01:00 limit" in output
    assert summary["state"] == "TIMEOUT" and "  ✖ TIMEOUT after 00:01:" in output
