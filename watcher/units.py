"""Human-readable numbers, shared by the report card and the HTML report."""

from __future__ import annotations

from watcher.letters.formatting import size


def human_bytes(n: float | None) -> str:
    """Binary units, as the letters write them (one formatter for every report)."""
    return "n/a" if n is None else size(n)


def human_duration(seconds: float | None) -> str:
    """Slurm style: [D-]HH:MM:SS."""
    if seconds is None:
        return "n/a"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.0f}%"


def human_energy(joules: float | None) -> str:
    if joules is None:
        return "n/a"
    if joules >= 3.6e6:
        return f"{joules / 3.6e6:.2f} kWh"
    if joules >= 3600:
        return f"{joules / 3600:.1f} Wh"
    return f"{joules:.0f} J"
