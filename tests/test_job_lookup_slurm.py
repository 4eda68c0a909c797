"""``turingwatch job`` and ``jobs`` on real jobs of the local Slurm cluster.

Three jobs as the test user: one that holds 4 cores and keeps one busy (watched by
``turingwatch run``, so it has samples), one that exits 3, one its shell kills with SIGSEGV.
The test does what a site does (load the spools, import the accounting with sacct), then looks
the jobs up with the commands, read-only, and compares with what sacct itself says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.slurm_helpers import SlurmCluster, parse_duration
from watcher.accounting.importer import import_accounting
from watcher.cli import cli
from watcher.config import load_config
from watcher.store import Store
from watcher.store.spool_loader import load_output_dir

pytestmark = pytest.mark.slurm

# 65 s: the CPU rules judge jobs of a minute or more (rules.toml min_runtime_s)
BUSY = "import time\nend = time.monotonic() + 65\nwhile time.monotonic() < end:\n    pass\n"


@pytest.fixture(scope="module")
def imported(slurm_cluster: SlurmCluster, turingwatch_command, user_can_run_turingwatch,
             tmp_path_factory):
    started = datetime.now(UTC) - timedelta(seconds=5)
    jobs = {}
    waster = slurm_cluster.make_job_dir("lookup-waster-")
    (waster / "busy.py").write_text(BUSY)
    watch = turingwatch_command.shell("run", "--interval", "2", "--output", f"{waster}/out",
                                      "--quiet")
    jobs["waster"] = (waster, slurm_cluster.sbatch(
        f"#!/bin/sh\ncd {waster}\n{watch} -- {sys.executable} {waster}/busy.py\n",
        "-c", "4", "--time=5", "--job-name", "lookup-waster", cwd=waster, as_user=True))
    failing = slurm_cluster.make_job_dir("lookup-exit3-")
    jobs["exit3"] = (failing, slurm_cluster.sbatch(
        "#!/bin/sh\nsleep 2\nexit 3\n", "-c", "1", "--time=5", "--job-name", "lookup-exit3",
        cwd=failing, as_user=True))
    killed = slurm_cluster.make_job_dir("lookup-segv-")
    jobs["segv"] = (killed, slurm_cluster.sbatch(
        "#!/bin/sh\nsleep 2\nkill -SEGV $$\n", "-c", "1", "--time=5", "--job-name", "lookup-segv",
        cwd=killed, as_user=True))
    rows = {name: slurm_cluster.wait(job_id, timeout=600) for name, (_, job_id) in jobs.items()}
    path = tmp_path_factory.mktemp("lookup") / "site.duckdb"
    config = load_config(None, environ={})
    with Store(path) as store:
        load_output_dir(store, waster / "out")
        with pytest.MonkeyPatch.context() as env:  # sacct finds the cluster by it
            env.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
            import_accounting(store, config, started, datetime.now(UTC) + timedelta(minutes=1))
    return path, {name: job_id for name, (_, job_id) in jobs.items()}, rows


def look(path: Path, *args: str):
    done = CliRunner().invoke(cli, [*args, "--store", str(path)], env={})
    assert done.exit_code == 0, done.output
    return done.output


def test_the_waster_shows_its_idle_cores_per_node(imported):
    path, ids, rows = imported
    sacct = rows["waster"][str(ids["waster"])]
    report = json.loads(look(path, "job", str(ids["waster"]), "--format", "json"))
    assert report["state"] == "COMPLETED" and report["end"]["bad"] is False
    assert report["cores"] == 4 and report["elapsed_s"] == parse_duration(sacct["Elapsed"])
    # one busy core of four, as sacct's TotalCPU says it (within what a shared machine gives)
    expected = parse_duration(sacct["TotalCPU"]) / (parse_duration(sacct["Elapsed"]) * 4)
    assert report["cpu_efficiency"] == pytest.approx(expected, abs=0.02)
    # at most one core of four; less where the two cores of this machine are shared
    assert 0.05 < report["cpu_efficiency"] < 0.3
    assert report["time_efficiency"] == pytest.approx(report["elapsed_s"] / 300)
    assert report["sampled"] and [n["node"] for n in report["per_node"]]
    assert report["per_node"][0]["cores"] == 4 and report["per_node"][0]["samples"] >= 5
    assert report["analysis"]["status"] == "judged now"
    assert {f["rule"] for f in report["findings"]} & {"low_concurrency", "cpu_underuse"}
    text = look(path, "job", str(ids["waster"]))
    assert "Per node: (sampled by the watcher)" in text and "accounting only" not in text


def test_the_failures_by_exit_code_and_signal(imported):
    path, ids, rows = imported
    assert rows["exit3"][str(ids["exit3"])]["ExitCode"] == "3:0"
    exit3 = json.loads(look(path, "job", str(ids["exit3"]), "--format", "json"))
    assert exit3["end"]["text"] == "FAILED, exit code 3" and exit3["exit_code"] == 3
    segv = json.loads(look(path, "job", str(ids["segv"]), "--format", "json"))
    assert segv["state"] == "FAILED" and segv["signal"] == "SIGSEGV"
    assert segv["end"]["text"] == "FAILED, killed by SIGSEGV" and segv["end"]["bad"]
    text = look(path, "job", str(ids["segv"]))
    assert "State:    FAILED, killed by SIGSEGV" in text
    assert "judged from accounting only (no samples)" in text


def test_jobs_lists_all_three_with_their_efficiency(imported, slurm_cluster):
    path, ids, _ = imported
    listed = json.loads(look(path, "jobs", "--all-users", "--name", "lookup-*", "--format",
                             "json", "--limit", "1000"))
    mine = {j["job_id"]: j for j in listed if j["job_id"] in ids.values()}
    assert set(mine) == set(ids.values())
    assert mine[ids["exit3"]]["end_text"] == "FAILED, exit code 3"
    assert mine[ids["segv"]]["end_text"] == "FAILED, killed by SIGSEGV"
    waster = mine[ids["waster"]]
    assert waster["user_name"] == slurm_cluster.user and waster["ncpus"] == 4
    assert waster["idle_core_hours"] == pytest.approx(
        (waster["elapsed_s"] * 4 - waster["total_cpu_s"]) / 3600)
    failed = json.loads(look(path, "jobs", "--all-users", "--state", "FAILED", "--format", "json",
                             "--limit", "1000"))
    assert {ids["exit3"], ids["segv"]} <= {j["job_id"] for j in failed}
    assert ids["waster"] not in {j["job_id"] for j in failed}


def test_the_test_user_may_not_look_at_roots_list(imported, slurm_cluster, turingwatch_command):
    path, ids, _ = imported
    readable = slurm_cluster.make_job_dir("lookup-store-") / "site.duckdb"
    readable.write_bytes(path.read_bytes())
    readable.chmod(0o644)
    as_user = [*slurm_cluster.as_user_prefix(), *turingwatch_command.argv]
    env = {**slurm_cluster.user_env(), **turingwatch_command.env,
           "TURINGWATCH_STORE_PATH": str(readable)}
    own = subprocess.run([*as_user, "job", str(ids["exit3"])], env=env, cwd="/",
                         capture_output=True, text=True, timeout=120)
    assert own.returncode == 0, own.stderr
    assert "FAILED, exit code 3" in own.stdout
    others = subprocess.run([*as_user, "jobs", "--user", "root"], env=env, cwd="/",
                            capture_output=True, text=True, timeout=120)
    assert others.returncode == 1 and "only root and web.admin_users" in others.stderr
    os.unlink(readable)
