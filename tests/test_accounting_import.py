"""Importing sacct output into jobs / job_steps (watcher/accounting/importer.py and its SQL).

Fixtures: tests/fixtures/slurm-recorded (real 22.05 output, '|' and --noheader),
tests/fixtures/sacct/real-22.05.txt (real output of our own sacct call) and hand-written
files for other versions' quirks, each opening with '#' lines that say which quirk.
"""

from __future__ import annotations

import io
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from watcher.accounting import AccountingError
from watcher.accounting.importer import (
    import_accounting,
    last_imported,
    load_sacct_output,
    windows,
)
from watcher.accounting.parsable import SacctFormatError
from watcher.cli import cli
from watcher.config import load_config
from watcher.slurm.sacct import DELIMITER, FIELDS, SacctError, sacct_command, shell_line
from watcher.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = FIXTURES / "slurm-recorded"


def fixture(name: str) -> str:
    """A fixture of tests/fixtures/sacct without its leading '#' comment lines."""
    lines = (FIXTURES / "sacct" / name).read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def store() -> Store:
    with Store(":memory:") as s:
        yield s


def job(store: Store, job_id: int, cluster: str | None = None) -> dict[str, Any]:
    cur = store.execute(
        "SELECT * EXCLUDE (imported_at) FROM jobs WHERE job_id = ?"
        + (" AND cluster = ?" if cluster else ""),
        [job_id, cluster] if cluster else [job_id],
    )
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    assert len(rows) == 1, rows
    return dict(zip(names, rows[0], strict=True))


def steps(store: Store, job_id: int) -> dict[str, dict[str, Any]]:
    cur = store.execute(
        "SELECT * EXCLUDE (imported_at) FROM job_steps WHERE job_id = ? ORDER BY step", [job_id]
    )
    names = [d[0] for d in cur.description]
    return {row[2]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def count(store: Store, table: str) -> int:
    return store.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- real 22.05 output ---------------------------------------------------------------------


def load_recorded(store: Store) -> None:
    fields = (RECORDED / "sacct-fields.txt").read_text().strip().split(",")
    load_sacct_output(store, (RECORDED / "sacct-parsable2.txt").read_text(), fields=fields)


def test_recorded_completed_job_and_its_batch_step(store):
    load_recorded(store)
    got = job(store, 1)
    assert got == {
        "cluster": "turingwatch", "job_id": 1, "job_id_display": "1",
        "array_job_id": None, "array_task_id": None, "het_job_id": None, "het_job_offset": None,
        "user_name": "root", "account": "testers", "partition": "debug", "qos": "normal",
        "job_name": "completed", "submit_line": got["submit_line"],
        "work_dir": "/tmp/turingwatch-slurm/work/recorded",
        "state": "COMPLETED", "exit_code": 0, "exit_signal": 0,
        "submit_time": utc(2026, 11, 22, 2, 48, 23), "start_time": utc(2026, 11, 22, 2, 48, 24),
        "end_time": utc(2026, 11, 22, 2, 48, 30), "time_limit_s": None, "elapsed_s": 6,
        "nnodes": 1, "ncpus": 1, "ngpus": 0, "alloc_mem_bytes": 1 << 30,
        "req_mem_bytes": 1 << 30, "req_mem_per": None,
        "alloc_tres": "billing=1,cpu=1,mem=1G,node=1", "req_tres": "billing=1,cpu=1,mem=1G,node=1",
        "req_cpus": 1, "cancelled_by_uid": None, "nodelist": "vm",
        "total_cpu_s": 3.28, "user_cpu_s": 1.275, "system_cpu_s": 2.005,
        "max_rss_bytes": 132652 * 1024,
    }  # fmt: skip
    assert got["submit_line"].startswith("sbatch --parsable")
    assert got["submit_line"].endswith('time.sleep(2)"') and got["submit_line"].count("\n") == 3
    batch = steps(store, 1)["batch"]
    assert batch == {
        "cluster": "turingwatch", "job_id": 1, "step": "batch", "step_name": "batch",
        "state": "COMPLETED", "exit_code": 0, "exit_signal": 0,
        "start_time": utc(2026, 11, 22, 2, 48, 24), "end_time": utc(2026, 11, 22, 2, 48, 30),
        "elapsed_s": 6, "nnodes": 1, "ntasks": 1, "ncpus": 1, "ngpus": 0,
        "alloc_tres": "cpu=1,mem=1G,node=1", "nodelist": "vm",
        "total_cpu_s": 3.28, "user_cpu_s": 1.275, "system_cpu_s": 2.005,
        "max_rss_bytes": 132652 * 1024, "max_rss_node": "vm", "ave_rss_bytes": 132652 * 1024,
    }  # fmt: skip


def test_recorded_failures_timeouts_cancels_arrays_steps_and_gpus(store):
    load_recorded(store)
    assert count(store, "jobs") == 13 and count(store, "job_steps") == 15
    failed = job(store, 2)
    assert (failed["state"], failed["exit_code"], failed["exit_signal"]) == ("FAILED", 3, 0)
    assert failed["max_rss_bytes"] is None  # no step reported one
    timeout = job(store, 3)
    assert (timeout["state"], timeout["time_limit_s"], timeout["elapsed_s"]) == ("TIMEOUT", 60, 78)
    assert steps(store, 3)["batch"]["state"] == "CANCELLED"
    assert steps(store, 3)["batch"]["exit_signal"] == 15
    cancelled = job(store, 4)
    assert (cancelled["state"], cancelled["cancelled_by_uid"]) == ("CANCELLED", 0)
    # The array's tasks: raw ids 12, 13 and (the last task keeps the array's id) 5.
    tasks = store.execute(
        "SELECT job_id, job_id_display, array_job_id, array_task_id FROM jobs"
        " WHERE array_job_id = 5 ORDER BY array_task_id"
    ).fetchall()
    assert tasks == [(12, "5_0", 5, 0), (13, "5_1", 5, 1), (5, "5_2", 5, 2)]
    two = steps(store, 6)
    assert sorted(two) == ["0", "1", "batch"]
    assert (two["1"]["ntasks"], two["1"]["step_name"]) == (2, "sleep")
    assert job(store, 6)["max_rss_bytes"] == max(s["max_rss_bytes"] for s in two.values())
    assert job(store, 7)["user_name"] == "alice"
    assert job(store, 8)["ngpus"] == 1 and steps(store, 8)["batch"]["ngpus"] == 1
    assert job(store, 9)["job_name"] == "pipe|name"
    over = job(store, 10)
    assert (over["state"], over["exit_signal"], over["req_mem_bytes"]) == ("FAILED", 9, 50 << 20)
    assert job(store, 11)["time_limit_s"] == 365 * 86400


def test_our_own_sacct_call_recorded_reads_the_same(store):
    """real-22.05.txt: the same jobs through our command (unit separator, --noconvert)."""
    load_sacct_output(store, fixture("real-22.05.txt"))
    other = Store(":memory:")
    load_recorded(other)
    columns = (
        "job_id, job_id_display, array_task_id, user_name, job_name, submit_line, state,"
        " exit_code, exit_signal, submit_time, end_time, time_limit_s, elapsed_s, ncpus, ngpus,"
        " alloc_mem_bytes, req_mem_bytes, total_cpu_s, max_rss_bytes"
    )
    query = f"SELECT {columns} FROM jobs ORDER BY job_id"
    assert store.execute(query).fetchall() == other.execute(query).fetchall()
    step_query = "SELECT * EXCLUDE (imported_at, alloc_tres) FROM job_steps ORDER BY 2, 3"
    assert store.execute(step_query).fetchall() == other.execute(step_query).fetchall()


# --- hand-written quirks of other versions ------------------------------------------------


def test_2011_reqmem_per_node_and_per_cpu(store):
    load_sacct_output(store, fixture("sacct-20.11-reqmem-suffix.txt"))
    per_node = job(store, 100)
    assert (per_node["req_mem_per"], per_node["req_mem_bytes"]) == ("node", 2 * 4000 << 20)
    per_cpu = job(store, 101)
    assert (per_cpu["req_mem_per"], per_cpu["req_mem_bytes"]) == ("cpu", 4 * 2000 << 20)
    assert per_node["total_cpu_s"] == 3 * 3600 + 59 * 60
    assert per_node["system_cpu_s"] == 9 * 60 + 0.5
    assert steps(store, 100)["batch"]["max_rss_bytes"] == 3128 * 1024
    assert job(store, 101)["max_rss_bytes"] == 0


def test_2108_interactive_extern_steps_limits_running_job_and_local_times(store):
    load_sacct_output(store, fixture("sacct-21.08-steps-limits.txt"), timezone="Europe/Berlin")
    salloc = job(store, 123)
    assert salloc["time_limit_s"] is None  # Partition_Limit
    assert salloc["req_mem_per"] is None and salloc["req_mem_bytes"] == 4 << 30
    assert salloc["start_time"] == utc(2021, 10, 30, 20, 0, 1)  # 22:00:01 CEST
    # 02:30:01 happens twice the night summer time ends; DuckDB takes the later (CET) one,
    # an hour off the ElapsedRaw sacct computed. Our own sacct calls run with TZ=UTC.
    assert salloc["end_time"] == utc(2021, 10, 31, 1, 30, 1)
    assert salloc["end_time"] - salloc["start_time"] == timedelta(seconds=16200 + 3600)
    assert sorted(steps(store, 123)) == ["extern", "interactive"]
    assert steps(store, 123)["interactive"]["max_rss_bytes"] == 3 << 29  # 1.5G
    running = job(store, 124)
    assert (running["state"], running["end_time"]) == ("RUNNING", None)
    assert running["time_limit_s"] == 86400 and running["max_rss_bytes"] is None
    assert running["work_dir"] == "/scratch/carol/run 7"
    assert steps(store, 124)["batch"]["max_rss_bytes"] is None


def test_2302_het_jobs_typed_gpus_and_pending_array_range(store):
    load_sacct_output(store, fixture("sacct-23.02-het-array-gres.txt"))
    leader, member = job(store, 200), job(store, 201)
    assert (leader["job_id_display"], leader["het_job_id"], leader["het_job_offset"]) == (
        "200+0", 200, 0,
    )  # fmt: skip
    assert (member["job_id_display"], member["het_job_id"], member["het_job_offset"]) == (
        "200+1", 200, 1,
    )  # fmt: skip
    assert leader["ngpus"] == 2 and member["ngpus"] == 0
    assert steps(store, 201)["0"]["ntasks"] == 128
    assert steps(store, 201)["0"]["ave_rss_bytes"] == 900 << 20
    pending = job(store, 210)
    assert pending["job_id_display"] == "210_[3-9%2]"
    assert (pending["array_job_id"], pending["array_task_id"]) == (210, None)
    assert (pending["start_time"], pending["end_time"], pending["nodelist"]) == (None, None, None)
    assert pending["alloc_tres"] is None and pending["req_mem_bytes"] == 2 << 30
    assert job(store, 212)["cancelled_by_uid"] == 1000
    assert job(store, 211)["total_cpu_s"] == pytest.approx(19 * 60 + 50.123)


def test_2405_free_text_with_delimiters_and_newlines(store):
    load_sacct_output(store, fixture("sacct-24.05-free-text.txt"))
    free = job(store, 400)
    assert free["job_name"] == "grep|sort"
    assert free["work_dir"] == "/home/frank/a|b"
    assert free["submit_line"] == "sbatch --wrap 'cat in | sort\nuniq -c | head'"
    assert free["total_cpu_s"] == 86400 + 2 * 3600 + 3 * 60 + 4
    assert free["max_rss_bytes"] == 3203072
    oom = job(store, 401)
    assert (oom["state"], oom["exit_code"], oom["exit_signal"]) == ("OUT_OF_MEMORY", 0, 125)
    assert job(store, 402)["state"] == "NODE_FAIL" and steps(store, 402) == {}


def test_2505_parsable_with_units_and_none_times(store):
    load_sacct_output(store, fixture("sacct-25.05-parsable-units.txt"))
    never = job(store, 500)
    assert (never["start_time"], never["end_time"]) == (None, utc(2025, 6, 1, 12, 5))
    assert (never["ncpus"], never["req_cpus"], never["nodelist"]) == (0, 4, None)
    batch = steps(store, 501)["batch"]
    assert batch["max_rss_bytes"] == round(1.5 * (1 << 30))
    assert batch["ave_rss_bytes"] == round(512.5 * (1 << 20))


# --- incremental, idempotent, atomic ------------------------------------------------------


def test_importing_twice_changes_nothing(store):
    load_recorded(store)
    before = store.execute("SELECT * EXCLUDE (imported_at) FROM jobs ORDER BY 2").fetchall()
    before_steps = store.execute(
        "SELECT * EXCLUDE (imported_at) FROM job_steps ORDER BY 2, 3"
    ).fetchall()
    load_recorded(store)
    assert store.execute("SELECT * EXCLUDE (imported_at) FROM jobs ORDER BY 2").fetchall() == before
    assert (
        store.execute("SELECT * EXCLUDE (imported_at) FROM job_steps ORDER BY 2, 3").fetchall()
        == before_steps
    )
    assert count(store, "accounting_imports") == 2


RUNNING = (
    "JobID|JobIDRaw|Cluster|User|State|ExitCode|Start|End|ElapsedRaw|MaxRSS\n"
    "30|30|c|ann|RUNNING|0:0|2026-01-01T00:00:00|Unknown|60|\n"
    "30.batch|30.batch|c||RUNNING|0:0|2026-01-01T00:00:00|Unknown|60|\n"
    "30.0|30.0|c||RUNNING|0:0|2026-01-01T00:00:05|Unknown|55|\n"
)
FINISHED = (
    "JobID|JobIDRaw|Cluster|User|State|ExitCode|Start|End|ElapsedRaw|MaxRSS\n"
    "30|30|c|ann|COMPLETED|0:0|2026-01-01T00:00:00|2026-01-01T01:00:00|3600|\n"
    "30.batch|30.batch|c||COMPLETED|0:0|2026-01-01T00:00:00|2026-01-01T01:00:00|3600|2048K\n"
)


def test_a_running_job_that_finished_is_updated_and_loses_steps_of_an_earlier_run(store):
    load_sacct_output(store, RUNNING)
    assert job(store, 30)["end_time"] is None and sorted(steps(store, 30)) == ["0", "batch"]
    load_sacct_output(store, FINISHED)
    done = job(store, 30)
    assert (done["state"], done["end_time"], done["max_rss_bytes"]) == (
        "COMPLETED", utc(2026, 1, 1, 1), 2 << 20,
    )  # fmt: skip
    # Requeued runs replace the whole set of steps: step 0 of the first run is gone.
    assert sorted(steps(store, 30)) == ["batch"]


def test_a_repeated_record_keeps_the_later_one(store):
    load_sacct_output(store, RUNNING + FINISHED.split("\n", 1)[1])
    assert job(store, 30)["state"] == "COMPLETED"


def test_a_bad_value_names_its_line_and_stores_nothing(store):
    load_recorded(store)
    before = store.execute("SELECT * FROM jobs ORDER BY 2").fetchall()
    bad = FINISHED.replace("30.batch|30.batch|c||COMPLETED|0:0|2026-01-01T00:00:00|", "30.batch|30.batch|c||COMPLETED|0:0|2026-13-01T00:00:00|")  # fmt: skip
    with pytest.raises(SacctFormatError, match=r"line 3: cannot read Start '2026-13-01T00:00:00'"):
        load_sacct_output(store, bad)
    assert store.execute("SELECT * FROM jobs ORDER BY 2").fetchall() == before
    assert count(store, "accounting_imports") == 1


def test_a_broken_record_in_the_middle_stores_nothing(store):
    lines = fixture("real-22.05.txt").split("\n")
    lines[21] = DELIMITER.join(lines[21].split(DELIMITER)[:3])  # step 6.1, cut short
    with pytest.raises(SacctFormatError, match=r"^sacct output line 22: 3 fields where 32"):
        load_sacct_output(store, "\n".join(lines))
    assert count(store, "jobs") == 0 and count(store, "accounting_imports") == 0


def test_a_failure_while_writing_rolls_the_window_back(store):
    """Steps of a re-imported job are deleted before its row is replaced; when the job row
    then fails (here 4096P per node times 4 nodes overflows), the steps come back."""
    load_sacct_output(store, RUNNING)
    before = (job(store, 30), steps(store, 30))
    huge = (
        "JobID|JobIDRaw|Cluster|User|State|ExitCode|NNodes|ReqMem\n"
        "30|30|c|ann|COMPLETED|0:0|4|4096Pn\n"
        "30.batch|30.batch|c||COMPLETED|0:0|4|\n"
    )
    with pytest.raises(AccountingError, match=r"storing the sacct records failed: .*Overflow"):
        load_sacct_output(store, huge)
    assert (job(store, 30), steps(store, 30)) == before
    assert count(store, "accounting_imports") == 1


def test_records_of_two_clusters_need_a_configured_name(store):
    two = RUNNING + "31|31|other|bob|RUNNING|0:0|2026-01-01T00:00:00|Unknown|60|\n"
    with pytest.raises(AccountingError, match=r"2 clusters \(c, other\)"):
        load_sacct_output(store, two)
    load_sacct_output(store, two, cluster="site")
    assert store.execute("SELECT DISTINCT cluster FROM jobs").fetchall() == [("site",)]


def test_windows_and_where_the_last_import_ended(store):
    start = utc(2026, 1, 1)
    assert list(windows(start, start + timedelta(hours=60), timedelta(days=1))) == [
        (start, start + timedelta(days=1)),
        (start + timedelta(days=1), start + timedelta(days=2)),
        (start + timedelta(days=2), start + timedelta(hours=60)),
    ]
    assert last_imported(store, "c", None) is None
    load_sacct_output(store, RUNNING, since=start, until=start + timedelta(days=1))
    load_sacct_output(
        store, RUNNING, since=start, until=start + timedelta(days=2), as_user="ann"
    )
    # An all-users import counts for every user; a one-user import only for that user.
    assert last_imported(store, "c", None) == start + timedelta(days=1)
    assert last_imported(store, "c", "ann") == start + timedelta(days=2)
    assert last_imported(store, "c", "bob") == start + timedelta(days=1)


# --- the sacct command line and the CLI ---------------------------------------------------


def test_sacct_command_for_admin_and_for_one_user():
    start, end = utc(2026, 11, 21), utc(2026, 11, 22, 6, 30)
    admin = sacct_command("sacct", start, end)
    assert admin == [
        "sacct", "--parsable2", f"--delimiter={DELIMITER}", "--noconvert", "--allusers",
        "--starttime=2026-11-21T00:00:00", "--endtime=2026-11-22T06:30:00",
        "--format=" + ",".join(FIELDS),
    ]  # fmt: skip
    user = sacct_command("ssh head sacct", start, end, user="alice")
    assert user[:2] == ["ssh", "head"] and "--user=alice" in user and "--allusers" not in user
    assert FIELDS[-1] == "SubmitLine"
    line = shell_line(admin)
    assert line.startswith("TZ=UTC SLURM_TIME_FORMAT=standard ")
    assert "--delimiter=$'\\x1f'" in line and DELIMITER not in line


def test_cli_imports_a_file_and_reports(tmp_path):
    config = tmp_path / "tw.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "store.duckdb"}"\n')
    source = tmp_path / "sacct.txt"
    source.write_text(fixture("real-22.05.txt"))
    runner = CliRunner()
    args = ["--config", str(config), "import-accounting", "--all-users", "--from-file",
            str(source), "--timezone", "UTC", "-v"]  # fmt: skip
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "imported 13 jobs and 15 steps of cluster turingwatch (every user)" in first.output
    again = runner.invoke(cli, args)
    assert again.exit_code == 0
    with Store(tmp_path / "store.duckdb") as s:
        assert count(s, "jobs") == 13 and count(s, "accounting_imports") == 2


def test_cli_errors_are_one_line(tmp_path):
    config = tmp_path / "tw.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "store.duckdb"}"\n')
    source = tmp_path / "bad.txt"
    source.write_text("JobID|JobIDRaw|User|State\n1|1|u|COMPLETED\n2|x|u|COMPLETED\n")
    runner = CliRunner()
    done = runner.invoke(
        cli, ["--config", str(config), "import-accounting", "--from-file", str(source)]
    )
    assert done.exit_code == 1
    assert done.output.strip() == "turingwatch import-accounting: sacct output line 3: cannot read JobIDRaw 'x'"
    both = runner.invoke(cli, ["--config", str(config), "import-accounting", "--user", "a",
                               "--all-users"])  # fmt: skip
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_cli_prints_the_command_for_another_host(tmp_path):
    done = CliRunner().invoke(
        cli, ["import-accounting", "--print-command", "--user", "alice",
              "--since", "2026-11-01T00:00:00+00:00", "--until", "2026-11-08T00:00:00+00:00"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    command, then = done.output.strip().split("\n")
    assert "--user=alice" in command and "--starttime=2026-11-01T00:00:00" in command
    assert then.startswith("# then: turingwatch import-accounting --from-file FILE --timezone UTC")


def test_config_defaults_for_incremental_imports():
    slurm = load_config(environ={}).slurm
    assert (slurm.import_first_days, slurm.import_overlap_minutes) == (7.0, 60.0)
    assert import_accounting.__doc__ and "import_overlap_minutes" in import_accounting.__doc__


def test_api_import_from_an_open_file_reports_progress(store):
    seen = []
    result = import_accounting(
        store, load_config(environ={}), source_file=io.StringIO(fixture("real-22.05.txt")),
        timezone="UTC", progress=seen.append,
    )  # fmt: skip
    assert (result.cluster, result.as_user, result.jobs, result.steps) == ("turingwatch", None, 13, 15)
    assert seen == result.windows and seen[0].records == 28
    assert (seen[0].start, seen[0].end) == (utc(2026, 11, 22, 2, 48, 23), utc(2026, 11, 22, 2, 49, 42))
    imports = store.execute("SELECT window_start, jobs, steps, source FROM accounting_imports")
    assert imports.fetchall() == [(utc(2026, 11, 22, 2, 48, 23), 13, 15, "file")]


def test_sacct_that_cannot_run_or_fails_is_a_clear_error(store, monkeypatch):
    def config(sacct: str):
        env = {"TURINGWATCH_SLURM_SACCT": sacct, "TURINGWATCH_SLURM_CLUSTER": "c"}
        return load_config(environ=env)

    with pytest.raises(SacctError, match=r"^/nonexistent/sacct not found: install the Slurm"):
        import_accounting(store, config("/nonexistent/sacct"), since=utc(2026, 1, 1))
    if shutil.which("sacct") is None:
        pytest.skip("no sacct on this machine")
    monkeypatch.setenv("SLURM_CONF", "/dev/null")  # the real sacct, failing: no ClusterName
    with pytest.raises(SacctError, match=r"^sacct failed \(exit 1\): .*configuration file"):
        import_accounting(store, config("sacct"), since=utc(2026, 1, 1))
    assert count(store, "accounting_imports") == 0
