"""The plain-text letter's two layouts: paragraphs wrapped at 78 columns, and tables.

Mail programs that show the text part (mutt, a phone's "plain text" view, a screen reader)
wrap long lines themselves, in the middle of a table row, which turns a table into a heap of
numbers. So every line is made to fit 78 columns here: paragraphs are wrapped at spaces, and a
table's columns stay columns: a cell too wide for its column is cut with "…", never wrapped.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Protocol

WIDTH = 78
GAP = "  "
MIN_COLUMN = 5      # a column is never cut narrower than this (or its widest cell)


def wrap(text: str, indent: int = 0, hang: int | None = None, width: int = WIDTH) -> str:
    """``text`` as lines of at most ``width`` columns, ``indent`` spaces before the first line
    and ``hang`` (default ``indent``) before the others. A word longer than a line (a long URL)
    is broken: no line ever passes ``width``."""
    hang = indent if hang is None else hang
    lines = textwrap.wrap(
        " ".join(str(text).split()), width=width, initial_indent=" " * indent,
        subsequent_indent=" " * hang, break_on_hyphens=False, break_long_words=True,
    )
    return "\n".join(lines)


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


class _Column(Protocol):
    heading: str
    numeric: bool


def fit_widths(natural: list[int], floor: list[int], room: int) -> list[int]:
    """Narrow the widest columns first, none below its floor, until the columns fit ``room``;
    when the floors alone are too wide, the floors give way too (a line never passes it)."""
    widths = list(natural)
    for limits in (floor, [1] * len(widths)):
        while sum(widths) > room:
            candidates = [i for i in range(len(widths)) if widths[i] > limits[i]]
            if not candidates:
                break
            widths[max(candidates, key=lambda i: widths[i])] -= 1
    return widths


def heading_lines(heading: str) -> tuple[str, str]:
    """A heading on two lines, split at the space nearest its middle ("Idle", "core-hours"),
    so that a long heading does not make its column of short numbers wide."""
    words = heading.split(" ")
    if len(words) < 2:
        return "", heading
    best = min(range(1, len(words)), key=lambda k: max(
        len(" ".join(words[:k])), len(" ".join(words[k:]))))
    return " ".join(words[:best]), " ".join(words[best:])


def table(
    headings: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool],
    notes: Sequence[str | None] = (), keep: Sequence[bool] = (), width: int = WIDTH,
) -> str:
    """Aligned columns within ``width``; numbers right-aligned, headings on two lines.
    A column marked in ``keep`` (an id, how a job ended, a number) is cut only when nothing
    else can be; the others (names) first. ``notes[i]``, when given, is a line of its own
    under row i (the problems found on it), wrapped and indented."""
    count = len(headings)
    split = [heading_lines(h) for h in headings]
    natural = [max([len(r[i]) for r in rows] + [len(split[i][0]), len(split[i][1])])
               for i in range(count)]
    floor = [natural[i] if (i < len(keep) and keep[i]) else min(natural[i], MIN_COLUMN)
             for i in range(count)]
    widths = fit_widths(natural, floor, width - len(GAP) * (count - 1))

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, w, num in zip(cells, widths, numeric, strict=True):
            cell = cut(cell, w)
            out.append(cell.rjust(w) if num else cell.ljust(w))
        return cut(GAP.join(out).rstrip(), width)

    lines = [line([top for top, _ in split]), line([bottom for _, bottom in split]),
             cut(GAP.join("-" * w for w in widths), width)]
    if not any(top for top, _ in split):
        lines.pop(0)
    for i, row in enumerate(rows):
        lines.append(line(row))
        note = notes[i] if i < len(notes) else None
        if note:
            lines.append(wrap(note, indent=4, width=width))
    return "\n".join(lines)
