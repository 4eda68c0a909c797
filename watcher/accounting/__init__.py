"""Slurm accounting: parsing sacct output and importing jobs and steps into the store.

``sacct.py`` builds and runs the sacct command, ``parsable.py`` splits its output into
records, ``importer.py`` loads them, one window per transaction; the value conversions
(times, sizes, TRES, job ids) are SQL macros in ``convert.sql``.
"""


class AccountingError(RuntimeError):
    """Accounting could not be imported; nothing of the failed window was stored."""
