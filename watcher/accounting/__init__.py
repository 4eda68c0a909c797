"""Slurm accounting: parsing sacct output and importing jobs and steps into the store.

``sacct.py`` builds and runs the sacct command, ``parsable.py`` puts its output back into
records, ``importer.py`` loads them, one window per transaction. The conversions (times,
sizes, TRES, job ids) are DuckDB macros in ``convert.sql``, used by ``stage.sql``;
``upsert.sql`` writes the tables. docs/accounting.md explains the choices.
"""

from watcher.errors import TuringwatchError


class AccountingError(TuringwatchError):
    """Accounting could not be imported; nothing of the failed window was stored."""
