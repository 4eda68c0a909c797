"""How numbers read in letters: thousands separators, sensible precision, units from names.

Column ids and metric keys carry their unit as a suffix (``_bytes``, ``_s``, ``_pct``,
``_fraction``, ``_wh``, ``_w``, ``_mhz``), so a value is formatted by looking at its name only.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

# Shares between 0 and 1 whose names do not end in _fraction.
FRACTIONS = {"cpu_efficiency", "system_share", "parallel_fraction"}

DASH = "–"
NBSP = "\u00a0"    # keeps a number and its unit on one line when a table cell wraps
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def number(value: Any) -> str:
    """4096 -> '4,096'; 0.4213 -> '0.42'; 12.34 -> '12.3'; 1234.5 -> '1,234'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    size = abs(value)
    if size >= 100 or value == int(value):
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def percent(value: Any) -> str:
    """9.3 -> '9%'; 0.42 -> '0.4%' (small shares keep one decimal so they do not read as 0)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if 0 < abs(value) < 10:
        return f"{value:.1f}%".replace(".0%", "%")
    return f"{value:,.0f}%"


def size(value: Any) -> str:
    """Bytes in binary units: 3221225472 -> '3.0 GiB'."""
    if value is None:
        return DASH
    amount = float(value)
    for unit in _BYTE_UNITS:
        if abs(amount) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{amount:,.0f}{NBSP}{unit}" if unit == "B" else f"{amount:,.1f}{NBSP}{unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def duration(value: Any) -> str:
    """Seconds, as people say them: '45 s', '12 min', '3 h 05 min', '2 d 4 h'."""
    if value is None:
        return DASH
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


def by_name(name: str, value: Any) -> str:
    """Format ``value`` according to the unit suffix of ``name``."""
    if value is None:
        return DASH
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or DASH
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return number(value)
    if name.endswith("_id") or name in ("job", "step"):
        return str(value)  # an identifier, not a quantity: no thousands separators
    if name.endswith(("_fraction", "_share")) or name in FRACTIONS:
        return percent(100 * value)
    if name.endswith("_kwh"):
        return f"{number(float(value))}{NBSP}kWh"
    if name.endswith("_wh"):
        return f"{number(float(value))}{NBSP}Wh"
    if name.endswith("_bytes"):
        return size(value)
    if name.endswith(("_s", "_seconds")):
        return duration(value)
    if name.endswith(("_pct", "_percent")):
        return percent(value)
    if name.endswith(("_w", "_watts")):
        return f"{number(float(value))}{NBSP}W"
    if name.endswith("_mhz"):
        return f"{number(value)}{NBSP}MHz"
    return number(value)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """'1 job', '3 jobs', with the count formatted."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"
