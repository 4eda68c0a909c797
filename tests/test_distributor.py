"""The distributor: node choice on squeue output the real parsers read, and, on the real
cluster, an allocation next to a user's job, cancelling on SIGTERM, and an error logged once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from watcher.config import DistributorSettings
from watcher.distributor.choose import choose_nodes
from watcher.distributor.loop import Distributor, failure_cause
from watcher.slurm.call import SlurmCommandError
from watcher.slurm.commands import QueuedJob, SlurmCommands, parse_queued, parse_running_per_node

NAME = "tw-scrape"
# squeue -h -t RUNNING -o '%N|%j': n01 runs 3 jobs, n02 2 (one of them a multi-node job), n03 1
# plus a scrape job, which does not make a node busy.
RUNNING = """\
n01|train
n01|train
n[01-02]|mpi|run
n02|eval
n03|post
n03|tw-scrape
(null)|odd
"""


def choose(running: str = RUNNING, own: str = "", sampled: dict[str, float] | None = None,
           *, now: float = 10_000.0, cooldown_s: float = 600, concurrent: int = 4) -> list[str]:
    return choose_nodes(parse_running_per_node(running), parse_queued(own), sampled or {},
                        now=now, job_name=NAME, cooldown_s=cooldown_s, concurrent=concurrent)


def test_running_jobs_are_counted_on_every_node_of_a_job() -> None:
    nodes = parse_running_per_node(RUNNING)
    assert {n: len(v) for n, v in nodes.items()} == {"n01": 3, "n02": 2, "n03": 2}
    assert nodes["n01"][2] == "mpi|run"   # the name is the last column, whatever it holds


def test_busiest_nodes_first_and_own_jobs_do_not_count() -> None:
    assert choose() == ["n01", "n02", "n03"]
    assert choose(concurrent=2) == ["n01", "n02"]
    assert choose("n03|tw-scrape\n") == []   # only a scrape job: not busy


def test_nodes_sampled_within_the_cooldown_are_skipped() -> None:
    assert choose(sampled={"n01": 9_500.0}) == ["n02", "n03"]
    assert choose(sampled={"n01": 9_300.0}) == ["n01", "n02", "n03"]   # 700 s ago
    assert choose(sampled={"n01": 9_999.0}, cooldown_s=0) == ["n01", "n02", "n03"]


def test_nodes_with_an_own_job_are_skipped_and_count_against_concurrency() -> None:
    own = ("11|PENDING|n02||2024-05-01T10:00:00|tw-scrape\n"   # pending: the node it asked for
           "12|RUNNING|n03|n03|2024-05-01T10:00:00|tw-scrape\n")
    assert choose(own=own) == ["n01"]
    assert choose(own=own, concurrent=2) == []
    assert choose(own=own, concurrent=1) == []


class FakeSlurm(SlurmCommands):
    """SlurmCommands whose calls answer from strings and record what was asked."""

    def __init__(self, running: str, own: str = "", sbatch_error: str | None = None) -> None:
        super().__init__(*(["true"] * 6), timeout_s=1, sacct_timeout_s=1)
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "answers", {"running": running, "own": own, "error": sbatch_error})

    def running_per_node(self) -> dict[str, list[str]]:
        return parse_running_per_node(self.answers["running"])

    def queued_jobs(self, name: str, user: str) -> list[QueuedJob]:
        return parse_queued(self.answers["own"])

    def submit(self, args: list[str]) -> int:
        self.calls.append(("sbatch", args))
        if self.answers["error"]:
            raise SlurmCommandError(self.answers["error"], "failed")
        return 100 + len(self.calls)

    def cancel(self, job_ids: list[int]) -> None:
        self.calls.append(("scancel", list(job_ids)))

    def cancel_named(self, name: str, user: str) -> None:
        self.calls.append(("scancel -n", [name, user]))


def test_one_step_submits_to_the_busiest_free_nodes_and_cancels_stale_requests(tmp_path: Path) -> None:
    old = "2024-05-01T10:00:00"
    fake = FakeSlurm(RUNNING, own=f"7|PENDING|n02||{old}|tw-scrape\n")
    settings = DistributorSettings(concurrent=2, partition="mon", qos="monitor", time_s=600,
                                   job_name=NAME)
    dist = Distributor(settings, fake, user="svc", job_command="tw scrape --duration 600",
                       state_dir=tmp_path, clock=lambda: 1_800_000_000.0)
    dist.step()
    assert fake.calls[0] == ("scancel", [7])      # pending for far longer than 120 s
    sbatch = [args for what, args in fake.calls if what == "sbatch"]
    assert [a[1] for a in sbatch] == ["--nodelist=n01", "--nodelist=n02"]
    args = sbatch[0]
    assert {"--job-name=tw-scrape", "--cpus-per-task=1", "--mem=256M", "--time=11",
            "--deadline=now+780", "--partition=mon", "--qos=monitor"} <= set(args)
    assert args[-2:] == ["--wrap", "tw scrape --duration 600"]
    state = json.loads((tmp_path / "distributor.state").read_text())
    assert (state["submitted"], state["cancelled"], state["pending"]) == (2, 1, 2)
    assert set(state["nodes"]) == {"n01", "n02"}
    # A restart keeps the cooldown of the nodes sampled before it.
    again = Distributor(settings, FakeSlurm(RUNNING), user="svc", job_command="x",
                        state_dir=tmp_path, clock=lambda: 1_800_000_060.0)
    again.step()
    assert [a[1] for w, a in again.commands.calls if w == "sbatch"] == ["--nodelist=n03"]


def test_a_slurm_error_is_logged_once_per_cause_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    message = "sbatch failed (exit 1): sbatch: error: invalid partition specified: nope"
    fake = FakeSlurm(RUNNING, sbatch_error=message)
    dist = Distributor(DistributorSettings(cooldown_s=0), fake, user="svc", job_command="x",
                       state_dir=tmp_path)
    for _ in range(3):
        dist.step()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "sbatch: partition" in warnings[0].getMessage()
    state = json.loads((tmp_path / "distributor.state").read_text())
    assert state["loops"] == 3 and state["failures"] == {"sbatch: partition": 9}
    fake.answers["error"] = None
    dist.step()
    assert json.loads((tmp_path / "distributor.state").read_text())["errors"] == {}


def test_failure_causes() -> None:
    def cause(text: str, reason: str = "failed") -> str:
        return failure_cause("sbatch", SlurmCommandError(text, reason))  # type: ignore[arg-type]

    assert cause("Batch job submission failed: Invalid account or account/partition "
                 "combination specified") == "sbatch: account"
    assert cause("Batch job submission failed: Invalid qos specification") == "sbatch: qos"
    assert cause("Batch job submission failed: Requested node configuration is not available") \
        == "sbatch: node"
    assert cause("sbatch timed out after 10 s", "timeout") == "sbatch: timeout"


def test_status_prints_the_state_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from watcher.cli import cli

    dist = Distributor(DistributorSettings(), FakeSlurm(RUNNING), user="svc", job_command="x",
                       state_dir=tmp_path)
    dist.step()
    got = CliRunner().invoke(cli, ["distributor", "--status", "--state-dir", str(tmp_path)])
    assert got.exit_code == 0, got.output
    assert "4 submitted" not in got.output and "3 submitted" in got.output
    assert "node        n01: sampled" in got.output
    missing = CliRunner().invoke(cli, ["distributor", "--status", "--state-dir", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "no distributor has run" in missing.output


# -- on the real cluster -----------------------------------------------------------------

@pytest.fixture
def busy_node(slurm_cluster, user_can_run_turingwatch):  # type: ignore[no-untyped-def]
    """A job of the test user running on the node for the length of one test."""
    job_dir = slurm_cluster.make_job_dir("dist-user-")
    job_id = slurm_cluster.sbatch("#!/bin/sh\nsleep 300\n", "-c", "1", "--mem=100M",
                                  "--job-name=dist-user-job", cwd=job_dir, as_user=True)
    deadline = time.monotonic() + 120
    while _queue_state(slurm_cluster, job_id) != "RUNNING":
        if time.monotonic() > deadline:
            subprocess.run(["scancel", str(job_id)], env=slurm_cluster.env, check=False)
            pytest.skip("the test user's job did not start within 120 s (the node is busy)")
        time.sleep(0.5)
    yield job_id
    subprocess.run(["scancel", str(job_id)], env=slurm_cluster.env, check=False)


def _queue_state(cluster, job_id: int) -> str:  # type: ignore[no-untyped-def]
    done = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], env=cluster.env,
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def _own(cluster, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The jobs named ``name`` that are pending or running (a cancelled one may be COMPLETING)."""
    done = subprocess.run(["squeue", "-h", "-n", name, "-t", "PENDING,RUNNING", "-o", "%i %T"],
                          env=cluster.env,
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.split("\n")[:-1]


def _distributor_env(cluster, name: str, **settings: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, **cluster.env, "PYTHONPATH": str(cluster.repo_root),
           "TURINGWATCH_DISTRIBUTOR_JOB_NAME": name, "TURINGWATCH_DISTRIBUTOR_MEM": "64M"}
    env.update({f"TURINGWATCH_DISTRIBUTOR_{k.upper()}": v for k, v in settings.items()})
    return env


def _stop(proc: subprocess.Popen, cluster, name: str) -> None:  # type: ignore[no-untyped-def]
    """A test's distributor gone and its jobs cancelled, whatever the test did."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    subprocess.run(["scancel", "-n", name], env=cluster.env, check=False)


def _unique() -> str:
    return f"twdist-{uuid.uuid4().hex[:8]}"   # never another test's (or session's) jobs


@pytest.mark.slurm
def test_it_gets_an_allocation_next_to_a_running_job(slurm_cluster, busy_node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name, work = _unique(), slurm_cluster.make_job_dir("dist-")
    marker = work / "scraped"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "watcher", "-v", "distributor", "--once", "--state-dir",
             str(tmp_path), "--scrape-command", f"echo $SLURM_JOB_NODELIST > {marker}"],
            env=_distributor_env(slurm_cluster, name), capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        state = json.loads((tmp_path / "distributor.state").read_text())
        assert state["submitted"] == 1, (state, done.stderr)
        deadline = time.monotonic() + 90
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        node = next(iter(state["nodes"]))
        assert marker.exists(), f"the scrape job never ran: {_own(slurm_cluster, name)}"
        assert marker.read_text().strip() == node
    finally:
        subprocess.run(["scancel", "-n", name], env=slurm_cluster.env, check=False)


@pytest.mark.slurm
def test_sigterm_cancels_its_pending_and_running_jobs(slurm_cluster, busy_node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = _unique()
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "distributor", "--state-dir", str(tmp_path),
         "--scrape-command", "sleep 300"],
        env=_distributor_env(slurm_cluster, name, interval_s="1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not any(line.endswith("RUNNING") for line in _own(slurm_cluster, name)):
            assert time.monotonic() < deadline, f"no running scrape job: {_own(slurm_cluster, name)}"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        # One more of its own jobs, pending (it may not begin for an hour).
        subprocess.run(["sbatch", f"--job-name={name}", "--begin=now+3600", "--output=/dev/null",
                        "--wrap", "true"], env=slurm_cluster.env, check=True, timeout=30,
                       capture_output=True)
        assert len(_own(slurm_cluster, name)) == 2
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert _own(slurm_cluster, name) == []
        state = json.loads((tmp_path / "distributor.state").read_text())
        assert state["cancelled"] >= 2 and state["running"] == state["pending"] == 0, state
    finally:
        _stop(proc, slurm_cluster, name)


@pytest.mark.slurm
@pytest.mark.parametrize(("setting", "cause"), [("partition", "sbatch: partition"),
                                                ("account", "sbatch: account")])
def test_a_slurm_error_is_logged_once_and_the_loop_goes_on(  # type: ignore[no-untyped-def]
    slurm_cluster, busy_node, tmp_path, setting, cause
) -> None:
    name = _unique()
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "distributor", "--state-dir", str(tmp_path),
         "--scrape-command", "true"],
        env=_distributor_env(slurm_cluster, name, interval_s="1", cooldown_s="0",
                             **{setting: f"no-such-{name}"}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        state_file = tmp_path / "distributor.state"
        deadline = time.monotonic() + 60
        while not (state_file.exists() and json.loads(state_file.read_text())["loops"] >= 3):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        state = json.loads(state_file.read_text())
        assert state["failures"].get(cause, 0) >= 3, state
        assert err.count(cause) == 1, err
        assert _own(slurm_cluster, name) == []
    finally:
        _stop(proc, slurm_cluster, name)


@pytest.mark.slurm
def test_its_scrape_job_samples_an_unwatched_job_into_the_server(  # type: ignore[no-untyped-def]
    slurm_cluster, user_can_run_turingwatch, tmp_path, monkeypatch
) -> None:
    """The whole chain: the distributor's allocation runs the real `turingwatch scrape`, which
    samples the test user's job that nobody watched and sends it; the server stores it, and the
    period analysis judges the job with its samples."""
    from datetime import UTC, datetime, timedelta

    from server_helpers import ThreadServer, config_of, free_port, server_env

    from watcher.analysis.periods import Period

    socket = "/tmp/turingwatch-slurm/munge/socket"
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    env = server_env(tmp_path, free_port(), mode="munge", extra={"TURINGWATCH_AUTH_MUNGE_SOCKET": socket})
    started = datetime.now(UTC) - timedelta(seconds=5)
    name = _unique()
    with ThreadServer(config_of(env)) as server:
        job_dir = slurm_cluster.make_job_dir("dist-e2e-")
        job_id = slurm_cluster.sbatch(
            f"#!/bin/sh\n{sys.executable} -c 'import time\nt = time.time()\n"
            "while time.time() - t < 70: pass'\n",
            "-c", "2", "--time=3", "--job-name=unwatched", cwd=job_dir, as_user=True)
        deadline = time.monotonic() + 120
        while _queue_state(slurm_cluster, job_id) != "RUNNING":
            assert time.monotonic() < deadline, "the user's job did not start"
            time.sleep(0.5)
        dist_env = {**_distributor_env(slurm_cluster, name, time_s="30", interval_s="2"),
                    **{k: v for k, v in env.items() if k.startswith(("TURINGWATCH_SERVER", "TURINGWATCH_AUTH"))},
                    "TURINGWATCH_SAMPLER_INTERVAL_S": "2", "TURINGWATCH_SERVER_SEND_INTERVAL_S": "2"}
        proc = subprocess.Popen([sys.executable, "-m", "watcher", "distributor", "--state-dir",
                                 str(tmp_path / "dist")], env=dist_env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            store = server.server.store
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                row = store.one("SELECT count(*) FROM step_samples s JOIN sessions USING (session_id)"
                                " WHERE sessions.job_id = ? AND sessions.mode = 'node'", [job_id])
                if row[0] >= 5:
                    break
                assert proc.poll() is None, proc.communicate()[0][-3000:]
                time.sleep(1)
            assert row[0] >= 5, f"the scraper's samples did not arrive: {_own(slurm_cluster, name)}"
            assert store.one("SELECT user_name FROM sessions WHERE job_id = ? AND mode = 'node'",
                             [job_id]) == (slurm_cluster.user,)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
        assert _own(slurm_cluster, name) == []
        slurm_cluster.wait(job_id, timeout=300)
        server.server.scheduler.import_accounting()
        period = Period("test", started, datetime.now(UTC) + timedelta(minutes=1))
        reports = server.server.scheduler._analyse_period(period, mail=False)
        rows = store.query("SELECT rule FROM analysis_findings WHERE job_id = ?", [job_id])
        assert {r[0] for r in rows} & {"low_concurrency", "cpu_underuse"}, (rows, reports)
        # The scrape job itself is no one's finding.
        assert not store.query("SELECT 1 FROM analysis_findings f JOIN jobs j USING (job_id)"
                               " WHERE j.job_name = ?", [name])
