"""Calendar-aligned analysis periods: ``[start, end)`` in a configured time zone.

Accepted specs (the spec's form decides the period's length):

- ``2026-W47``: an ISO week, Monday 00:00 to the next Monday
- ``2026-11-22``: a day
- ``2026-11``: a month
- ``current``: the period of ``kind`` that contains now (still growing)
- ``previous`` or nothing: the last complete period of ``kind``

The same spec always gives the same ``[start, end)``, so re-running a period is deterministic.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from watcher.analysis.model import Period
from watcher.errors import TuringwatchError

KINDS = ("day", "week", "month")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class PeriodError(TuringwatchError, ValueError):
    """A period spec that is not one of the accepted forms."""


def parse_period(
    spec: str | None, kind: str = "week", tz: str = "UTC", now: datetime | None = None
) -> Period:
    """The period named by ``spec`` (see the module docstring)."""
    if kind not in KINDS:
        raise PeriodError(f"period kind must be one of {', '.join(KINDS)}, got {kind!r}")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise PeriodError(f"unknown time zone {tz!r}") from None
    spec = (spec or "previous").strip()
    if spec in ("current", "previous"):
        today = (now or datetime.now(zone)).astimezone(zone).date()
        first = _first_day(today, kind)
        if spec == "previous":
            first = _first_day(first - timedelta(days=1), kind)
        return _period(first, kind, zone)
    try:
        if m := _WEEK.match(spec):
            return _period(date.fromisocalendar(int(m[1]), int(m[2]), 1), "week", zone)
        if m := _DAY.match(spec):
            return _period(date(int(m[1]), int(m[2]), int(m[3])), "day", zone)
        if m := _MONTH.match(spec):
            return _period(date(int(m[1]), int(m[2]), 1), "month", zone)
    except ValueError as exc:
        raise PeriodError(f"period {spec!r}: {exc}") from None
    raise PeriodError(
        f"period {spec!r} is none of YYYY-Www, YYYY-MM-DD, YYYY-MM, current, previous"
    )


def _first_day(day: date, kind: str) -> date:
    if kind == "day":
        return day
    if kind == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_first_day(first: date, kind: str) -> date:
    if kind == "day":
        return first + timedelta(days=1)
    if kind == "week":
        return first + timedelta(days=7)
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)


def _period_id(first: date, kind: str) -> str:
    if kind == "day":
        return first.isoformat()
    if kind == "week":
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{first.year}-{first.month:02d}"


def _period(first: date, kind: str, zone: ZoneInfo) -> Period:
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(_next_first_day(first, kind), time(), zone)
    return Period(id=_period_id(first, kind), start=start, end=end)
