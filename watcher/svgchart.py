"""Small inline SVG line charts for every reader (report.html, the site), so pages open offline
with no script or CDN.

A chart scales with its box (``viewBox``; give it ``width: 100%`` in CSS). The time axis ticks
at round steps (10 s, 30 s, 1 min, 5 min, 15 min, 1 h …) chosen for the span; the legend's
colours are swatches filled in the element's own style, so that a page's ``.chart text`` rule
cannot grey them. Long series are thinned to the extremes of each pixel column, so that a
week's samples stay a small file and no peak is lost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

Point = tuple[float, float | None]
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d")

# Time-axis steps, in seconds: what a person counts in.
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400, 172800, 604800)
_LEGEND_CHAR_PX = 6.6   # the average width of a legend character at 11 px, to lay them out
_LEGEND_ROW_PX = 16


def _nice_axis(value: float, divisions: int = 4) -> tuple[float, float, int]:
    """(top, step, decimals) of a y axis that reaches ``value`` in about ``divisions`` round
    steps (1, 2, 2.5 or 5 times a power of ten): a grid of 0, 0.5, 1 …, not 0, 0.62 …"""
    if value <= 0:
        return 1.0, 0.25, 2
    raw = value / divisions
    power = math.floor(math.log10(raw))
    mantissa = next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * 10**power * (1 + 1e-9))
    if mantissa == 10:
        mantissa, power = 1, power + 1
    step = mantissa * 10**power
    decimals = max(0, (1 if mantissa == 2.5 else 0) - power)
    return math.ceil(value / step - 1e-9) * step, step, decimals


def time_ticks(span_s: float, most: int = 6) -> list[float]:
    """Round tick positions from 0 to ``span_s``: the smallest step that needs at most
    ``most`` intervals (a 10-minute span: every 2 min; 3 hours: every 30 min)."""
    if span_s <= 0:
        return [0.0]
    step = next((s for s in _TIME_STEPS if span_s / s <= most), None)
    if step is None:  # beyond weeks: whole weeks
        step = _TIME_STEPS[-1] * math.ceil(span_s / (_TIME_STEPS[-1] * most))
    return [float(i * step) for i in range(int(span_s // step + 1e-9) + 1)]


def time_label(seconds: float, span_s: float) -> str:
    """'m:ss' for spans under an hour, 'h:mm' above (a day and more: 'd:hh:mm')."""
    seconds = round(seconds)
    if span_s < 3600:
        m, s = divmod(seconds, 60)
        return f"{m}:{s:02d}"
    h, m = divmod(seconds // 60, 60)
    if span_s >= 86400:
        d, h = divmod(h, 24)
        return f"{d}d {h:02d}:{m:02d}"
    return f"{h}:{m:02d}"


def thin(points: Sequence[Point], x_max: float, columns: int) -> list[Point]:
    """At most about two points per column of the plot: each column's lowest and highest, in
    time order (a gap, None, is kept where one falls). Short series come back as they were."""
    if len(points) <= 2 * columns or x_max <= 0:
        return list(points)
    out: list[Point] = []
    bucket: list[Point] = []
    current = None

    def flush() -> None:
        values = [p for p in bucket if p[1] is not None]
        if len(values) < len(bucket):
            out.append((bucket[0][0], None))
        if values:
            low = min(values, key=lambda p: p[1])
            high = max(values, key=lambda p: p[1])
            out.extend(sorted({low, high}, key=lambda p: p[0]))

    for point in points:
        column = min(columns - 1, int(point[0] / x_max * columns))
        if column != current and bucket:
            flush()
            bucket = []
        current = column
        bucket.append(point)
    if bucket:
        flush()
    return out


def _path(points: list[tuple[float, float]], step: bool) -> str:
    """SVG path data: straight lines, or sample-and-hold (each value held until the next)."""
    parts = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    previous_y = points[0][1]
    for x, y in points[1:]:
        if step:
            parts.append(f"H{x:.1f}V{y:.1f}" if y != previous_y else f"H{x:.1f}")
        else:
            parts.append(f"L{x:.1f},{y:.1f}")
        previous_y = y
    return "".join(parts)


def _legend_rows(labels: Sequence[str], left: int, room: float) -> list[list[tuple[int, float]]]:
    """The legend's items, flowed into rows of ``room`` pixels: [(series index, x)] per row."""
    rows: list[list[tuple[int, float]]] = [[]]
    x = float(left)
    for i, label in enumerate(labels):
        item = 14 + _LEGEND_CHAR_PX * len(label) + 14
        if rows[-1] and x + item > left + room:
            rows.append([])
            x = float(left)
        rows[-1].append((i, x))
        x += item
    return rows


def line_chart(
    series: Sequence[tuple[str, Sequence[Point]]],
    *,
    title: str,
    y_label: str,
    y_max: float | None = None,
    reference: tuple[str, float] | None = None,
    width: int = 760,
    height: int = 220,
    step: bool = False,
    css_class: str = "chart",
) -> str:
    """An SVG chart of ``series`` (label, [(seconds since start, value or None)]).

    ``reference`` draws a dashed horizontal line (e.g. cores available, memory requested);
    ``step`` holds each sample's value until the next (what a sampled gauge really says),
    else the points are joined by straight lines.
    """
    left, right, bottom = 56, 12, 30
    plot_w = width - left - right
    legend = _legend_rows([label for label, _ in series], left, plot_w)
    top = 30 + _LEGEND_ROW_PX * len(legend)   # the title, then the legend, above the plot
    height = max(height, top + bottom + 120)
    plot_h = height - top - bottom
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts if y is not None]
    x_max = max(xs, default=1.0) or 1.0
    top_value = max([*ys, reference[1] if reference else 0.0], default=1.0) * 1.05
    if y_max is not None and top_value <= y_max * 1.05:
        top_value = y_max   # a bounded scale (percent) ends at its bound
    y_top, y_step, decimals = _nice_axis(top_value)

    def px(x: float) -> float:
        return left + plot_w * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - y / y_top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}" class="{escape(css_class)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for i in range(round(y_top / y_step) + 1):
        value = i * y_step
        y = py(value)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        label = f"{value:.{decimals}f}"
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{label}</text>')
    ticks = time_ticks(x_max, most=max(2, min(6, plot_w // 70)))
    for x in ticks:
        out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + plot_h}" '
                   'class="grid"/>')
        # The last label ends at the plot's edge rather than spill over the chart's.
        anchor = "end" if px(x) > width - right - 14 else "middle"
        out.append(
            f'<text x="{min(px(x), width - 2):.1f}" y="{height - 10}" class="tick time" '
            f'text-anchor="{anchor}">{time_label(x, x_max)}</text>'
        )
    out.append(
        f'<text x="14" y="{top + plot_h / 2:.0f}" class="axis" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.0f})" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    if reference:
        y = py(reference[1])
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="ref"/>')
        out.append(
            f'<text x="{width - right - 4}" y="{y - 4:.1f}" class="tick" text-anchor="end">'
            f"{escape(reference[0])}</text>"
        )
    for i, (_, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        for run in _runs(thin(pts, x_max, plot_w)):
            if len(run) == 1:  # one sample alone: a dot, not an invisible line
                out.append(f'<circle cx="{px(run[0][0]):.1f}" cy="{py(run[0][1]):.1f}" r="2.5" '
                           f'fill="{color}" class="series"/>')
                continue
            path = _path([(px(x), py(y)) for x, y in run], step)
            out.append(f'<path d="{path}" fill="none" stroke="{color}" '
                       'stroke-width="1.8" class="series"/>')
    for row, items in enumerate(legend):
        y = 30 + _LEGEND_ROW_PX * row
        for i, x in items:
            color = PALETTE[i % len(PALETTE)]
            out.append(f'<rect x="{x:.0f}" y="{y - 9}" width="10" height="10" rx="2" '
                       f'fill="{color}" class="swatch"/>')
            out.append(f'<text x="{x + 14:.0f}" y="{y}" class="legend">'
                       f"{escape(series[i][0])}</text>")
    out.append("</svg>")
    return "\n".join(out)


def _runs(points: Sequence[Point]) -> list[list[tuple[float, float]]]:
    """The stretches of a series between its gaps (None: no value there)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [run for run in runs if run]
