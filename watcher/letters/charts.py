"""Small bar charts of a user's worst jobs, drawn with Pillow as PNG for inline (CID) images.

Pillow rather than matplotlib: a letter needs two plain bar charts, and drawing them directly
takes a few milliseconds where a matplotlib figure takes tens (see bench/bench_letters.py).
Images are drawn at twice their display size so they stay sharp on high-density screens, on
an opaque white card so that mail clients in dark mode do not put dark text on a dark page.
Labels are job ids and names from the accounting, made one short printable line first
(Pillow refuses to measure text with a newline, and fitting a 10 kB name took a minute).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from watcher.letters.view import shown
from watcher.units import number, percent, plural

SCALE = 2                 # pixels drawn per displayed pixel
WIDTH = 660               # displayed width, fits the letter's 712 px column
ROW_H, TOP, BOTTOM = 26, 10, 10
LABEL_W, VALUE_W = 200, 130
ID_MAX, NAME_MAX = 20, 40          # characters of a label's job id and name, before fitting
INK, MUTED, GRID = (31, 35, 40), (87, 96, 106), (208, 215, 222)
RESERVED = (221, 228, 236)
GOOD, WARN, BAD = (46, 125, 50), (198, 120, 0), (198, 40, 40)


@dataclass(frozen=True)
class Bar:
    label: str               # "123456 train.sh"
    value: float             # the measured part
    scale: float             # the full length the bar is drawn against (reserved, or 100 %)
    text: str                # the number printed at the end of the row
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Chart:
    name: str                # file and Content-ID stem: "cores", "gpu"
    title: str
    alt: str                 # the chart's data in words, for readers who cannot see it
    png: bytes
    width: int               # displayed size in CSS pixels
    height: int


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size * SCALE)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def draw_bars(bars: Sequence[Bar]) -> tuple[bytes, int, int]:
    """Horizontal bars over a light 'reserved' track; returns PNG bytes and display size."""
    height = TOP + ROW_H * len(bars) + BOTTOM
    image = Image.new("RGB", (WIDTH * SCALE, height * SCALE), "white")
    draw = ImageDraw.Draw(image)
    font = _font(12)
    track_x0 = LABEL_W * SCALE
    track_w = (WIDTH - LABEL_W - VALUE_W) * SCALE
    for i, bar in enumerate(bars):
        y = (TOP + i * ROW_H) * SCALE
        mid = y + ROW_H * SCALE // 2
        label = _fit(draw, shown(bar.label, ID_MAX + 1 + NAME_MAX), font, (LABEL_W - 10) * SCALE)
        draw.text((4 * SCALE, mid), label, fill=INK, font=font, anchor="lm")
        top, bottom = y + 6 * SCALE, y + (ROW_H - 6) * SCALE
        draw.rectangle((track_x0, top, track_x0 + track_w, bottom), fill=RESERVED)
        share = 0.0 if bar.scale <= 0 else min(max(bar.value / bar.scale, 0.0), 1.0)
        if share > 0:
            end = track_x0 + max(round(track_w * share), SCALE)
            draw.rectangle((track_x0, top, end, bottom), fill=bar.color)
        draw.text(
            (track_x0 + track_w + 8 * SCALE, mid), bar.text, fill=MUTED, font=font, anchor="lm"
        )
    draw.line((track_x0, TOP * SCALE, track_x0, (height - BOTTOM) * SCALE), fill=GRID,
              width=SCALE)
    out = io.BytesIO()
    image.quantize(palette=_palette(), dither=Image.Dither.NONE).save(
        out, format="PNG", compress_level=6
    )
    return out.getvalue(), WIDTH, height


@lru_cache(maxsize=1)
def _palette() -> Image.Image:
    """The chart's few colours plus the anti-aliasing shades of its text on white.

    Mapping onto a known palette is several times faster than computing one per image, and
    an 8-bit PNG is a third of the size of an RGB one.
    """
    colors = [(255, 255, 255), INK, MUTED, GRID, RESERVED, GOOD, WARN, BAD]
    for ink in (INK, MUTED):
        for step in range(1, 24):
            alpha = step / 24
            colors.append(tuple(round(255 * (1 - alpha) + c * alpha) for c in ink))
    flat = [channel for color in colors for channel in color]
    palette = Image.new("P", (1, 1))
    palette.putpalette(flat + [0] * (768 - len(flat)))
    return palette


def _num(job: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = job.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _label(job: Mapping[str, Any]) -> str:
    job_id = shown(job.get("job_id_display") or job.get("job_id") or "?", ID_MAX)
    return f"{job_id} {shown(job.get('job_name') or '', NAME_MAX)}".strip()


def _share_color(share: float) -> tuple[int, int, int]:
    return BAD if share < 0.25 else WARN if share < 0.6 else GOOD


def cores_chart(jobs: Sequence[Mapping[str, Any]], limit: int = 8) -> Chart | None:
    """Cores in use on average against cores reserved, for the jobs that left most idle."""
    rows = []
    for job in jobs:
        reserved = _num(job, "ncpus")
        used = _num(job, "mean_busy_cores")
        hours = _num(job, "elapsed_s")
        if reserved and used is not None:
            idle_core_hours = max(reserved - used, 0.0) * (hours or 3600) / 3600
            rows.append((idle_core_hours, job, used, reserved))
    rows = [r for r in rows if r[0] > 0]
    if not rows:
        return None
    rows.sort(key=lambda r: -r[0])
    bars = [
        Bar(_label(job), used, reserved, f"{used:.1f} of {number(int(reserved))} cores",
            _share_color(used / reserved))
        for _, job, used, reserved in rows[:limit]
    ]
    png, width, height = draw_bars(bars)
    alt = (f"Bar chart of cores in use on average, out of cores reserved, for your "
           f"{plural(len(bars), 'job')} that left the most cores idle: "
           + "; ".join(f"job {b.label}: {b.text}" for b in bars) + ".")
    return Chart("cores", "Cores in use vs. cores reserved", alt, png, width, height)


def gpu_chart(jobs: Sequence[Mapping[str, Any]], limit: int = 8) -> Chart | None:
    """Average GPU utilization of the GPU jobs that wasted the most GPU time."""
    rows = []
    for job in jobs:
        gpus = _num(job, "gpus")
        util = _num(job, "gpu_avg_util_pct")
        if not gpus or util is None:
            continue
        hours = (_num(job, "elapsed_s") or 3600) / 3600
        rows.append(((100 - util) * gpus * hours, job, util, int(gpus)))
    if not rows:
        return None
    rows.sort(key=lambda r: -r[0])
    bars = [
        Bar(_label(job), util, 100.0, f"{percent(util)} of {gpus} GPU" + ("s" if gpus > 1 else ""),
            _share_color(util / 100))
        for _, job, util, gpus in rows[:limit]
    ]
    png, width, height = draw_bars(bars)
    alt = (f"Bar chart of average GPU utilization for your {plural(len(bars), 'GPU job')} "
           "that left their GPUs idle longest: " + "; ".join(f"job {b.label}: {b.text}" for b in bars) + ".")
    return Chart("gpu", "GPU utilization", alt, png, width, height)


def letter_charts(jobs: Sequence[Mapping[str, Any]]) -> list[Chart]:
    return [c for c in (cores_chart(jobs), gpu_chart(jobs)) if c is not None]
