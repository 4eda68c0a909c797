"""Splitting sacct --parsable2 output into records (watcher/accounting/parsable.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.accounting.parsable import (
    NEWLINE,
    SacctFormatError,
    parse_sacct_parsable,
    read_layout,
    split_records,
)
from watcher.slurm.sacct import DELIMITER

RECORDED = Path(__file__).parent / "fixtures" / "slurm-recorded"
US = DELIMITER


def test_header_names_the_fields_and_our_delimiter_is_detected():
    text = f"JobID{US}JobIDRaw{US}JobName\n1{US}1{US}a|b\n1.batch{US}1.batch{US}batch\n"
    rows = list(parse_sacct_parsable(text))
    assert rows == [
        {"JobID": "1", "JobIDRaw": "1", "JobName": "a|b"},
        {"JobID": "1.batch", "JobIDRaw": "1.batch", "JobName": "batch"},
    ]


def test_newline_in_the_last_field_continues_the_record():
    text = (
        f"JobID{US}JobIDRaw{US}SubmitLine\n"
        f"7{US}7{US}sbatch --wrap 'a\n"
        "12 b\n"            # a continuation line that starts with digits, but no delimiter
        "'\n"
        f"7.batch{US}7.batch{US}\n"
    )
    layout, lines, records = split_records(text)
    assert records == [
        f"7{US}7{US}sbatch --wrap 'a{NEWLINE}12 b{NEWLINE}'",
        f"7.batch{US}7.batch{US}",
    ]
    assert list(lines) == [2, 5] and layout.first_line == 2


def test_newline_in_a_middle_field_joins_until_the_record_is_complete():
    text = f"JobID{US}JobIDRaw{US}JobName{US}User\n3{US}3{US}two\nlines{US}bob\n"
    assert list(parse_sacct_parsable(text)) == [
        {"JobID": "3", "JobIDRaw": "3", "JobName": "two\nlines", "User": "bob"}
    ]


def test_crlf_line_ends_and_no_final_newline():
    text = "JobID|JobIDRaw|State\r\n5|5|COMPLETED\r\n5.batch|5.batch|COMPLETED"
    assert [r["JobID"] for r in parse_sacct_parsable(text)] == ["5", "5.batch"]


def test_parsable_with_trailing_delimiter():
    text = "JobID|JobIDRaw|State|\n5|5|COMPLETED|\n"
    assert list(parse_sacct_parsable(text)) == [
        {"JobID": "5", "JobIDRaw": "5", "State": "COMPLETED"}
    ]


def test_fields_given_for_output_without_header_and_header_skipped_when_present():
    fields = ["JobID", "JobIDRaw", "State"]
    assert [r["State"] for r in parse_sacct_parsable("5|5|FAILED\n", fields)] == ["FAILED"]
    with_header = "JobID|JobIDRaw|State\n5|5|FAILED\n"
    assert [r["State"] for r in parse_sacct_parsable(with_header, fields)] == ["FAILED"]


def test_pipe_in_free_text_is_placed_where_the_other_fields_stay_readable():
    # The real row of job 9: JobName 'pipe|name', Comment 'a|b comment', and a SubmitLine
    # holding both, all split by a bare '|'.
    fields = (RECORDED / "sacct-fields.txt").read_text().strip().split(",")
    rows = {r["JobID"]: r for r in parse_sacct_parsable(
        (RECORDED / "sacct-parsable2.txt").read_text(), fields)}  # fmt: skip
    job = rows["9"]
    assert job["JobName"] == "pipe|name"
    assert job["Comment"] == "a|b comment"
    assert job["User"] == "root" and job["UID"] == "0" and job["State"] == "COMPLETED"
    assert job["SubmitLine"].endswith("-J pipe|name --comment a|b comment --wrap sleep 1")
    assert job["WorkDir"] == "/tmp/turingwatch-slurm/work/recorded"
    # Multi-line submit lines of the same file (jobs 1, 6, 7, 10, 11 and step 6.0).
    assert rows["6.0"]["SubmitLine"].endswith("time.sleep(2)")
    assert rows["6.0"]["SubmitLine"].count("\n") == 3
    assert len(rows) == 28


def test_ambiguous_pipes_name_the_line():
    # Two adjacent free-text fields: 'a|b|c' could be split either way.
    text = "JobID|JobIDRaw|JobName|SubmitLine\n1|1|a|b|c\n"
    with pytest.raises(SacctFormatError, match=r"line 2: 1 '\|' too many, and more than one"):
        list(parse_sacct_parsable(text))


def test_short_record_at_the_end_names_its_first_line():
    text = f"JobID{US}JobIDRaw{US}State\n1{US}1{US}COMPLETED\n2{US}2\n"
    with pytest.raises(SacctFormatError, match=r"^sacct output line 3: 2 fields where 3"):
        list(parse_sacct_parsable(text))


def test_missing_header_and_missing_id_fields_are_errors():
    with pytest.raises(SacctFormatError, match="no header line"):
        read_layout("")
    with pytest.raises(SacctFormatError, match="must include JobID and JobIDRaw"):
        read_layout("JobID|State")


def test_the_newline_stand_in_is_refused_in_input():
    with pytest.raises(SacctFormatError, match="line 3: holds the byte 0x1E"):
        split_records(f"JobID|JobIDRaw\n1|1\n2|2{NEWLINE}\n")
