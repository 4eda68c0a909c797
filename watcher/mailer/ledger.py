"""The sent-ledger: which letters were delivered, so that none is ever sent twice.

It is a small SQLite file rather than a table in the DuckDB store: DuckDB lets one process
write at a time, and a mail run (minutes, throttled) must not lock the store away from
``import-accounting`` or ``analyze``. SQLite in WAL mode with ``synchronous=FULL`` makes each
state change durable before the next SMTP command, and an exclusive ``flock`` on a lock file
next to it keeps two mail runs from working on the same ledger at once.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from watcher.config import Config, expand_path
from watcher.mailer.errors import MailError
from watcher.store import sql_text

SENDING, SENT, FAILED = "sending", "sent", "failed"


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


class Ledger:
    """An open ledger; use as a context manager so the run lock is always released."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115
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
            self._db.executescript(sql_text("watcher.mailer", "ledger.sql"))
        except sqlite3.Error as exc:
            self.close()
            raise MailError(f"sent-ledger {path} cannot be opened: {exc}") from None

    def entry(self, period: str, user: str) -> LedgerEntry | None:
        row = self._db.execute(
            "SELECT period, user_name, state, message_id, recipients, attempts, last_error,"
            " updated_at, sent_at FROM deliveries WHERE period = ? AND user_name = ?",
            (period, user),
        ).fetchone()
        return LedgerEntry(*row) if row else None

    def entries(self, period: str) -> list[LedgerEntry]:
        rows = self._db.execute(
            "SELECT period, user_name, state, message_id, recipients, attempts, last_error,"
            " updated_at, sent_at FROM deliveries WHERE period = ? ORDER BY user_name",
            (period,),
        ).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def mark_sending(self, period: str, user: str, message_id: str, recipients: list[str]) -> None:
        """Record, durably, that this letter is about to be handed to the SMTP server."""
        self._db.execute(
            "INSERT INTO deliveries (period, user_name, state, message_id, recipients, attempts,"
            " claimed_by, updated_at) VALUES (?, ?, 'sending', ?, ?, 1, ?, ?)"
            " ON CONFLICT (period, user_name) DO UPDATE SET state = 'sending',"
            " message_id = excluded.message_id, recipients = excluded.recipients,"
            " attempts = deliveries.attempts + 1, claimed_by = excluded.claimed_by,"
            " updated_at = excluded.updated_at",
            (period, user, message_id, ", ".join(recipients), self.owner, _now()),
        )

    def mark_sent(self, period: str, user: str, note: str | None = None) -> None:
        now = _now()
        self._db.execute(
            "UPDATE deliveries SET state = 'sent', last_error = ?, updated_at = ?, sent_at = ?"
            " WHERE period = ? AND user_name = ?",
            (note, now, now, period, user),
        )

    def mark_failed(self, period: str, user: str, error: str) -> None:
        self._db.execute(
            "UPDATE deliveries SET state = 'failed', last_error = ?, updated_at = ?"
            " WHERE period = ? AND user_name = ?",
            (error, _now(), period, user),
        )

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


def ledger_path(config: Config) -> Path:
    """``mail.ledger``, else ``mail-ledger.sqlite3`` next to the store."""
    if config.mail.ledger:
        return expand_path(config.mail.ledger)
    return expand_path(config.store.path).parent / "mail-ledger.sqlite3"
