"""sacct input that is partial, concatenated, incomplete or odd (issue 9, "sacct input").

Whatever sacct or a file gives the importer, the result is a clear error naming the line or
a store that holds what the input said, and importing the same input again changes nothing.
The property tests build small sacct outputs from the recorded fixtures' own rows.
"""

from __future__ import annotations

import random
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.accounting import AccountingError
from watcher.accounting.importer import import_accounting, load_sacct_output
from watcher.accounting.parsable import SacctFormatError
from watcher.analysis.engine import analyze_period
from watcher.analysis.periods import parse_period
from watcher.cli import cli
from watcher.config import load_config
from watcher.slurm.sacct import DELIMITER, FIELDS
from watcher.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
SACCT = FIXTURES / "sacct"
RECORDED = FIXTURES / "slurm-recorded"
US = DELIMITER


def fixture(name: str) -> str:
    """A fixture of tests/fixtures/sacct without its leading '#' comment lines."""
    text = (SACCT / name).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def recorded_with_header() -> str:
    """The real 22.05 '|' output (made with --noheader) with the header sacct would print."""
    fields = (RECORDED / "sacct-fields.txt").read_text().strip().split(",")
    return "|".join(fields) + "\n" + (RECORDED / "sacct-parsable2.txt").read_text()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def store() -> Store:
    with Store(":memory:") as s:
        yield s


def tables(store: Store) -> tuple[list[tuple], list[tuple]]:
    """Everything jobs and job_steps hold, less the import times."""
    jobs = store.query("SELECT * EXCLUDE (imported_at) FROM jobs ORDER BY cluster, job_id")
    steps = store.query(
        "SELECT * EXCLUDE (imported_at) FROM job_steps ORDER BY cluster, job_id, step"
    )
    return jobs, steps


def job(store: Store, job_id: int) -> dict[str, Any]:
    cur = store.execute("SELECT * EXCLUDE (imported_at) FROM jobs WHERE job_id = ?", [job_id])
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    assert len(rows) == 1, rows
    return dict(zip(names, rows[0], strict=True))


def step_names(store: Store, job_id: int) -> list[str]:
    rows = store.query("SELECT step FROM job_steps WHERE job_id = ? ORDER BY step", [job_id])
    return [r[0] for r in rows]


def records_of(text: str) -> tuple[str, list[str]]:
    """(header, records) of an output in our own format, each record with its continuation
    lines (a line continues a record unless it starts with a job id and the delimiter)."""
    header, *lines = text.rstrip("\n").split("\n")
    records: list[str] = []
    for line in lines:
        first = line.split(US, 1)[0]
        if US in line and first.split(".")[0].replace("_", "").replace("+", "").isdigit():
            records.append(line)
        else:
            records[-1] += "\n" + line
    return header, records


def raw_id(record: str) -> str:
    return record.split(US, 2)[1]


def with_field(record: str, name: str, value: str) -> str:
    parts = record.split(US)
    parts[FIELDS.index(name)] = value
    return US.join(parts)


# --- steps whose job line is absent -----------------------------------------------------


def test_steps_without_their_job_line_are_stored_counted_and_reimport_changes_nothing(store):
    """`sacct --state=CA`: steps 3.batch and 10.batch come without their job lines. The
    store does not hold jobs 3 and 10: their steps are stored and counted, and become the
    jobs' steps when the job lines come. A second import used to fail on a duplicate key."""
    text = fixture("sacct-state-ca-steps-only.txt")
    first = load_sacct_output(store, text)
    assert (first.jobs, first.steps) == (1, 3)
    assert (first.orphan_steps, first.orphan_jobs) == (2, (3, 10))
    before = tables(store)
    assert [r[1] for r in before[0]] == [4]
    assert [r[1:3] for r in before[1]] == [(3, "batch"), (4, "batch"), (10, "batch")]
    again = load_sacct_output(store, text)
    assert (again.jobs, again.steps, again.orphan_steps) == (1, 3, 2)
    assert tables(store) == before
    # The job lines, without steps (sacct -X): the steps are the jobs' now, and nothing is
    # counted as without its job any more.
    header, records = records_of(fixture("real-22.05.txt"))
    load_sacct_output(store, "\n".join([header, *(r for r in records if raw_id(r) in ("3", "10"))]))
    assert load_sacct_output(store, text).orphan_steps == 0
    assert job(store, 10)["max_rss_bytes"] == 135917568


def test_steps_without_their_job_line_update_a_job_the_store_holds(store):
    load_sacct_output(store, fixture("real-22.05.txt"))
    full = tables(store)
    # The same records, partial: a filtered view changes nothing it does not hold anew.
    result = load_sacct_output(store, fixture("sacct-state-ca-steps-only.txt"))
    assert (result.jobs, result.steps, result.orphan_steps) == (1, 3, 0)
    assert tables(store) == full
    # A newer record of step 6.1 alone (`sacct -j 6.1`): that step is replaced, the job's
    # other steps stay, and the job's MaxRSS follows its largest step.
    header, records = records_of(fixture("real-22.05.txt"))
    step = next(r for r in records if raw_id(r) == "6.1")
    bigger = with_field(step, "MaxRSS", str(9 << 30))
    load_sacct_output(store, f"{header}\n{bigger}\n")
    assert step_names(store, 6) == ["0", "1", "batch"]
    assert job(store, 6)["max_rss_bytes"] == 9 << 30
    after = tables(store)
    load_sacct_output(store, f"{header}\n{bigger}\n")
    assert tables(store) == after


def test_an_output_without_steps_keeps_the_stored_steps(store):
    """`sacct -X` prints job lines only: the jobs' steps are not gone for that."""
    load_sacct_output(store, fixture("real-22.05.txt"))
    full = tables(store)
    header, records = records_of(fixture("real-22.05.txt"))
    jobs_only = "\n".join([header, *(r for r in records if "." not in raw_id(r))]) + "\n"
    result = load_sacct_output(store, jobs_only)
    assert (result.jobs, result.steps) == (13, 0)
    assert tables(store) == full


def test_a_filtered_output_merges_steps_instead_of_replacing_the_set(store):
    """An output that holds a step without its job line is a filtered view (--state): the
    job lines it holds replace their rows, but their steps are merged, not replaced."""
    load_sacct_output(store, fixture("real-22.05.txt"))
    full = tables(store)
    header, records = records_of(fixture("real-22.05.txt"))
    view = [r for r in records if raw_id(r) in ("6", "6.1", "3.batch")]
    load_sacct_output(store, "\n".join([header, *view]) + "\n")
    assert tables(store) == full


def test_the_command_warns_about_steps_stored_without_their_job(tmp_path, caplog):
    config, source = _cli_files(tmp_path, fixture("sacct-state-ca-steps-only.txt"))
    args = ["--config", str(config), "import-accounting", "--all-users", "--from-file",
            str(source), "--timezone", "UTC"]  # fmt: skip
    for _ in range(2):
        caplog.clear()
        done = CliRunner().invoke(cli, args)
        assert done.exit_code == 0, done.output
        assert "imported 1 jobs and 3 steps" in done.output
        [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warning.startswith("2 steps stored without their job (jobs 3, 10): the output has no job line")


# --- several outputs in one file --------------------------------------------------------


def test_concatenated_outputs_of_different_formats_read_each_with_its_own_header(store):
    parts = [
        fixture("sacct-24.05-free-text.txt"),          # our delimiter, 32 fields
        fixture("sacct-20.11-reqmem-suffix.txt"),      # '|'
        recorded_with_header(),                        # '|', 48 other fields, free text inside
        fixture("sacct-25.05-parsable-units.txt"),     # -p: a trailing '|'
        fixture("sacct-elapsed-no-raw.txt"),           # '|', 11 fields
    ]
    with Store(":memory:") as apart:
        for text in parts:
            load_sacct_output(apart, text, cluster="site")
        expected = tables(apart)
    result = load_sacct_output(store, "".join(parts), cluster="site")
    assert tables(store) == expected
    assert result.jobs == len(expected[0]) == 3 + 2 + 13 + 2 + 3


def test_the_same_output_twice_in_one_file_reads_as_once(store):
    once = fixture("real-22.05.txt")
    load_sacct_output(store, once)
    expected = tables(store)
    with Store(":memory:") as twice:
        load_sacct_output(twice, once + once)
        assert tables(twice) == expected


def test_lines_after_a_second_header_that_fit_it_not_are_an_error_naming_the_line(store):
    text = fixture("sacct-20.11-reqmem-suffix.txt") + "JobID|JobIDRaw|State\n7|7\n"
    with pytest.raises(SacctFormatError, match=r"^sacct output line 7: 2 fields where 3 were"):
        load_sacct_output(store, text)
    assert tables(store) == ([], [])


def test_a_header_like_line_inside_one_sacct_output_is_free_text(tmp_path):
    """Our own sacct call prints one header; a submit line holding what looks like another
    (a user can write anything there) stays the user's text, through the real sacct path."""
    header, records = records_of(fixture("real-22.05.txt"))
    job_one = next(r for r in records if raw_id(r) == "1")
    sneaky = with_field(job_one, "SubmitLine", "sbatch --wrap '\nJobID|JobIDRaw|State\n2|2|X'")
    output = tmp_path / "out.txt"
    output.write_text(f"{header}\n{sneaky}\n", encoding="utf-8")
    fake = tmp_path / "sacct"
    fake.write_text(f"#!/bin/sh\nexec cat {output}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    config = load_config(environ={"TURINGWATCH_SLURM_SACCT": str(fake),
                                  "TURINGWATCH_SLURM_CLUSTER": "turingwatch"})  # fmt: skip
    with Store(":memory:") as store:
        result = import_accounting(store, config, utc(2026, 11, 22), utc(2026, 11, 22, 12))
        assert (result.jobs, result.steps) == (1, 0)
        assert job(store, 1)["submit_line"] == "sbatch --wrap '\nJobID|JobIDRaw|State\n2|2|X'"


# --- what a header must name, and Elapsed ---------------------------------------------------


@pytest.mark.parametrize(
    ("header", "missing"),
    [("JobID|JobIDRaw|State|Start", "User (or UID)"), ("JobID|JobIDRaw|User|Start", "State")],
)
def test_a_missing_required_column_is_named(store, header, missing):
    values = "1|1|COMPLETED|2026-01-01T00:00:00" if "State" in header else "1|1|ann|Unknown"
    with pytest.raises(SacctFormatError) as caught:
        load_sacct_output(store, f"{header}\n{values}\n", cluster="c")
    assert str(caught.value) == (
        f"sacct output line 1: the header has no {missing} field;"
        " the importer needs JobID, JobIDRaw, State and User (or UID)"
    )


def test_a_missing_column_of_a_later_output_names_its_header_line(store):
    text = fixture("sacct-20.11-reqmem-suffix.txt") + "JobID|JobIDRaw|User\n7|7|ann\n"
    with pytest.raises(SacctFormatError, match=r"^sacct output line 6: the header has no State"):
        load_sacct_output(store, text)


def test_an_empty_user_on_a_job_line_says_so(store):
    text = "JobID|JobIDRaw|Cluster|User|UID|State\n1|1|c|ann|5|COMPLETED\n2|2|c|||FAILED\n"
    with pytest.raises(SacctFormatError, match=r"^sacct output line 3: job 2 has no User \(nor UID\)$"):
        load_sacct_output(store, text)


def test_elapsed_is_read_when_elapsedraw_is_absent(store):
    load_sacct_output(store, fixture("sacct-elapsed-no-raw.txt"))
    assert job(store, 700)["elapsed_s"] == 86400 + 2 * 3600 + 3 * 60 + 4
    assert store.one("SELECT elapsed_s FROM job_steps WHERE job_id = 700")[0] == 93783
    assert job(store, 701)["elapsed_s"] == 300
    assert job(store, 702)["elapsed_s"] == 0


def test_elapsedraw_wins_over_elapsed_and_a_bad_elapsed_names_its_line(store):
    header = "JobID|JobIDRaw|Cluster|User|State|ElapsedRaw|Elapsed"
    load_sacct_output(store, f"{header}\n1|1|c|ann|COMPLETED|60|00:02:00\n2|2|c|ann|COMPLETED||00:02:00\n")
    assert (job(store, 1)["elapsed_s"], job(store, 2)["elapsed_s"]) == (60, 120)
    with pytest.raises(SacctFormatError, match=r"^sacct output line 3: cannot read Elapsed 'soon'$"):
        load_sacct_output(store, "JobID|JobIDRaw|Cluster|User|State|Elapsed\n"
                                 "1|1|c|ann|COMPLETED|00:01:00\n2|2|c|ann|RUNNING|soon\n")


# --- jobs that never started ----------------------------------------------------------------


def test_jobs_that_never_started_are_counted_stored_and_not_analysed(tmp_path):
    text = fixture("sacct-25.05-parsable-units.txt") + fixture("sacct-23.02-het-array-gres.txt")
    config, source = _cli_files(tmp_path, text)
    done = CliRunner().invoke(cli, ["--config", str(config), "import-accounting", "--all-users",
                                    "--from-file", str(source), "--timezone", "UTC"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "1 job never started (ended while pending): stored, not analysed" in done.output
    assert "1 job still pending: stored, analysed once it has run" in done.output
    with Store(tmp_path / "store.duckdb") as store:
        never = job(store, 500)
        assert (never["state"], never["start_time"]) == ("CANCELLED", None)
        # Job 500 ended in 2025-W22, with job 501 of the same user: 501 is judged, 500 is not.
        reports = analyze_period(store, load_config(config), parse_period("2025-W22", "week", "UTC"))
        judged = {row["job_id"] for report in reports for row in report.jobs}
        assert judged == {501}


def test_the_import_result_counts_jobs_that_never_started(store):
    result = load_sacct_output(store, fixture("sacct-25.05-parsable-units.txt"))
    assert (result.jobs, result.never_started, result.pending) == (2, 1, 0)
    result = load_sacct_output(store, fixture("sacct-elapsed-no-raw.txt"))
    assert (result.jobs, result.never_started, result.pending) == (3, 0, 1)


# --- the span -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "span",
    [
        ["--since", "2026-11-08T00:00:00+00:00", "--until", "2026-11-01T00:00:00+00:00"],
        ["--since", "2026-11-01T00:00:00+00:00", "--until", "2026-11-01T00:00:00+00:00"],
        ["--since", "2999-01-01"],
    ],
)
@pytest.mark.parametrize("from_file", [True, False])
def test_since_not_before_until_is_a_usage_error(tmp_path, span, from_file):
    config, source = _cli_files(tmp_path, fixture("real-22.05.txt"))
    where = ["--from-file", str(source)] if from_file else []
    done = CliRunner().invoke(cli, ["--config", str(config), "import-accounting", "--all-users",
                                    *where, *span])  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "--since" in done.output and "is not before --until" in done.output
    with Store(tmp_path / "store.duckdb") as store:
        assert store.one("SELECT count(*) FROM accounting_imports")[0] == 0


def test_the_api_refuses_a_window_that_ends_before_it_starts(store):
    with pytest.raises(AccountingError, match="is not before"):
        load_sacct_output(store, fixture("real-22.05.txt"),
                          since=utc(2026, 11, 23), until=utc(2026, 11, 22))  # fmt: skip
    assert tables(store) == ([], [])


def _cli_files(tmp_path: Path, text: str) -> tuple[Path, Path]:
    config = tmp_path / "tw.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "store.duckdb"}"\n'
                      '[slurm]\nsacct = "/nonexistent/sacct"\ncluster = "c"\n')  # fmt: skip
    source = tmp_path / "sacct.txt"
    source.write_text(text, encoding="utf-8")
    return config, source


# --- properties: any window, imported again, changes nothing ----------------------------------


def _universe() -> tuple[str, dict[str, list[str]]]:
    """Our own format's records of two fixtures, by raw job id: the job line first."""
    header, first = records_of(fixture("real-22.05.txt"))
    other_header, second = records_of(fixture("sacct-24.05-free-text.txt"))
    assert other_header == header
    by_job: dict[str, list[str]] = {}
    for record in first + second:
        by_job.setdefault(raw_id(record).split(".")[0], []).append(record)
    return header, by_job


HEADER, JOBS = _universe()


def _orphans(records: list[str]) -> bool:
    """Whether an output holds a step without its job line."""
    jobs = {raw_id(r) for r in records if "." not in raw_id(r)}
    return any(raw_id(r).split(".")[0] not in jobs for r in records if "." in raw_id(r))


@st.composite
def window(draw: st.DrawFn) -> str:
    """One sacct output over some jobs, as sacct prints it: complete (job lines and all their
    steps), jobs only (-X), or filtered (--state / -j N.step: job lines with some of their
    steps, and at least one step without its job line, which is what shows an output to be
    filtered; docs/accounting.md); in any order, a record at times repeated."""
    ids = draw(st.lists(st.sampled_from(sorted(JOBS)), min_size=1, max_size=6, unique=True))
    kind = draw(st.sampled_from(["complete", "jobs only", "filtered"]))
    records: list[str] = []
    for job_id in ids:
        job_line, *steps = JOBS[job_id]
        if kind == "complete":
            records += [job_line, *steps]
        elif kind == "jobs only":
            records.append(job_line)
        else:
            keep = draw(st.lists(st.booleans(), min_size=len(steps), max_size=len(steps)))
            chosen = [s for s, k in zip(steps, keep, strict=True) if k]
            if draw(st.booleans()) or not chosen:
                records.append(job_line)
            records += chosen
    if kind == "filtered" and not _orphans(records):
        alone = draw(st.sampled_from([j for j in sorted(JOBS) if len(JOBS[j]) > 1]))
        records = [r for r in records if raw_id(r) != alone]
        records.append(JOBS[alone][1])
    records += draw(st.lists(st.sampled_from(records), max_size=2))
    random.Random(draw(st.integers(0, 1000))).shuffle(records)
    return "\n".join([HEADER, *records]) + "\n"


EVERYTHING = "\n".join([HEADER, *(r for rs in JOBS.values() for r in rs)]) + "\n"


@pytest.fixture(scope="module")
def everything_alone() -> tuple[list[tuple], list[tuple]]:
    """The tables of the complete output imported on a store of its own."""
    with Store(":memory:") as fresh:
        load_sacct_output(fresh, EVERYTHING, cluster="c")
        return tables(fresh)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(window(), min_size=1, max_size=3), st.data())
def test_reimporting_any_window_changes_nothing(everything_alone, outputs, data):
    """The windows are views of one state of the cluster: importing any of them again, in
    any order after the others, changes nothing; and partial views leave nothing behind
    that the complete output, imported last, would not store on a store of its own."""
    with Store(":memory:") as store:
        for text in outputs:
            load_sacct_output(store, text, cluster="c")
        state = tables(store)
        for i in data.draw(st.lists(st.integers(0, len(outputs) - 1), min_size=1, max_size=3)):
            load_sacct_output(store, outputs[i], cluster="c")
            assert tables(store) == state
        load_sacct_output(store, EVERYTHING, cluster="c")
        assert tables(store) == everything_alone


# Free text as users write it: newlines (one followed by digits looks like a job id), '|',
# the record separator the importer used as its newline stand-in, its fallbacks, tabs,
# carriage returns, non-ASCII and bytes that are not UTF-8. Not sacct's delimiter (0x1F) and
# not NUL: Slurm keeps C strings, and our delimiter is chosen as the byte nobody types.
FREE = st.lists(
    st.sampled_from(["a", "7", "12", " ", "\n", "\n3", "|", "\x1e", "\x1d", "\x1c", "\t", "\r",
                     "é", "\ue000", "/", "None", b"\xff".decode("latin-1"), "\x80"]),
    max_size=8,
).map("".join)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(FREE, FREE, FREE), min_size=1, max_size=3))
def test_odd_free_text_imports_and_reimports_the_same(tmp_path_factory, texts):
    """JobName, WorkDir and SubmitLine hold anything; the file is written as bytes, with
    latin-1 characters as the raw (invalid UTF-8) bytes sacct would print for them."""
    _, records = records_of(fixture("real-22.05.txt"))
    template = next(r for r in records if raw_id(r) == "2")
    lines = [HEADER]
    for n, (name, work_dir, submit) in enumerate(texts):
        record = with_field(template, "JobID", str(900 + n))
        record = with_field(record, "JobIDRaw", str(900 + n))
        record = with_field(record, "JobName", name)
        record = with_field(record, "WorkDir", work_dir)
        lines.append(with_field(record, "SubmitLine", submit))
    raw = ("\n".join(lines) + "\n").encode("utf-8").replace("\xff".encode(), b"\xff")
    raw = raw.replace("\x80".encode(), b"\x80")
    path = tmp_path_factory.mktemp("odd") / "sacct.txt"
    path.write_bytes(raw)
    config = load_config(environ={"TURINGWATCH_SLURM_CLUSTER": "c"})
    with Store(":memory:") as store:
        first = import_accounting(store, config, source_file=path, timezone="UTC")
        assert first.jobs == len(texts)
        state = tables(store)
        import_accounting(store, config, source_file=path, timezone="UTC")
        assert tables(store) == state
        for n, (name, work_dir, submit) in enumerate(texts):
            got = job(store, 900 + n)
            for value, column in ((name, "job_name"), (work_dir, "work_dir"), (submit, "submit_line")):
                expected = value.replace("\xff", "\ufffd").replace("\x80", "\ufffd")
                if expected in ("", "None"):
                    expected = None
                assert got[column] == expected, column
