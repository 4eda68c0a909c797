"""Memory as the kernel charges it, in a real Slurm job (docs/slurm-lab.md).

The lab cluster runs proctrack/linuxproc without cgroups, so the watcher sums PSS there; Slurm's
own MaxRSS (jobacct_gather/linux) is the RSS sum, which counts the pages a forked worker shares
with its parent once per process.
"""

from __future__ import annotations

import json

import pytest

from tests.slurm_helpers import SlurmCluster, parse_size
from tests.test_memory import FORKING_JOB

pytestmark = pytest.mark.slurm
MiB = 2**20


@pytest.mark.usefixtures("user_can_run_turingwatch")
def test_a_fork_sharing_job_reports_its_pss_not_its_rss_sum(slurm_cluster: SlurmCluster,
                                                           turingwatch_command):
    job_dir = slurm_cluster.make_job_dir("memory-")
    (job_dir / "job.py").write_text(FORKING_JOB)
    python = turingwatch_command.argv[0]
    watch = turingwatch_command.shell("run", "--interval", "0.5", "--output", f"{job_dir}/out")
    script = f"#!/bin/sh\ncd {job_dir}\n{watch} -- {python} job.py shared 200 5\n"

    job = slurm_cluster.run_job(script, "-J", "tw-forkshare", "-c", "2", "--mem=1G", cwd=job_dir,
                                as_user=True)

    assert job.job["State"] == "COMPLETED", job.output[-3000:]
    summary = json.loads((job_dir / "out/summary.json").read_text())
    footprint = json.loads((job_dir / "footprint.json").read_text())   # measured by the job itself
    batch = {step["step"]: step for step in summary["steps"]}["batch"]
    shown = (f"turingwatch {summary['peak_memory_bytes'] / MiB:.1f} MiB ({summary['memory_source']}),"
             f" the job's PSS {footprint['pss'] / MiB:.1f} MiB, RSS sum {summary['peak_rss_bytes'] / MiB:.1f} MiB")
    assert summary["memory_source"] == batch["memory_source"] == "pss", shown
    assert abs(summary["peak_memory_bytes"] - footprint["pss"]) <= 0.1 * footprint["pss"], shown
    assert summary["peak_rss_bytes"] >= 550 * MiB, shown          # the RSS sum, kept as it was
    assert summary["mem_used_share"] == pytest.approx(summary["peak_memory_bytes"] / 2**30, abs=1e-3)
    # Slurm's MaxRSS sums RSS too: it counts the shared 200 MiB three times.
    max_rss = job.step("batch").get("MaxRSS")
    if max_rss:
        assert parse_size(max_rss) >= 2 * summary["peak_memory_bytes"], shown
    assert "PSS: shared pages split" in job.output and "RSS summed over processes" in job.output
    assert not any(f["rule"] == "memory_oversubscription" for f in summary["findings"] or [])
