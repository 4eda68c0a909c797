"""report.html's pieces: chart axes, units, and the rule texts' markup."""

from __future__ import annotations

import re

import pytest

from watcher.card.html import charts, render_report_html
from watcher.svgchart import line_chart


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
