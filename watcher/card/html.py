"""report.html: the report card with time-series charts, one self-contained file.

Each chart is drawn twice, for a wide screen and for a phone (a 760-unit chart shrunk to a
390 px screen would have 5 px labels); the page's CSS shows the one that fits. Samples are
drawn as steps: a sampled value holds until the next sample, no ramp is invented between.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from watcher import __version__
from watcher.card.ending import end_text
from watcher.svgchart import line_chart
from watcher.templating import environment


def _by_node(rows: list[dict[str, Any]], key: str, scale: float = 1.0) -> dict[str, list]:
    series: dict[str, list] = {}
    start = min((r["t"] for r in rows), default=0.0)
    for r in rows:
        value = r[key]
        series.setdefault(r["node"], []).append(
            (r["t"] - start, None if value is None else value / scale)
        )
    return series


# (width, height, class) of the two drawings of every chart: the wide one and the phone's.
_SIZES = ((760, 230, "chart chart-wide"), (370, 250, "chart chart-narrow"))


def _both(draw: Callable[..., str], *args: Any, **kwargs: Any) -> str:
    """A chart drawn for a wide screen and for a phone, in one figure."""
    return "<figure class=\"figure\">" + "".join(
        draw(*args, **kwargs, width=w, height=h, css_class=cls, step=True) for w, h, cls in _SIZES
    ) + "</figure>"


def charts(summary: dict[str, Any]) -> list[str]:
    timeline = summary.get("timeline", [])
    out = []
    if timeline:
        cores = summary.get("cores_available")
        per_node = len(summary.get("nodes", [])) or 1
        out.append(
            _both(
                line_chart,
                list(_by_node(timeline, "cores_in_use").items()),
                title="Cores in use",
                y_label="cores",
                reference=(f"{cores // per_node} available", cores / per_node) if cores else None,
            )
        )
        out.append(_memory_chart(summary, timeline))
    gpu_rows = summary.get("gpu_timeline", [])
    if gpu_rows:
        start = min(r["t"] for r in gpu_rows)
        series: dict[str, list] = {}
        for r in gpu_rows:
            series.setdefault(f"GPU {r['gpu_index']} {r['node']}", []).append(
                (r["t"] - start, r["util_pct"])
            )
        out.append(
            _both(line_chart, list(series.items()), title="GPU utilization", y_label="%", y_max=100)
        )
    return out


# The chart's title by where the memory figure comes from (summary.json memory_source).
_MEMORY_TITLES = {"cgroup": "Memory (as the cgroup charges it)", "pss": "Memory (PSS)",
                  "rss": "Resident memory"}


def _memory_chart(summary: dict[str, Any], timeline: list[dict[str, Any]]) -> str:
    """Memory as the kernel charges it per node; the RSS sum beside it where that reads more
    than a tenth higher (pages shared between processes, counted once per process)."""
    rows = [{**r, "memory_bytes": r["rss_bytes"] if r.get("memory_bytes") is None else r["memory_bytes"]}
            for r in timeline]
    requested = summary.get("mem_requested_bytes")
    top = max([requested or 0, *(r["rss_bytes"] or 0 for r in rows), *(r["memory_bytes"] or 0 for r in rows)])
    unit, scale = ("GiB", 1024**3) if top >= 1024**3 else ("MiB", 1024**2)
    series = list(_by_node(rows, "memory_bytes", scale).items())
    charged = max((r["memory_bytes"] or 0 for r in rows), default=0)
    if max((r["rss_bytes"] or 0 for r in rows), default=0) > 1.1 * charged:
        series += [(f"{node} RSS sum", points) for node, points in _by_node(rows, "rss_bytes", scale).items()]
    return _both(
        line_chart,
        series,
        title=_MEMORY_TITLES.get(summary.get("memory_source") or "rss", "Memory"),
        y_label=unit,
        reference=("requested", requested / scale) if requested else None,
    )


def _when(iso: str | None) -> str | None:
    """'2026-12-03T12:13:07+00:00' -> '2026-12-03 12:13 +00:00'."""
    if not iso:
        return None
    try:
        return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M %z}"
    except ValueError:
        return iso


def render_report_html(summary: dict[str, Any]) -> str:
    template = environment().get_template("report.html.j2")
    command = summary.get("command")
    return template.render(
        s=summary,
        end=end_text(summary),
        started=_when(summary.get("start")),
        command=" ".join(command.split()) if command else None,
        charts=charts(summary),
        version=__version__,
    )
