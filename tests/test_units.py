"""How numbers read: one formatter per quantity, for the card, report.html and the letters."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from watcher import units
from watcher.units import (
    by_name,
    clock,
    duration,
    energy,
    number,
    percent,
    plural,
    share,
    size,
)

NB = "\u00a0"


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, f"0{NB}B"), (1023, f"1,023{NB}B"), (1024, f"1.0{NB}KiB"), (3 * 2**30, f"3.0{NB}GiB"),
     (1536 * 2**20, f"1.5{NB}GiB"), (2**60, f"1,024.0{NB}PiB")],
)
def test_bytes_are_binary_units(value, text):
    assert size(value) == text


@pytest.mark.parametrize(
    ("seconds", "spoken", "clocked"),
    [(45, f"45{NB}s", "00:00:45"), (59.6, f"1{NB}min", "00:01:00"),
     (12 * 60 + 5, f"12{NB}min", "00:12:05"),
     (3 * 3600 + 5 * 60, f"3{NB}h 05{NB}min", "03:05:00"),
     (2 * 86400 + 4 * 3600 + 7, f"2{NB}d 4{NB}h", "2-04:00:07")],
)
def test_durations_in_the_spoken_and_the_clock_form(seconds, spoken, clocked):
    assert duration(seconds) == spoken
    assert clock(seconds) == clocked


def test_percent_and_share_keep_a_decimal_for_small_values():
    assert percent(9.3) == "9.3%" and percent(42.4) == "42%" and percent(0.0) == "0%"
    assert percent(5.0) == "5%"                      # no ".0"
    assert share(0.093) == "9.3%" and share(0.5) == "50%" and share(1.0) == "100%"
    assert share(0.004) == "0.4%"                    # would read as 0% when rounded


def test_numbers_energy_and_counts():
    assert number(4096) == "4,096" and number(1234.56) == "1,235"
    assert number(12.34) == "12.3" and number(0.4213) == "0.42" and number(True) == "yes"
    assert energy(540) == "540 J" and energy(5400) == "1.5 Wh" and energy(8.1e6) == "2.25 kWh"
    assert plural(1, "job") == "1 job" and plural(1200, "job") == "1,200 jobs"
    assert plural(2, "more kind") == "2 more kinds"


def test_missing_values_read_as_the_caller_asks():
    for formatter in (number, percent, share, size, duration):
        assert formatter(None) == units.DASH
        assert formatter(math.nan) == units.DASH
        assert formatter(None, missing="n/a") == "n/a"
    # The card's forms are sentences: their default is a word.
    assert clock(None) == "n/a" and energy(None) == "n/a"


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [("elapsed_s", 5400, f"1{NB}h 30{NB}min"), ("memory_fraction", 0.087, "8.7%"),
     ("cpu_efficiency", 0.5, "50%"), ("system_share", 0.41, "41%"),
     ("avg_util_pct", 97.0, "97%"), ("peak_rss_bytes", 2**30, f"1.0{NB}GiB"),
     ("energy_wh", 1250.0, f"1,250{NB}Wh"), ("energy_kwh", 1.5, f"1.50{NB}kWh"),
     ("avg_power_w", 95.5, f"95.5{NB}W"), ("avg_sm_clock_mhz", 1410, f"1,410{NB}MHz"),
     ("job_id", 4100123, "4100123"), ("cores", 64, "64"), ("cores", None, units.DASH),
     ("problems", ["cpu_underuse", "memory_underuse"], "cpu_underuse, memory_underuse"),
     ("problems", [], units.DASH),
     ("start_time", datetime(2026, 11, 16, 9, 5), "2026-11-16 09:05")],
)
def test_values_are_formatted_by_the_unit_in_their_name(name, value, text):
    assert by_name(name, value) == text
