"""Where turingwatch's log lines go: configured once, by ``cli.py``, for every command.

Every module logs through ``logging.getLogger(__name__)``; this module alone decides what
reaches stderr and how it looks:

- on a terminal, in a job's output (``slurm-N.out``) or a cron mail: ``turingwatch: <message>``,
  one line per event (at ``-vv`` the logger's name comes after the prefix);
- when stderr is the systemd journal (``JOURNAL_STREAM`` names stderr itself): no timestamp,
  since journald adds one, and the ``<N>`` priority prefix journald reads (sd-daemon(3)), with
  any traceback folded into the same line, so one event stays one journal entry.

Levels: WARNING by default; INFO for the commands that report progress as they work, when
stderr is a terminal or the journal (someone watches, or keeps a log; a cron mail or a pipe
gets no progress lines); ``-v`` INFO, ``-vv`` DEBUG, ``-q`` errors only. Other libraries'
records stay at WARNING (ERROR with ``-q``) whatever ``-v`` says.

The root handler is installed only where nobody has configured logging before (Flask's
``has_level_handler`` idea): pytest's ``caplog`` and an application that embeds turingwatch
keep their own handlers and levels, and this module then changes nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

PREFIX = "turingwatch"
PACKAGE = "watcher"
# syslog priorities (sd-daemon(3)) for the journal's "<N>" line prefix.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def level_for(verbose: int = 0, quiet: bool = False, *, progress: bool = False) -> int:
    """The level of turingwatch's own loggers for these options.

    Args:
        verbose: how often ``-v`` was given (1: INFO, 2 or more: DEBUG).
        quiet: ``-q``: errors only; it wins over ``-v``.
        progress: the command reports progress as it works and someone watches (INFO).
    """
    if quiet:
        return logging.ERROR
    if verbose >= 2:
        return logging.DEBUG
    if verbose == 1 or progress:
        return logging.INFO
    return logging.WARNING


class StderrHandler(logging.StreamHandler):
    """A handler for whatever ``sys.stderr`` is when a record comes, not when it was made.

    Looked up at each record so that a stderr replaced later (click's test runner, a job script
    that redirects) is followed. A stderr that is closed or gone loses the line, never the job.
    """

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass  # always sys.stderr, as it is at the time

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError | ValueError):
            return  # stderr is closed or its reader went away: nowhere left to say it
        super().handleError(record)


class LineFormatter(logging.Formatter):
    """``turingwatch: <message>``; for the journal ``<N>name: <message>`` folded to one line."""

    def __init__(self, *, journal: bool = False, names: bool = False) -> None:
        if journal:
            fmt = "%(name)s: %(message)s"
        elif names:
            fmt = f"{PREFIX}: %(name)s: %(message)s"
        else:
            fmt = f"{PREFIX}: %(message)s"
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.journal:
            return text
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        # journald makes an entry of each line: a traceback's lines would be scattered.
        return f"<{priority}>" + " | ".join(line for line in text.splitlines() if line.strip())


def stderr_is_journal(env: Mapping[str, str] | None = None) -> bool:
    """Whether stderr is the systemd journal's stream, as ``JOURNAL_STREAM`` says it is.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` for a service whose output goes to the
    journal (systemd.exec(5)). The variable alone proves nothing: children inherit it (a shell
    in a terminal started as a user service, and any job submitted from there), so stderr
    itself must be that stream, or a job's warnings would lose their ``turingwatch:`` prefix.
    """
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (AttributeError, OSError, ValueError):
        return False


def has_level_handler(logger: logging.Logger) -> bool:
    """Whether a record of this logger's effective level would reach some handler."""
    level = logger.getEffectiveLevel()
    current: logging.Logger | None = logger
    while current is not None:
        if any(handler.level <= level for handler in current.handlers):
            return True
        if not current.propagate:
            break
        current = current.parent
    return False


def _our_handler() -> StderrHandler | None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, StderrHandler):
            return handler
    return None


def setup_logging(
    verbose: int = 0,
    quiet: bool = False,
    *,
    progress: bool = False,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Configure logging for a command; a second call only changes the level.

    Args:
        verbose: how often ``-v`` was given.
        quiet: ``-q``, errors only.
        progress: the command reports progress as it works (INFO when stderr is a terminal
            or the journal).
        env: the environment to read ``JOURNAL_STREAM`` from (default ``os.environ``).

    Returns:
        True if turingwatch's handler is in charge; False where logging was configured
        before (an embedding application, pytest), which is then left as it was.
    """
    handler = _our_handler()
    if handler is None:
        if has_level_handler(logging.getLogger(PACKAGE)):
            return False
        handler = StderrHandler()
        logging.getLogger().addHandler(handler)
    journal = stderr_is_journal(env)
    level = level_for(verbose, quiet, progress=progress and (journal or _isatty(sys.stderr)))
    handler.setFormatter(LineFormatter(journal=journal, names=level <= logging.DEBUG))
    logging.getLogger().setLevel(max(level, logging.WARNING))
    logging.getLogger(PACKAGE).setLevel(level)
    return True


def at_least(level: int) -> None:
    """Show turingwatch's records from ``level`` up (a command's own ``--verbose``).

    Only where this module configured logging: elsewhere the levels belong to whoever set them.
    """
    if _our_handler() is None:
        return
    package = logging.getLogger(PACKAGE)
    if package.getEffectiveLevel() > level:
        package.setLevel(level)


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
