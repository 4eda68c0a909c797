"""The sent-ledger: which letters were delivered, so that none is ever sent twice.

It is a small SQLite file rather than a table in the DuckDB store: DuckDB lets one process
write at a time, and a mail run (minutes, throttled) must not lock the store away from
``import-accounting`` or ``analyze``. SQLite in WAL mode with ``synchronous=FULL`` makes each
state change durable before the next SMTP command, and an exclusive ``flock`` on a lock file
next to it keeps two mail runs from working on the same ledger at once. The states, and what
each means on the next run, are in ledger.sql and in watcher/mailer/delivery.py; a ledger
that cannot be written raises LedgerError, which stops the run (a letter whose state cannot be
recorded must not go).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from watcher.config import Config, expand_path
from watcher.mailer.errors import MailError
from watcher.store import sql_text

SENDING, SENT, FAILED = "sending", "sent", "failed"


class LedgerError(MailError):
    """The sent-ledger cannot be written: no letter may go until it can."""


@dataclass(frozen=True)
class LedgerEntry:
    period: str
    user: str
    state: str
    message_id: str
    recipients: str
    attempts: int
    last_error: str | None
    updated_at: str
    sent_at: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@cache
def _statements() -> tuple[str, dict[str, str]]:
    """ledger.sql as its schema and its named statements (see the file's header)."""
    schema, *named = re.split(r"^-- name: *", sql_text("watcher.mailer", "ledger.sql"),
                              flags=re.MULTILINE)
    statements = {}
    for part in named:
        name, _, text = part.partition("\n")
        statements[name.strip()] = text.strip()
    return schema, statements


class Ledger:
    """An open ledger; use as a context manager so the run lock is always released."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = os.fdopen(_private_file(path.with_name(path.name + ".lock")), "r+")
            # SQLite gives the -wal and -shm files the mode of the database file it finds.
            os.close(_private_file(path))
        except OSError as exc:
            raise MailError(f"sent-ledger {path} cannot be created: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise MailError(
                f"another mail run holds the sent-ledger {path}; wait for it to finish"
            ) from None
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_statements()[0])
        except sqlite3.Error as exc:
            self.close()
            raise MailError(f"sent-ledger {path} cannot be opened: {exc}") from None

    def _run(self, statement: str, *params: object) -> sqlite3.Cursor:
        try:
            return self._db.execute(_statements()[1][statement], params)
        except sqlite3.Error as exc:
            raise LedgerError(f"sent-ledger {self.path}: {statement}: {exc}") from None

    def entry(self, period: str, user: str) -> LedgerEntry | None:
        row = self._run("entry", period, user).fetchone()
        return LedgerEntry(*row) if row else None

    def entries(self, period: str) -> list[LedgerEntry]:
        return [LedgerEntry(*row) for row in self._run("entries", period).fetchall()]

    def unconfirmed(self) -> list[LedgerEntry]:
        """Every letter, of any period, that a run left in 'sending'."""
        return [LedgerEntry(*row) for row in self._run("unconfirmed").fetchall()]

    def mark_sending(self, period: str, user: str, message_id: str, recipients: list[str]) -> None:
        """Record, durably, that the letter's text is handed to the server now (before DATA)."""
        self._run("mark_sending", period, user, message_id, ", ".join(recipients), self.owner,
                  _now())

    def mark_failed(self, period: str, user: str, error: str, *, before_data: bool = False,
                    message_id: str = "", recipients: list[str] | tuple[str, ...] = ()) -> None:
        """Record a refusal. ``before_data``: the try ended before 'sending' was written (a
        refused recipient, a broken connection), so it is counted here, as a new row if need
        be, with the letter's ``message_id`` and ``recipients``."""
        if before_data:
            self._run("mark_failed_before_data", period, user, message_id, ", ".join(recipients),
                      error, self.owner, _now())
        else:
            self._run("mark_failed", error, _now(), period, user)

    def mark_sent(self, period: str, user: str, note: str | None = None) -> None:
        now = _now()
        self._run("mark_sent", note, now, now, period, user)

    def resolve_sent(self, period: str, user: str, note: str) -> bool:
        """Count an unconfirmed letter as sent (an admin found it in the server's log);
        False when the letter is not unconfirmed."""
        now = _now()
        return self._run("resolve_sent", note, self.owner, now, now, period, user).rowcount == 1

    def close(self) -> None:
        conn = getattr(self, "_db", None)
        if conn is not None:
            conn.close()
            self._db = None
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _private_file(path: Path) -> int:
    """Open (creating it) a ledger file readable by its owner only: it names who got which
    letter. An older ledger left 0644 is made 0600; a link is never followed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def ledger_path(config: Config) -> Path:
    """``mail.ledger``, else ``mail-ledger.sqlite3`` next to the store."""
    if config.mail.ledger:
        return expand_path(config.mail.ledger)
    return expand_path(config.store.path).parent / "mail-ledger.sqlite3"
