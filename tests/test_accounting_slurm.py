"""``import-accounting`` against the real local cluster's sacct (scripts/slurm-cluster.sh).

The jobs are submitted here; what the importer stores is compared with sacct's own rows as
the test helpers read them (tests/slurm_helpers.py, independent of turingwatch).
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.slurm_helpers import SlurmCluster, is_final, parse_duration
from watcher.accounting.importer import import_accounting
from watcher.config import load_config
from watcher.store import Store

pytestmark = pytest.mark.slurm


@pytest.fixture
def slurm_env(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """sacct and scontrol, as the importer runs them, find the test cluster."""
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    return slurm_cluster


def _rows(store: Store, sql: str, params: list) -> list[dict]:
    cur = store.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _wait_array(cluster: SlurmCluster, job_id: int, tasks: int, timeout: float = 120) -> None:
    """Wait until sacct has the final record of every task of an array (and its steps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = cluster.sacct(job_id)
        finals = [r for r in rows.values() if is_final(r)]
        if len([r for r in rows if "." not in r]) == tasks and len(finals) == len(rows):
            return
        time.sleep(0.5)
    raise TimeoutError(f"array {job_id} did not finish within {timeout:.0f} s")


def test_admin_import_of_real_jobs(slurm_env, tmp_path):
    cluster = slurm_env
    job_dir = cluster.make_job_dir("accounting-")
    since = datetime.now(UTC) - timedelta(seconds=5)
    done = cluster.run_job("#!/bin/sh\necho hello\n", "-J", "tw-acct-ok", cwd=job_dir)
    failed = cluster.run_job("#!/bin/sh\nexit 3\n", "-J", "tw-acct-fail", cwd=job_dir)
    steps = cluster.run_job(
        "#!/bin/sh\nsrun -n1 sleep 1\nsrun -n1 true\n", "-J", "tw-acct-steps", cwd=job_dir
    )
    array = cluster.sbatch("#!/bin/sh\nsleep 1\n", "-J", "tw-acct-array", "--array=0-1",
                           cwd=job_dir)  # fmt: skip
    _wait_array(cluster, array, tasks=2)

    config = load_config(environ={})
    with Store(tmp_path / "store.duckdb") as store:
        result = import_accounting(store, config, since, datetime.now(UTC) + timedelta(seconds=5))
        assert result.as_user is None and result.cluster == "turingwatch"

        (ok,) = _rows(store, "SELECT * FROM jobs WHERE job_id = ?", [done.job_id])
        assert (ok["state"], ok["exit_code"], ok["job_name"]) == ("COMPLETED", 0, "tw-acct-ok")
        assert ok["user_name"] == "root" and ok["end_time"] is not None
        assert ok["elapsed_s"] == parse_duration(done.job["Elapsed"])
        assert ok["submit_line"].startswith("sbatch ")

        (bad,) = _rows(store, "SELECT * FROM jobs WHERE job_id = ?", [failed.job_id])
        assert (bad["state"], bad["exit_code"], bad["exit_signal"]) == ("FAILED", 3, 0)

        names = {r["step"] for r in _rows(
            store, "SELECT step FROM job_steps WHERE job_id = ?", [steps.job_id])}  # fmt: skip
        assert {"batch", "0", "1"} <= names
        total = _rows(store, "SELECT total_cpu_s FROM jobs WHERE job_id = ?", [steps.job_id])
        assert total[0]["total_cpu_s"] == pytest.approx(
            parse_duration(steps.job["TotalCPU"]), abs=0.001
        )

        tasks = _rows(
            store,
            "SELECT job_id_display, array_task_id FROM jobs WHERE array_job_id = ?"
            " ORDER BY array_task_id",
            [array],
        )
        assert [(t["job_id_display"], t["array_task_id"]) for t in tasks] == [
            (f"{array}_0", 0), (f"{array}_1", 1),
        ]  # fmt: skip

        again = import_accounting(store, config, since, datetime.now(UTC) + timedelta(seconds=5))
        assert again.jobs == result.jobs
        assert store.execute(
            "SELECT count(*) FROM jobs WHERE job_id IN (?, ?, ?)",
            [done.job_id, failed.job_id, steps.job_id],
        ).fetchone()[0] == 3


def test_a_running_job_is_updated_when_it_has_finished(slurm_env, tmp_path):
    cluster = slurm_env
    job_dir = cluster.make_job_dir("accounting-")
    since = datetime.now(UTC) - timedelta(seconds=5)
    job_id = cluster.sbatch("#!/bin/sh\nsleep 8\n", "-J", "tw-acct-run", cwd=job_dir)
    deadline = time.monotonic() + 60
    while cluster.sacct(job_id).get(str(job_id), {}).get("State") != "RUNNING":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.5)

    config = load_config(environ={})
    with Store(tmp_path / "store.duckdb") as store:
        import_accounting(store, config, since)
        (running,) = _rows(store, "SELECT * FROM jobs WHERE job_id = ?", [job_id])
        assert (running["state"], running["end_time"]) == ("RUNNING", None)

        cluster.wait(job_id)
        # Incremental: no --since, the run starts where the last one ended (less the overlap).
        import_accounting(store, config)
        (finished,) = _rows(store, "SELECT * FROM jobs WHERE job_id = ?", [job_id])
        assert finished["state"] == "COMPLETED" and finished["end_time"] is not None
        assert store.execute("SELECT count(*) FROM accounting_imports").fetchone()[0] == 2


@pytest.mark.usefixtures("user_can_run_turingwatch")
def test_a_plain_user_imports_their_own_jobs(slurm_env, turingwatch_command):
    cluster = slurm_env
    job_dir = cluster.make_job_dir("accounting-")
    mine = cluster.run_job("#!/bin/sh\ntrue\n", "-J", "tw-acct-alice", cwd=job_dir, as_user=True)
    root = cluster.run_job("#!/bin/sh\ntrue\n", "-J", "tw-acct-root", cwd=job_dir)

    store_path = Path(job_dir) / "alice.duckdb"
    config = Path(job_dir) / "tw.toml"
    config.write_text(f'[store]\npath = "{store_path}"\n')
    config.chmod(0o644)
    run = subprocess.run(
        [*cluster.as_user_prefix(), *turingwatch_command.argv, "--config", str(config),
         "import-accounting"],  # a first import: the last slurm.import_first_days
        env={**cluster.user_env(), **turingwatch_command.env},
        cwd="/", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"({cluster.user}) in" in run.stdout

    with Store(store_path, read_only=True) as store:
        users = {r[0] for r in store.execute("SELECT DISTINCT user_name FROM jobs").fetchall()}
        ids = {r[0] for r in store.execute("SELECT job_id FROM jobs").fetchall()}

        def said() -> str:  # asked only when an assertion fails
            return (f"import said:\n{run.stdout}{run.stderr}\n"
                    f"{cluster.user}'s own sacct for the last 8 days:\n{_sacct_as_user(cluster)}")

        assert users == {cluster.user}, said()
        assert mine.job_id in ids and root.job_id not in ids, said()
        (as_user,) = store.execute("SELECT DISTINCT as_user FROM accounting_imports").fetchone()
        assert as_user == cluster.user


def _sacct_as_user(cluster: SlurmCluster) -> str:
    """What sacct itself tells the test user about their recent jobs (for failure messages)."""
    done = subprocess.run(
        [*cluster.as_user_prefix(), "sacct", "-X", "--parsable2", "--starttime=now-8days",
         "--endtime=now", "--format=JobID,User,State,Submit,Eligible,Start,End"],
        env={**cluster.user_env(), "TZ": "UTC"}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return done.stdout + done.stderr
