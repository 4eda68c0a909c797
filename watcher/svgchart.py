"""Small inline SVG line charts for every reader (report.html, the site), so pages open offline
with no script or CDN."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

Point = tuple[float, float]
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d")


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


def line_chart(
    series: Sequence[tuple[str, Sequence[Point]]],
    *,
    title: str,
    y_label: str,
    y_max: float | None = None,
    reference: tuple[str, float] | None = None,
    width: int = 760,
    height: int = 220,
) -> str:
    """An SVG chart of ``series`` (label, [(seconds since start, value)]).

    ``reference`` draws a dashed horizontal line (e.g. cores available, memory requested).
    """
    left, right, top, bottom = 56, 12, 46, 30   # title, then the legend, above the plot
    plot_w, plot_h = width - left - right, height - top - bottom
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
        f'role="img" aria-label="{escape(title)}" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for i in range(round(y_top / y_step) + 1):
        value = i * y_step
        y = py(value)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        label = f"{value:.{decimals}f}"
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{label}</text>')
    for i in range(5):
        x = x_max * i / 4
        out.append(
            f'<text x="{px(x):.1f}" y="{height - 10}" class="tick" text-anchor="middle">'
            f"{_clock(x)}</text>"
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
    for i, (label, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts if y is not None)
        if path:
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        out.append(
            f'<text x="{left + 150 * i}" y="{top - 12}" class="legend" fill="{color}">'
            f"{escape(label)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
