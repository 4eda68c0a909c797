"""The site's charts: server-side SVG from watcher/svgchart.py, so pages need no script.

A chart's legend has room for four series (svgchart spaces labels 150 px apart on a 760 px
wide chart), so a measure with more node/step series is drawn as several charts of four, up to
:data:`MAX_CHARTS` of them, and the page says how many were left out. Series are averaged into
at most :data:`MAX_POINTS` buckets: a week-long job sampled every 30 s has 20 000 samples,
which would make a page of megabytes and show nothing more than 300 points do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from watcher.svgchart import line_chart
from webserver.data import JobDetail

Points = list[tuple[float, float | None]]
PER_CHART = 4
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
                         reference=reference)
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
    """Core-hours reserved and busy per day, for the admin page (x: days since the first)."""
    if not rows:
        return None
    first = rows[0]["day"]

    def points(value: Callable[[dict[str, Any]], float | None]) -> Points:
        # svgchart's x axis is a clock: seconds since the first day put each day at its place.
        return [((r["day"] - first).days * 86400.0, value(r)) for r in rows]

    svg = line_chart(
        [("reserved", points(lambda r: r["core_hours"])),
         ("busy", points(lambda r: r["busy_core_hours"]))],
        title=f"Core-hours per day from {first.isoformat()} (x: hours since then)",
        y_label="core-hours",
    )
    return Chart("utilization", "Cluster utilization", svg)
