"""``turingwatch attach`` on the real local cluster: beside the batch host's run, and from outside."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.slurm_helpers import SlurmCluster

pytestmark = pytest.mark.slurm

BUSY = textwrap.dedent(
    """\
    import sys, time
    with open("/proc/self/comm", "w") as comm:
        comm.write(sys.argv[1])
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        pass
    """
)


@pytest.fixture
def job_dir(slurm_cluster: SlurmCluster) -> Path:
    path = slurm_cluster.make_job_dir("attach-")
    (path / "busy.py").write_text(BUSY)
    return path


def test_one_attach_per_node_and_the_batch_hosts_card_covers_them(
    slurm_cluster, turingwatch_command, job_dir
):
    # One node here: the "other node" is the same machine under another name, which is all the
    # protocol needs (its own spool and lock, the STOP file, the batch host merging spools).
    python = turingwatch_command.argv[0]
    attach = turingwatch_command.shell("attach", "--interval", "0.5", "--output", f"{job_dir}/out")
    run = turingwatch_command.shell("run", "--interval", "0.5", "--output", f"{job_dir}/out")
    script = (
        f"#!/bin/sh\ncd {job_dir}\n"
        f"srun --overlap -n1 env SLURMD_NODENAME=peer1 {attach} &\n"
        f"sleep 1\n"
        f"{run} -- {python} busy.py tw-multi 4\n"
        "status=$?\nwait\nexit $status\n"
    )
    started = time.monotonic()
    job = slurm_cluster.run_job(script, "-J", "tw-attach", "-n", "2", cwd=job_dir)
    assert job.job["State"] == "COMPLETED", job.output[-3000:]

    summary = json.loads((job_dir / "out" / "summary.json").read_text())
    nodes = {n["node"]: n for n in summary["nodes"]}
    assert "peer1" in nodes and len(nodes) == 2, nodes
    assert {n["mode"] for n in nodes.values()} == {"run", "attach"}
    assert all(n["samples"] >= 3 for n in nodes.values())
    assert summary["cores_available"] == sum(n["cores_available"] for n in nodes.values())
    assert "tw-multi" in {p["comm"] for p in summary["top_processes"]}
    # attach finished on the batch host's STOP file, not by waiting for the job's end.
    peer_spool = next(p for p in (job_dir / "out" / "spool").glob("peer1.*.jsonl"))
    end = json.loads(peer_spool.read_text().splitlines()[-1])
    assert end["k"] == "end" and end["end"]["ended_by"] == "batch host finished"
    assert time.monotonic() - started < 120


def test_attach_from_outside_the_job(slurm_cluster, turingwatch_command, job_dir):
    python = turingwatch_command.argv[0]
    job_id = slurm_cluster.sbatch(f"#!/bin/sh\ncd {job_dir}\n{python} busy.py tw-outside 5\n",
                                  "-J", "tw-outside", cwd=job_dir)
    deadline = time.monotonic() + 240
    while True:  # wait until it runs (the one node may be busy with other tests' jobs)
        state = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], env=slurm_cluster.env,
                               capture_output=True, text=True).stdout.strip()
        if state == "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert state == "RUNNING"
    done = subprocess.run(
        [*turingwatch_command.argv, "attach", "--job", str(job_id), "--interval", "0.5",
         "--output", str(job_dir / "outside")],
        env={**slurm_cluster.env, **turingwatch_command.env}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"job {job_id}" in done.stderr and "turingwatch report card" in done.stderr
    summary = json.loads((job_dir / "outside" / "summary.json").read_text())
    batch = {s["step"]: s for s in summary["steps"]}["batch"]
    assert "tw-outside" in {p["comm"] for p in batch["processes"]}
    assert batch["cpu_user_s"] > 1
    slurm_cluster.wait(job_id)
