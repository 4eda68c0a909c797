"""How a job ended, in one phrase for every reader."""

from __future__ import annotations

import pytest

from watcher.jobstate import end_state, signal_name


@pytest.mark.parametrize(
    ("state", "code", "sig", "text", "bad"),
    [
        ("COMPLETED", 0, 0, "COMPLETED", False),
        ("FAILED", 2, 0, "FAILED, exit code 2", True),
        ("FAILED", 0, 11, "FAILED, killed by SIGSEGV", True),
        ("OUT_OF_MEMORY", 0, 125, "OUT_OF_MEMORY", True),
        ("TIMEOUT", 0, 15, "TIMEOUT", True),
        ("CANCELLED by 1000", 0, 15, "CANCELLED, killed by SIGTERM", True),
        ("cancelled by 0", None, None, "CANCELLED", True),
        (None, 0, None, "exit code 0", False),
        (None, 3, None, "exit code 3", True),
        (None, None, 9, "killed by SIGKILL", True),
        (None, None, None, "ended", False),
    ],
)
def test_the_end_is_one_phrase(state, code, sig, text, bad):
    end = end_state(state, code, sig)
    assert (end.text, end.bad) == (text, bad)


def test_a_running_job_is_neither_good_nor_bad():
    end = end_state("RUNNING", None, None)
    assert (end.text, end.bad, end.running, end.css_class) == ("RUNNING", False, True, "running")


def test_signals_are_named_and_unknown_ones_numbered():
    assert signal_name(9) == "SIGKILL"
    assert signal_name(0) is None and signal_name(None) is None
    assert signal_name(200) == "signal 200"
