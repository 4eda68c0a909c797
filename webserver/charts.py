"""The site's charts: server-side SVG from watcher/svgchart.py, so pages need no script.

Charts are drawn 560 units wide, the width they take in one of two columns on a wide screen,
so their 11 px labels show at about that size (a phone scrolls a chart sideways rather than
shrink it to unreadable). The legend then has room for three series (svgchart spaces labels
150 apart), so a measure with more node/step series is drawn as several charts of three, up to
:data:`MAX_CHARTS` of them, and the page says how many were left out. Series are averaged into
at most :data:`MAX_POINTS` buckets: a week-long job sampled every 30 s has 20 000 samples,
which would make a page of megabytes and show nothing more than 300 points do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from watcher.svgchart import PALETTE, line_chart
from watcher.units import number
from webserver.data import JobDetail

Points = list[tuple[float, float | None]]
PER_CHART = 3
WIDTH = 560
MAX_CHARTS = 3
MAX_POINTS = 300
GIB = 1024**3


@dataclass(frozen=True)
class Chart:
    key: str        # an anchor for the page, and what a test looks for
    title: str
    svg: str        # inline SVG markup, escaped by svgchart
    note: str = ""  # what was left out, if anything


def downsample(points: Sequence[tuple[float, float | None]], limit: int = MAX_POINTS) -> Points:
    """``points`` averaged into at most ``limit`` equal time buckets (None values skipped)."""
    known = [(t, v) for t, v in points if v is not None]
    if len(known) <= limit:
        return known
    start, end = known[0][0], known[-1][0]
    width = (end - start) / limit or 1.0
    buckets: dict[int, list[tuple[float, float]]] = {}
    for t, v in known:
        buckets.setdefault(min(int((t - start) / width), limit - 1), []).append((t, v))
    return [(sum(t for t, _ in b) / len(b), sum(v for _, v in b) / len(b))
            for _, b in sorted(buckets.items())]


def _measure(
    key: str,
    title: str,
    series: dict[str, Points],
    *,
    y_label: str,
    scale: float = 1.0,
    y_max: float | None = None,
    reference: tuple[str, float] | None = None,
) -> list[Chart]:
    named = [(label, [(t, v / scale) for t, v in downsample(pts)])
             for label, pts in sorted(series.items())]
    named = [(label, pts) for label, pts in named if pts]
    if not named:
        return []
    shown = named[: PER_CHART * MAX_CHARTS]
    left_out = len(named) - len(shown)
    charts = []
    for i in range(0, len(shown), PER_CHART):
        part = shown[i: i + PER_CHART]
        suffix = f" ({i // PER_CHART + 1} of {-(-len(shown) // PER_CHART)})" if len(shown) > PER_CHART else ""
        svg = line_chart(part, title=title + suffix, y_label=y_label, y_max=y_max,
                         reference=reference, width=WIDTH)
        charts.append(Chart(f"{key}-{i // PER_CHART + 1}", title + suffix, svg))
    if left_out:
        last = charts[-1]
        charts[-1] = Chart(last.key, last.title, last.svg,
                           f"{left_out} more series not drawn; the API has them all")
    return charts


def job_charts(detail: JobDetail, job: dict[str, Any]) -> list[Chart]:
    """The time-series charts of a sampled job's page; none for an accounting-only job."""
    if not detail.sampled:
        return []
    cores = job.get("ncpus")
    per_node = cores / job["nnodes"] if cores and job.get("nnodes") else None
    requested = detail.mem_requested_bytes
    charts: list[Chart] = []
    charts += _measure("cores", "Cores in use, per node and step", detail.cores,
                       y_label="cores",
                       reference=("cores allocated per node", per_node) if per_node else None)
    charts += _measure("memory", "Memory in use, per node and step", detail.memory,
                       y_label="GiB", scale=GIB,
                       reference=("requested", requested / GIB) if requested else None)
    charts += _measure("gpu-util", "GPU utilization", detail.gpu_util, y_label="%",
                       y_max=100.0)
    total = detail.gpu_memory_total
    charts += _measure("gpu-memory", "GPU memory in use", detail.gpu_memory, y_label="GiB",
                       scale=GIB, reference=("GPU memory", total / GIB) if total else None)
    charts += _measure("gpu-power", "GPU power", detail.gpu_power, y_label="W")
    charts += _measure("io", "Storage I/O rate, per node and step", detail.io,
                       y_label="MB/s", scale=1e6)
    return charts


def utilization_chart(rows: list[dict[str, Any]]) -> Chart | None:
    """Core-hours reserved and busy per day, as paired bars with the day under each pair, for
    the admin page. Drawn here, in svgchart's classes and palette: svgchart's x axis is a
    clock of elapsed time, which days are not."""
    if not rows:
        return None
    shown = rows[-31:]  # a month of days fits; older days are in the API
    width, height, left, right, top, bottom = WIDTH, 240, 56, 12, 46, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = max(max(r["core_hours"] or 0, r["busy_core_hours"] or 0) for r in shown) or 1.0
    y_top, y_step = _axis(top_value * 1.05)
    slot = plot_w / len(shown)
    bar = max(1.0, slot * 0.38)

    def py(v: float) -> float:
        return top + plot_h * (1 - v / y_top)

    title = f"Core-hours per day, {shown[0]['day'].isoformat()} to {shown[-1]['day'].isoformat()}"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(title)}" class="chart">', f"<title>{escape(title)}</title>",
           f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    steps = round(y_top / y_step)
    for i in range(steps + 1):
        y = py(i * y_step)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
                   f"{number(i * y_step)}</text>")
    every = max(1, round(len(shown) / 6))  # about six day labels, whatever the range
    for i, r in enumerate(shown):
        x = left + slot * i + (slot - 2 * bar) / 2
        for j, key in enumerate(("core_hours", "busy_core_hours")):
            v = r[key] or 0.0
            out.append(f'<rect x="{x + j * bar:.1f}" y="{py(v):.1f}" width="{bar:.1f}" '
                       f'height="{max(0.0, py(0) - py(v)):.1f}" fill="{PALETTE[2 * j]}"/>')
        if i % every == 0:
            out.append(f'<text x="{left + slot * (i + 0.5):.1f}" y="{height - 24}" class="tick" '
                       f'text-anchor="middle">{r["day"].strftime("%d %b")}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.0f}" class="axis" transform="rotate(-90 14 '
               f'{top + plot_h / 2:.0f})" text-anchor="middle">core-hours</text>')
    for j, label in enumerate(("reserved", "busy")):
        out.append(f'<text x="{left + 150 * j}" y="{top - 12}" class="legend" '
                   f'fill="{PALETTE[2 * j]}">{label}</text>')
    out.append("</svg>")
    return Chart("utilization", "Cluster utilization", "\n".join(out))


def _axis(value: float) -> tuple[float, float]:
    """(top, step) of a y axis reaching ``value`` in about four steps of 1, 2, 2.5 or 5 × 10^n."""
    raw = value / 4
    power = math.floor(math.log10(raw)) if raw > 0 else 0
    mantissa = next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * 10**power * (1 + 1e-9))
    step = mantissa * 10**power
    return math.ceil(value / step - 1e-9) * step, step
