"""How numbers read, for every reader: the card, report.html, the letters and the CLI.

One formatter per kind of quantity, each also a Jinja filter (``watcher.templating``):
bytes in binary units, durations (the clock form the card uses and the spoken form letters
use), percentages and shares, plain numbers, energy, and :func:`by_name`, which formats a
value by the unit suffix of its name (``_bytes``, ``_s``, ``_pct``, ``_fraction``, ``_wh``,
``_w``, ``_mhz``; STYLE 7.1: units are in names).

A missing value reads as ``missing``: an en dash by default (a table cell), ``"n/a"`` where a
sentence needs a word (the card passes it).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

DASH = "–"
NBSP = "\u00a0"    # keeps a number and its unit on one line when a table cell wraps
NA = "n/a"

# Shares between 0 and 1 whose names do not end in _fraction or _share.
FRACTIONS = {"cpu_efficiency", "system_share", "parallel_fraction"}

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any, *, missing: str = DASH) -> str:
    """4096 -> '4,096'; 0.4213 -> '0.42'; 12.34 -> '12.3'; 1234.5 -> '1,234'."""
    if _absent(value):
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def percent(value: Any, *, missing: str = DASH) -> str:
    """A value already in percent: 9.3 -> '9.3%'; 42.4 -> '42%'.

    Below 10 % one decimal stays, so that a small share does not read as 0 %.
    """
    if _absent(value):
        return missing
    if 0 < abs(value) < 10:
        return f"{value:.1f}%".replace(".0%", "%")
    return f"{value:,.0f}%"


def share(fraction: Any, *, missing: str = DASH) -> str:
    """A share between 0 and 1 as a percentage: 0.42 -> '42%'; 0.093 -> '9.3%'."""
    return missing if _absent(fraction) else percent(100 * fraction)


def size(value: Any, *, missing: str = DASH) -> str:
    """Bytes in binary units: 3221225472 -> '3.0 GiB' (with a no-break space)."""
    if _absent(value):
        return missing
    amount = float(value)
    for unit in _BYTE_UNITS:
        if abs(amount) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{amount:,.0f}{NBSP}{unit}" if unit == "B" else f"{amount:,.1f}{NBSP}{unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def duration(value: Any, *, missing: str = DASH) -> str:
    """Seconds, as people say them: '45 s', '12 min', '3 h 05 min', '2 d 4 h'."""
    if _absent(value):
        return missing
    seconds = round(float(value))
    if seconds < 60:
        return f"{seconds}{NBSP}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}{NBSP}min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}{NBSP}h {minutes:02d}{NBSP}min"
    days, hours = divmod(hours, 24)
    return f"{days}{NBSP}d {hours}{NBSP}h"


def clock(value: Any, *, missing: str = NA) -> str:
    """Seconds in Slurm's form, [D-]HH:MM:SS: 93784 -> '1-02:03:04' (what sacct shows)."""
    if _absent(value):
        return missing
    total = round(float(value))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


def energy(joules: Any, *, missing: str = NA) -> str:
    """Joules in the largest unit that reads well: '540 J', '1.5 Wh', '2.25 kWh'."""
    if _absent(joules):
        return missing
    if joules >= 3.6e6:
        return f"{joules / 3.6e6:.2f} kWh"
    if joules >= 3600:
        return f"{joules / 3600:.1f} Wh"
    return f"{joules:.0f} J"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """'1 job', '3 jobs', with the count formatted."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"


def by_name(name: str, value: Any, *, missing: str = DASH) -> str:
    """Format ``value`` according to the unit suffix of ``name`` ('elapsed_s' -> '1 h 30 min')."""
    if value is None:
        return missing
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or missing
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return number(value, missing=missing)
    if name.endswith("_id") or name in ("job", "step"):
        return str(value)  # an identifier, not a quantity: no thousands separators
    if name.endswith(("_fraction", "_share")) or name in FRACTIONS:
        return share(value, missing=missing)
    if name.endswith("_kwh"):
        return f"{number(float(value))}{NBSP}kWh"
    if name.endswith("_wh"):
        return f"{number(float(value))}{NBSP}Wh"
    if name.endswith("_bytes"):
        return size(value, missing=missing)
    if name.endswith(("_s", "_seconds")):
        return duration(value, missing=missing)
    if name.endswith(("_pct", "_percent")):
        return percent(value, missing=missing)
    if name.endswith(("_w", "_watts")):
        return f"{number(float(value))}{NBSP}W"
    if name.endswith("_mhz"):
        return f"{number(value)}{NBSP}MHz"
    return number(value, missing=missing)
