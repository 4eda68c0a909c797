"""The analysis engine on real jobs of the local Slurm cluster, with known behaviour.

Each job runs under ``turingwatch run`` (except the one shorter than a sample, which Slurm alone
sees). The test then does what a site does: loads the jobs' spools into a store, imports their
accounting with sacct, analyses them, and expects exactly the findings their behaviour implies.
reportseff, run on the same jobs, must agree on CPU and memory efficiency.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.slurm_helpers import SlurmCluster
from watcher.accounting.importer import import_accounting
from watcher.analysis.engine import analyze_period, analyze_session
from watcher.analysis.model import Period
from watcher.config import load_config
from watcher.store import Store
from watcher.store.spool_loader import load_output_dir

pytestmark = pytest.mark.slurm

# `work.py KIND SECONDS [MB]`: KIND busy (one core), syscalls (reads from /dev/zero: kernel
# time), grow (allocates MB more memory every second), idle. The process is named after KIND
# unless a name is given with NAME=..., so a Jupyter look-alike is just a renamed busy loop.
WORKLOAD = textwrap.dedent(
    """\
    import os, sys, time

    kind, seconds = sys.argv[1], float(sys.argv[2])
    name = os.environ.get("NAME", kind)
    with open("/proc/self/comm", "w") as comm:
        comm.write(name)
    end = time.monotonic() + seconds
    if kind == "busy":
        while time.monotonic() < end:
            pass
    elif kind == "syscalls":
        buf = bytearray(1 << 20)
        with open("/dev/zero", "rb", buffering=0) as zero:
            while time.monotonic() < end:
                zero.readinto(buf)
    elif kind == "grow":
        held = []
        while time.monotonic() < end:
            held.append(bytearray(int(sys.argv[3]) << 20))
            held[-1][::4096] = b"x" * len(held[-1][::4096])
            time.sleep(0.5)
    """
)

# job -> (sbatch options, command run under turingwatch or None for a bare job, findings)
JOBS: dict[str, tuple[tuple[str, ...], str | None, set[str]]] = {
    # One cause, one finding: low concurrency explains the underuse (docs/analysis.md).
    "one_core_of_four": (("-c", "4", "--time=5"), "busy 75", {"low_concurrency"}),
    "over_memory": (("-c", "1", "--mem=150M", "--time=5"), "grow 60 40",
                    {"memory_oversubscription"}),
    "jupyter": (("-c", "1", "--time=5"), "NAME=jupyter-lab busy 20", {"jupyter_on_compute"}),
    "syscalls": (("-c", "1", "--time=5"), "syscalls 45", {"high_system_time"}),
    "half_minute": (("-c", "1", "--time=60"), "busy 30", {"time_limit_underuse"}),
    "under_a_sample": (("-c", "1", "--time=60"), None, {"time_limit_underuse"}),
}


@pytest.fixture(scope="module")
def finished(slurm_cluster: SlurmCluster, turingwatch_command, user_can_run_turingwatch):
    """Submit every job at once (they share the node), wait for all, return their dirs and ids."""
    started = datetime.now(UTC) - timedelta(seconds=5)
    submitted = {}
    for name, (options, command, _) in JOBS.items():
        job_dir = slurm_cluster.make_job_dir(f"analysis-{name}-")
        (job_dir / "work.py").write_text(WORKLOAD)
        if command is None:
            body = "sleep 1\n"
        else:
            words = command.split()
            env = words.pop(0) + " " if "=" in words[0] else ""
            args = " ".join(words)
            watch = turingwatch_command.shell(
                "run", "--interval", "2", "--output", f"{job_dir}/out", "--quiet"
            )
            body = f"{env}{watch} -- {sys.executable} {job_dir}/work.py {args}\n"
        script = f"#!/bin/sh\ncd {job_dir}\n{body}"
        submitted[name] = (job_dir, slurm_cluster.sbatch(
            script, *options, "--job-name", name, cwd=job_dir, as_user=True))
    for _, job_id in submitted.values():
        slurm_cluster.wait(job_id, timeout=900)
    return started, submitted


@pytest.fixture(scope="module")
def analysed(finished, slurm_cluster: SlurmCluster, tmp_path_factory):
    started, submitted = finished
    config = load_config(None, environ={})
    store = Store(tmp_path_factory.mktemp("analysis") / "site.duckdb")
    for job_dir, _ in submitted.values():
        if (job_dir / "out").is_dir():
            load_output_dir(store, job_dir / "out")
    with pytest.MonkeyPatch.context() as env:  # sacct and scontrol find the cluster by it
        env.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
        import_accounting(store, config, started, datetime.now(UTC) + timedelta(minutes=1))
    period = Period("test", started, datetime.now(UTC) + timedelta(minutes=1))
    reports = analyze_period(store, config, period, user=slurm_cluster.user)
    yield store, config, reports, submitted
    store.close()


def test_each_job_gets_exactly_its_findings(analysed):
    _, _, reports, submitted = analysed
    found: dict[int, set[str]] = {}
    for report in reports:
        for f in report.findings:
            found.setdefault(f.job_id, set()).add(f.rule)
    got = {name: found.get(job_id, set()) for name, (_, job_id) in submitted.items()}
    assert got == {name: expected for name, (_, _, expected) in JOBS.items()}


def test_the_job_shorter_than_a_sample_is_judged_from_accounting(analysed):
    _, _, reports, submitted = analysed
    job_id = submitted["under_a_sample"][1]
    [row] = [j for r in reports for j in r.jobs if j["job_id"] == job_id]
    assert row["samples"] == 0 and row["cpu_source"] == "accounting"


def test_the_report_card_view_agrees_without_accounting(analysed, tmp_path):
    # The in-job report card has only the job's own samples: same rules, same findings.
    _, config, _, submitted = analysed
    job_dir, job_id = submitted["one_core_of_four"]
    with Store(tmp_path / "card.duckdb") as store:
        sessions = [s.session_id for s in load_output_dir(store, job_dir / "out")]
        findings = analyze_session(store, config, sessions)
    assert {(f.rule, f.step) for f in findings} == {("low_concurrency", "batch")}
    assert {f.job_id for f in findings} == {job_id}
    # From samples alone, the busy cores agree with Slurm's CPU efficiency (TotalCPU) within 3
    # points of the 4 cores. The exact value depends on how much of a real core the busy loop
    # got on this shared machine.
    [finding] = findings
    [row] = [j for r in analysed[2] for j in r.jobs if j["job_id"] == job_id]
    assert row["cpu_source"] == "accounting"
    assert finding.metrics["mean_busy_cores"] / finding.metrics["cores_available"] == pytest.approx(
        row["cpu_efficiency"], abs=0.03)


def _reportseff(slurm_cluster: SlurmCluster, job_ids: list[int]) -> dict[int, dict[str, float]]:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("reportseff")), "--no-color",
         "--format", "JobID,CPUEff,MemEff", *map(str, job_ids)],
        env=slurm_cluster.env, capture_output=True, text=True, check=True, timeout=60,
    )
    out = {}
    for line in done.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3 and re.fullmatch(r"\d+", parts[0]):
            out[int(parts[0])] = {
                "cpu": float(parts[1].rstrip("%")) if parts[1] != "---" else None,
                "mem": float(parts[2].rstrip("%")) if parts[2] != "---" else None,
            }
    return out


def test_cpu_and_memory_efficiency_agree_with_reportseff(analysed, slurm_cluster):
    _, _, reports, submitted = analysed
    ours = {j["job_id"]: j for r in reports for j in r.jobs}
    theirs = _reportseff(slurm_cluster, [job_id for _, job_id in submitted.values()])
    cpu_compared, memory_compared = set(), set()
    for name, (_, job_id) in submitted.items():
        if name == "over_memory":  # killed: see docs/analysis.md (peak sampled vs polled)
            continue
        mine, seff = ours[job_id], theirs[job_id]
        if seff["cpu"] is not None:
            # reportseff truncates TotalCPU to whole seconds: up to 1 s of CPU time lower.
            truncation = 100 / (mine["elapsed_s"] * mine["ncpus"])
            assert 100 * mine["cpu_efficiency"] == pytest.approx(
                seff["cpu"], abs=max(2, truncation + 0.1)
            ), name
            cpu_compared.add(name)
        if seff["mem"] is not None:
            # reportseff divides MaxRSS, an RSS sum, by the request: so does peak_rss_bytes.
            rss_fraction = mine["peak_rss_bytes"] / mine["requested_mem_bytes"]
            assert 100 * rss_fraction == pytest.approx(seff["mem"], abs=2), name
            # memory_fraction is the peak the kernel charged (PSS where sampled: shared pages
            # once, not once per process), never above the RSS sum; it is rounded to 4 places.
            assert mine["memory_fraction"] <= rss_fraction + 1e-4, name
            memory_compared.add(name)
    # A job shorter than a second has no TotalCPU for reportseff to divide.
    assert cpu_compared == {"one_core_of_four", "jupyter", "syscalls", "half_minute"}
    assert memory_compared == set(submitted) - {"over_memory"}
