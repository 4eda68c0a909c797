"""report.html's pieces: chart axes, units, and the rule texts' markup."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from watcher.card.html import charts, render_report_html
from watcher.svgchart import line_chart, thin, time_label, time_ticks


def _ticks(svg: str) -> list[str]:
    """The y-axis labels, bottom to top."""
    return re.findall(r'class="tick" text-anchor="end">([^<]+)<', svg)


@pytest.mark.parametrize(
    ("peak", "ticks"),
    [
        (2.0, ["0", "1", "2", "3"]),                 # 2 cores busy, with headroom
        (1.0, ["0.0", "0.5", "1.0", "1.5"]),
        (0.5, ["0.0", "0.2", "0.4", "0.6"]),
        (64, ["0", "20", "40", "60", "80"]),
        (137, ["0", "50", "100", "150"]),
    ],
)
def test_the_y_axis_steps_are_round_numbers(peak, ticks):
    svg = line_chart([("n1", [(0, 0), (10, peak)])], title="t", y_label="cores")
    assert _ticks(svg) == ticks


def test_a_percent_chart_ends_at_100():
    svg = line_chart([("gpu", [(0, 3), (10, 12)])], title="t", y_label="%", y_max=100)
    assert _ticks(svg) == ["0", "25", "50", "75", "100"]


def _summary(peak_rss: int, requested: int | None) -> dict:
    timeline = [{"t": t, "node": "n1", "cores_in_use": 1.0, "rss_bytes": peak_rss} for t in (0, 10)]
    return {"timeline": timeline, "cores_available": 2, "nodes": [{"node": "n1"}],
            "mem_requested_bytes": requested}


def test_memory_is_charted_in_mib_below_a_gib_and_in_gib_above():
    small = charts(_summary(300 * 2**20, None))[1]
    assert 'rotate(-90' in small and ">MiB<" in small
    big = charts(_summary(300 * 2**20, 8 * 2**30))[1]   # the request sets the scale
    assert ">GiB<" in big and ">requested<" in big


def test_a_rule_solution_renders_its_code_marks_and_escapes_the_rest():
    finding = {"rule": "cpu_underuse", "severity": "serious", "title": "CPU underuse",
               "step": None, "summary": "cpu efficiency 10%",
               "solution": "Ask for fewer cores (`--cpus-per-task`) <b>now</b>"}
    summary = {**_summary(2**20, None), "findings": [finding]}
    html = _render(summary)
    assert "<code>--cpus-per-task</code>" in html
    assert "&lt;b&gt;now&lt;/b&gt;" in html


def _render(overrides: dict) -> str:
    """report.html for a minimal summary (the fields the template reads) plus ``overrides``."""
    base = {
        "job_id": None, "job_name": None, "node": "n1", "exit_code": 0, "exit_signal": None,
        "elapsed_s": 10.0, "time_limit_s": None, "time_limit_share": None, "cores_available": 2,
        "cpu_user_s": 1.0, "cpu_system_s": 0.0, "cpu_efficiency": 0.05,
        "cores_in_use": {"mean": 0.1, "distribution": {}}, "peak_rss_bytes": 2**20,
        "mem_requested_bytes": None, "mem_used_share": None, "nodes": [], "steps": [],
        "gpus": [], "top_processes": [], "findings": [], "gpu_timeline": [], "intercepter": None,
    }
    return render_report_html({**base, **overrides})


# -- the time axis, step lines, the legend ------------------------------------------------------


@pytest.mark.parametrize(("span", "step"), [
    (3, 1), (45, 10), (100, 30), (600, 120), (3600, 600), (3 * 3600, 1800), (30 * 3600, 21600),
])
def test_time_ticks_fall_on_round_steps_for_the_span(span, step):
    ticks = time_ticks(span)
    assert ticks[0] == 0 and all(b - a == step for a, b in pairwise(ticks))
    assert ticks[-1] <= span < ticks[-1] + step and len(ticks) <= 7


def test_time_labels_are_m_ss_under_an_hour_and_h_mm_above():
    assert [time_label(t, 600) for t in (0, 90, 600)] == ["0:00", "1:30", "10:00"]
    assert [time_label(t, 7200) for t in (0, 1800, 7200)] == ["0:00", "0:30", "2:00"]
    svg = line_chart([("n1", [(0, 1), (5400, 2)])], title="t", y_label="cores")
    assert re.findall(r'class="tick time"[^>]*>([^<]+)<', svg) == ["0:00", "0:15", "0:30", "0:45",
                                                                   "1:00", "1:15", "1:30"]


def test_samples_are_held_until_the_next_one_not_joined_by_ramps():
    svg = line_chart([("n1", [(0, 1.0), (10, 2.0), (20, 2.0)])], title="t", y_label="cores",
                     step=True)
    (path,) = re.findall(r'<path d="([^"]+)"', svg)
    assert "L" not in path and path.count("H") == 2 and path.count("V") == 1   # hold, then rise
    ramps = line_chart([("n1", [(0, 1.0), (10, 2.0)])], title="t", y_label="cores")
    assert "L" in re.findall(r'<path d="([^"]+)"', ramps)[0]


def test_a_gap_splits_the_line_and_a_lone_sample_is_a_dot():
    svg = line_chart([("n1", [(0, 1.0), (5, None), (10, 2.0), (15, 2.5)])], title="t", y_label="c",
                     step=True)
    assert svg.count("<circle") == 1 and svg.count("<path") == 1


def test_legend_swatches_are_filled_one_colour_each_without_inline_style():
    svg = line_chart([(f"GPU {i} n1", [(0, i), (10, i)]) for i in range(3)], title="t", y_label="%")
    fills = re.findall(r'fill="(#[0-9a-f]{6})" class="swatch"', svg)
    assert len(fills) == 3 and len(set(fills)) == 3
    # The site's CSP forbids style attributes: colours are presentation attributes, which no
    # stylesheet rule of report.html or the site overrides.
    assert "style=" not in svg
    assert 'class="legend" fill=' not in svg   # the page's text colour never hides a series'


def test_a_long_series_is_thinned_keeping_its_peaks():
    points = [(float(t), 1.0) for t in range(100_000)]
    points[54_321] = (54_321.0, 9.0)
    thinned = thin(points, 100_000.0, 700)
    assert len(thinned) <= 1400 and (54_321.0, 9.0) in thinned
    assert thin(points[:50], 50.0, 700) == points[:50]


def test_a_weeks_report_stays_under_a_megabyte():
    week = [{"t": t, "node": n, "cores_in_use": (t % 97) / 10, "rss_bytes": 2**30 + t, "dt": 10}
            for n in ("n1", "n2") for t in range(0, 7 * 86400, 10)]
    html = _render({"timeline": week, "nodes": [{"node": "n1"}, {"node": "n2"}]})
    assert len(html.encode()) < 1_000_000


# -- the end state and the header ----------------------------------------------------------------
@pytest.mark.parametrize(("fields", "banner", "css"), [
    ({"exit_code": 3}, "✖ FAILED, exit code 3", "bad"),
    ({"exit_code": None, "exit_signal": 11}, "✖ Killed by SIGSEGV", "bad"),
    ({"exit_code": None, "exit_signal": 15, "time_limit_s": 60, "elapsed_s": 60.4},
     "✖ TIMEOUT after 00:01:00", "bad"),
    ({"exit_code": None, "exit_signal": 9, "mem_requested_bytes": 2**30, "mem_used_share": 0.97},
     "✖ OUT_OF_MEMORY", "bad"),
    ({"exit_code": 0}, "COMPLETED", "ok"),
])
def test_the_end_state_leads_the_page(fields, banner, css):
    html = _render(fields)
    head = re.search(r'<div class="end (\w+)" role="status">([^<]+)</div>', html)
    assert head.groups() == (css, banner)
    assert html.index('class="end') < html.index("<h1>")


def test_the_header_names_the_job_its_command_escaped_and_its_start():
    html = _render({"job_id": 42, "job_name": "gen<1>", "command": "python gen.py '<script>'",
                    "start": "2026-12-03T12:13:07+00:00", "nodes": [{"node": "n1"}]})
    assert "Job 42 · gen&lt;1&gt;" in html and "started 2026-12-03 12:13 +0000" in html
    assert "python gen.py &#39;&lt;script&gt;&#39;" in html and "<script" not in html


def test_a_finding_reads_as_its_advice_and_the_request_that_fits():
    advised = {"rule": "memory_underuse", "severity": "medium", "title": "Memory underuse",
               "step": None, "sentence": "Peaked at 1.2 GiB of 16 GiB requested.",
               "request": "--mem=2G", "advised": True, "solution": "Ask for less memory."}
    html = _render({"findings": [advised]})
    assert "Peaked at 1.2 GiB of 16 GiB requested." in html
    assert "Request: <code>--mem=2G</code>" in html and "Ask for less memory" not in html
