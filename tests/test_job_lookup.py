"""``turingwatch job`` and ``turingwatch jobs`` on stores built here, and analyze's ranking.

The stores are real DuckDB files with the real schema, written as the watcher and the accounting
import write them (tests/test_analysis.py's builder); the commands then open them read-only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_analysis import GIB, T0, WEEK, Cluster
from watcher.analysis.engine import analyze_period
from watcher.analysis.lookup import rank_users
from watcher.cli import cli
from watcher.config import load_config
from watcher.store import Store

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A store with a sampled GPU job, an accounting-only failure, a killed job, an array task
    and bob's job; returns its path and the jobs' raw ids by name."""
    path = tmp_path_factory.mktemp("site") / "site.duckdb"
    with Store(path) as store:
        c = Cluster(store)
        ids = {}
        # 4 cores, 2 GPUs, 1 of 4 cores busy (the samples), GPUs at 20 % and 60 %
        ids["gpu"] = c.job(cores=4, gpus=2, elapsed=3600, limit=4 * 3600, total_cpu=3600.0,
                           max_rss=2 * GIB, mem=8 * GIB, name="train", partition="gpu")
        session = c.session(ids["gpu"], cores=4)
        c.steps(session, [1.0] * 360, cpus=4, rss=2 * GIB)
        c.gpus(session, {0: [20.0] * 360, 1: [60.0] * 360})
        ids["failed"] = c.job(cores=2, elapsed=600, limit=3600, total_cpu=1140.0, state="FAILED",
                              max_rss=GIB, mem=4 * GIB, name="fails", start=T0 + timedelta(hours=2))
        store.execute("UPDATE jobs SET exit_code = 3 WHERE job_id = ?", [ids["failed"]])
        ids["killed"] = c.job(cores=8, elapsed=1200, limit=7200, total_cpu=600.0, state="FAILED",
                              max_rss=GIB, mem=4 * GIB, name="segv", start=T0 + timedelta(hours=3))
        store.execute("UPDATE jobs SET exit_code = 0, exit_signal = 11 WHERE job_id = ?",
                      [ids["killed"]])
        ids["array"] = c.job(cores=1, elapsed=900, total_cpu=850.0, array_job_id=77, name="task",
                             start=T0 + timedelta(hours=4))
        store.execute("UPDATE jobs SET job_id_display = '77_5', array_task_id = 5 WHERE job_id = ?",
                      [ids["array"]])
        ids["bob"] = c.job(user="bob", cores=16, elapsed=7200, total_cpu=7200.0, name="bobs",
                           start=T0 + timedelta(hours=5))
        store.execute("INSERT INTO accounting_imports (cluster, window_start, window_end, jobs,"
                      " steps) VALUES ('c', ?, ?, 5, 10)", [T0 - timedelta(days=1), T0 + timedelta(days=1)])
    return path, ids


@pytest.fixture
def site(built, tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A copy of the built store of this test's own (a test may analyse it)."""
    path = tmp_path / "site.duckdb"
    shutil.copyfile(built[0], path)
    return path, built[1]


def run(path: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, [*args, "--store", str(path)], env=env or {})


@pytest.fixture
def as_alice(monkeypatch):
    """The asking user is alice, not root and no admin."""
    monkeypatch.setattr("watcher.analysis.lookup.os.geteuid", lambda: 1000)
    monkeypatch.setattr("watcher.analysis.lookup.viewer", lambda: "alice")


# -- job ---------------------------------------------------------------------------------------


def test_a_sampled_gpu_job_on_one_screen(site):
    path, ids = site
    done = run(path, "job", str(ids["gpu"]))
    assert done.exit_code == 0, done.output
    text = done.output
    assert f"Job {ids['gpu']} (train) of alice" in text
    assert "State:    COMPLETED" in text
    assert "01:00:00 of 04:00:00 limit (25%)" in text
    assert "25% of 4 cores (1.0 busy on average" in text and "3.00 idle core-hours" in text
    assert "2.0 GiB peak of 8.0 GiB requested (25%)" in text
    # the mean of 20 % and 60 %; idle GPU-hours = 1 h × 2 GPUs × (1 − 0.4)
    assert "2 GPU(s), 40% mean utilization; 1.20 idle GPU-hours" in text
    assert "n1 GPU 0: 20% busy" in text and "n1 GPU 1: 60% busy" in text
    assert re.search(r"n1: 4 cores, 1\.0 busy \(25%\), memory peak 2\.0 GiB, 360 samples", text)
    assert "Findings (judged now, not stored):" in text
    assert "accounting only" not in text


def test_judging_a_job_now_stores_nothing(site):
    path, ids = site
    done = run(path, "job", str(ids["gpu"]), "--format", "json")
    report = json.loads(done.output)
    assert report["analysis"] == {"status": "judged now", "period": None}
    assert {f["rule"] for f in report["findings"]} >= {"cpu_underuse"}
    with Store(path, read_only=True) as store:
        assert store.one("SELECT count(*) FROM analysis_findings")[0] == 0
    nothing = run(path, "job", str(ids["gpu"]), "--no-judge")
    assert "Findings: not analyzed yet (not analyzed yet)" in nothing.output


def test_a_failed_job_from_accounting_only_in_json(site):
    path, ids = site
    report = json.loads(run(path, "job", str(ids["failed"]), "--format", "json").output)
    assert report["end"] == {"text": "FAILED, exit code 3", "bad": True, "running": False}
    assert report["exit_code"] == 3 and report["signal"] is None
    assert report["cpu_efficiency"] == pytest.approx(1140 / (600 * 2))
    assert report["time_efficiency"] == pytest.approx(600 / 3600)
    assert report["mem_efficiency"] == pytest.approx(0.25)
    assert report["sampled"] is False and report["per_node"] == [] and report["per_gpu"] == []
    text = run(path, "job", str(ids["failed"])).output
    assert "judged from accounting only (no samples)" in text


def test_a_signal_by_name_and_red_on_a_terminal(site):
    path, ids = site
    plain = run(path, "job", str(ids["killed"]))
    assert "State:    FAILED, killed by SIGSEGV" in plain.output
    assert "\x1b[" not in plain.output  # not a terminal: no colour
    coloured = run(path, "job", str(ids["killed"]), "--color", "always")
    assert "\x1b[31m\x1b[1mFAILED, killed by SIGSEGV" in coloured.output, repr(coloured.output)
    listed = run(path, "jobs", "--state", "FAILED").output
    assert re.search(rf"^{ids['killed']} .* FAILED, SIGSEGV ", listed, re.M)


def test_an_array_task_and_a_het_component_by_their_slurm_ids(site):
    path, ids = site
    report = json.loads(run(path, "job", "77_5", "--format", "json").output)
    assert report["job_id"] == "77_5" and report["job_id_raw"] == ids["array"]
    with Store(path) as store:
        store.execute("UPDATE jobs SET job_id_display = '88+1', het_job_id = 88,"
                      " het_job_offset = 1 WHERE job_id = ?", [ids["killed"]])
    report = json.loads(run(path, "job", "88+1", "--format", "json").output)
    assert report["job_id"] == "88+1" and report["signal"] == "SIGSEGV"
    assert json.loads(run(path, "job", str(ids["killed"]), "--format", "json").output)[
        "job_id"] == "88+1"  # the raw id finds it too


def test_the_published_snapshot_while_the_server_holds_the_store(site, tmp_path):
    """DuckDB lets no other process open a store a writer holds: read the publication then."""
    from watcher.store.publish import publish

    path, ids = site
    with Store(path) as store:
        publish(store, tmp_path / "pub")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom watcher.store import Store\n"
         f"s = Store({str(path)!r})\nprint('holding', flush=True)\ntime.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "holding"
        config = tmp_path / "tw.toml"
        config.write_text(f'[store]\npath = "{path}"\n[server]\npublish_dir = "{tmp_path / "pub"}"\n')
        done = CliRunner().invoke(cli, ["--config", str(config), "job", str(ids["failed"]),
                                        "--format", "json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.output)["source"].startswith(f"published snapshot {tmp_path / 'pub'}")
        # no publication either: both reasons in one message
        config.write_text(f'[store]\npath = "{path}"\n[server]\npublish_dir = "{tmp_path / "none"}"\n')
        done = CliRunner().invoke(cli, ["--config", str(config), "jobs"])
        assert done.exit_code == 1
        assert "in use by another process" in done.output and "holds no publication" in done.output
    finally:
        holder.kill()
        holder.wait()


def test_a_job_not_in_the_store_says_how_far_the_import_went(site):
    path, _ = site
    done = run(path, "job", "999")
    assert done.exit_code == 1
    assert done.output.strip() == (f"turingwatch job: job 999 is not in store {path}"
                                   f" (imported until {(T0 + timedelta(days=1)):%Y-%m-%d %H:%M} UTC)")


def test_stored_findings_with_their_advice(site):
    """The analysis's own advice (metrics.advice, the engine's) is what `job` shows."""
    path, ids = site
    config = load_config(None, environ={})
    with Store(path) as store:
        analyze_period(store, config, WEEK)
        stored = [json.loads(m)["advice"] for (m,) in store.execute(
            "SELECT metrics FROM analysis_findings WHERE job_key = ?", [f"c:{ids['gpu']}"]
        ).fetchall()]
    assert stored and all(a["sentence"] for a in stored)
    text = run(path, "job", str(ids["gpu"])).output
    assert "Findings (from the analysis of 2026-W47):" in text
    flat = " ".join(text.split())
    for advice in stored:
        assert " ".join(advice["sentence"].split()) in flat
        if advice["request"]:
            assert f"next time: {advice['request']}" in flat
    report = json.loads(run(path, "job", str(ids["gpu"]), "--format", "json").output)
    assert report["analysis"] == {"status": "stored", "period": "2026-W47"}
    assert sorted(f["sentence"] for f in report["findings"]) == sorted(a["sentence"] for a in stored)
    assert all("advice" not in f["metrics"] for f in report["findings"])


def test_a_finding_stored_without_advice_falls_back_to_its_rules_solution(site):
    """Findings stored before the advice existed (older analyses) still read well."""
    path, ids = site
    config = load_config(None, environ={})
    with Store(path) as store:
        analyze_period(store, config, WEEK)
        store.execute("""UPDATE analysis_findings SET metrics = json_merge_patch(metrics, '{"advice": null}')"""
                      " WHERE job_key = ?", [f"c:{ids['gpu']}"])
    report = json.loads(run(path, "job", str(ids["gpu"]), "--format", "json").output)
    assert report["findings"]
    assert all(f["sentence"] is None and f["request"] is None and f["solution"]
               for f in report["findings"])


def test_another_users_job_is_refused_to_a_non_admin(site, as_alice):
    path, ids = site
    done = run(path, "job", str(ids["bob"]))
    assert done.exit_code == 1
    assert f"job {ids['bob']} is bob's" in done.output
    assert run(path, "job", str(ids["gpu"])).exit_code == 0  # her own


def test_the_asker_is_the_real_uid_not_the_environment(monkeypatch):
    from watcher.analysis.lookup import viewer

    monkeypatch.setenv("USER", "bob")
    monkeypatch.setenv("LOGNAME", "bob")
    assert viewer() == pwd.getpwuid(os.getuid()).pw_name != "bob"


def test_admins_by_config_may_look(site, as_alice, tmp_path):
    path, ids = site
    config = tmp_path / "tw.toml"
    config.write_text('[web]\nadmin_users = ["alice"]\n')
    done = CliRunner().invoke(cli, ["--config", str(config), "job", str(ids["bob"]),
                                    "--store", str(path)])
    assert done.exit_code == 0, done.output


def test_the_published_snapshot_when_the_store_is_not_there(site, tmp_path):
    from watcher.store.publish import publish

    path, ids = site
    with Store(path) as store:
        publish(store, tmp_path / "pub")
    config = tmp_path / "tw.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "absent.duckdb"}"\n'
                      f'[server]\npublish_dir = "{tmp_path / "pub"}"\n')
    done = CliRunner().invoke(cli, ["--config", str(config), "job", str(ids["failed"]),
                                    "--format", "json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["source"].startswith("published snapshot ") and report["exit_code"] == 3
    assert not (tmp_path / "absent.duckdb").exists()


# -- jobs --------------------------------------------------------------------------------------


def test_jobs_one_line_each_in_100_columns(site):
    path, ids = site
    done = run(path, "jobs")
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0].split() == ["JobID", "User", "Name", "State", "Elapsed", "TimeEff", "CPUEff",
                                "MemEff", "GPUEff", "IdleCoreH"]
    assert all(len(line) <= 100 for line in lines)
    rows = {line.split()[0]: line for line in lines[1:-1]}
    # sorted by end time, oldest first
    assert list(rows) == [str(ids["gpu"]), str(ids["failed"]), str(ids["killed"]), "77_5",
                          str(ids["bob"])]
    assert re.search(r"FAILED, exit 3\s+00:10:00\s+17%\s+95%\s+25%\s+-\s+0\.0$",
                     rows[str(ids["failed"])])
    assert re.search(r"40%\s+3\.0$", rows[str(ids["gpu"])])
    assert lines[-1].startswith("5 jobs: ")


def test_jobs_filters_sort_and_limit(site):
    path, ids = site
    failed = json.loads(run(path, "jobs", "--state", "failed", "--format", "json").output)
    assert [j["job_id"] for j in failed] == [ids["failed"], ids["killed"]]
    assert [j["job_id"] for j in json.loads(
        run(path, "jobs", "--user", "bob", "--format", "json").output)] == [ids["bob"]]
    # waste: bob's 16 cores for 2 h with 2 h of CPU time left 30 core-hours idle; the GPU job
    # 3 core-hours and 1.2 GPU-hours; the killed job 8 × 1200 s − 600 s = 2.5 core-hours
    waste = json.loads(run(path, "jobs", "--sort", "waste", "--limit", "3", "--format", "json").output)
    assert [j["job_id"] for j in waste] == [ids["bob"], ids["gpu"], ids["killed"]]
    assert waste[0]["idle_core_hours"] == pytest.approx(30)
    assert waste[1]["idle_gpu_hours"] == pytest.approx(1.2)
    assert waste[2]["idle_core_hours"] == pytest.approx(2.5)
    newest = json.loads(run(path, "jobs", "--limit", "2", "--format", "json").output)
    assert [j["job_id_display"] for j in newest] == ["77_5", str(ids["bob"])]
    names = json.loads(run(path, "jobs", "--name", "seg*", "--format", "json").output)
    assert [j["job_name"] for j in names] == ["segv"]


def test_jobs_csv_keeps_full_precision(site):
    path, ids = site
    rows = list(csv.DictReader(io.StringIO(run(path, "jobs", "--format", "csv").output)))
    failed = next(r for r in rows if r["job_id"] == str(ids["failed"]))
    assert float(failed["cpu_eff"]) == pytest.approx(0.95)
    assert failed["time_eff"] == repr(600 / 3600)  # not rounded to 17 %
    assert failed["end_text"] == "FAILED, exit code 3"


def test_jobs_colour_only_when_asked_or_on_a_terminal(site, monkeypatch):
    path, _ = site
    assert "\x1b[" not in run(path, "jobs").output
    coloured = run(path, "jobs", "--color", "always").output
    assert "\x1b[31m" in coloured and "\x1b[32m" in coloured
    assert ANSI.sub("", coloured) == run(path, "jobs").output
    from watcher.commands.jobs import use_colour

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_colour("auto", Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour("auto", Tty())


def test_jobs_of_others_only_for_admins(site, as_alice):
    path, _ = site
    mine = json.loads(run(path, "jobs", "--format", "json").output)
    assert {j["user_name"] for j in mine} == {"alice"}
    refused = run(path, "jobs", "--user", "bob")
    assert refused.exit_code == 1 and "only root and web.admin_users" in refused.output


def test_jobs_are_fast_on_a_synthetic_week(tmp_path):
    from bench.synthetic_week import generate

    path = tmp_path / "week.duckdb"
    generate(path, scale=0.05, progress=False)
    started = time.monotonic()
    done = run(path, "jobs", "--all-users", "--sort", "waste", "--limit", "20")
    took = time.monotonic() - started
    assert done.exit_code == 0, done.output
    assert len(done.output.splitlines()) == 22
    assert took < 5, f"jobs took {took:.1f} s on 5,000 jobs"


# -- analyze's text form ------------------------------------------------------------------------


def test_analyze_ranks_users_by_waste(tmp_path):
    path = tmp_path / "site.duckdb"
    with Store(path) as store:
        c = Cluster(store)
        for n in range(25):  # user u00 wastes least, u24 most
            c.job(user=f"u{n:02d}", cores=4, elapsed=3600, total_cpu=3600.0 * 4 * (1 - n / 30))
    config = load_config(None, environ={})
    with Store(path) as store:
        rows = rank_users(analyze_period(store, config, WEEK))
    assert [r["user"] for r in rows[:3]] == ["u24", "u23", "u22"]
    assert rows[0]["idle_core_hours"] == pytest.approx(4 * 24 / 30, abs=0.01)
    text = CliRunner().invoke(cli, ["analyze", "--period", "2026-W47", "--all-users"],
                              env={"TURINGWATCH_STORE_PATH": str(path)}).output
    lines = text.splitlines()
    assert lines[3].split() == ["user", "jobs", "idle", "core-h", "idle", "GPU-h", "serious",
                                "medium", "info"]
    assert lines[4].split()[0] == "u24" and lines[-1] == "… 5 more (--format json for all)"
    assert len(lines) == 4 + 1 + 20


def test_judging_one_job_alone_finds_what_the_whole_store_does(site):
    """judge_alone copies one job's rows into a private store: the same findings, much sooner."""
    from watcher.analysis.engine import analyze_job
    from watcher.analysis.lookup import find_job, judge_alone, open_source

    path, ids = site
    config = load_config(None, environ={})
    source = open_source(config, path)
    with source.store:
        for job_id in ids.values():
            job = find_job(source, str(job_id))
            whole = analyze_job(source.store, config, job_id, "c")
            alone = judge_alone(source.store, config, job)
            assert sorted((f.rule, f.step, f.node, f.gpu, f.severity) for f in alone) == sorted(
                (f.rule, f.step, f.node, f.gpu, f.severity) for f in whole)
        assert any(analyze_job(source.store, config, j, "c") for j in ids.values())
