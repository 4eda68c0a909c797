"""Loading spool lines (watcher/spool.py) into the store: whole files, or a running session's.

Both loaders run the same statements (load_spool.sql), one session per transaction, so a crash
or a refused batch leaves the store as it was. ``load_spool`` replaces what an earlier load of
the file stored (loading is idempotent). ``apply_lines`` adds what a batch of one session's
lines brings that the store lacks: ``(session_id, seq)`` identifies a sample, so a line sent
twice, or a batch overlapping one applied before, is stored once. Loading the whole file later
gives exactly the tables that applying its lines gave, in whatever batches they came.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import duckdb

from watcher import spool
from watcher.store import Cursor, Store, StoreError, named_statements

_FILE = ("read", "parse", "forget", "session", "end", "new_samples", "steps", "processes", "gpus")
_BATCH = ("batch", "parse", "session", "end", "new_samples", "steps", "processes", "gpus")
_PARAMETER = re.compile(r"\$(\w+)")

Line = Mapping[str, Any] | str | bytes


@dataclass(frozen=True)
class LoadedSession:
    session_id: str
    node: str
    samples: int
    ended: bool


@dataclass(frozen=True)
class Applied:
    """What one batch of a session's lines did.

    ``accepted`` counts the lines that changed the store (a new session's line, new samples,
    the end of a session not ended yet), ``duplicates`` those it had already. Lines of a kind
    this turingwatch does not know are skipped, as ``load_spool`` skips them, and not counted.
    """

    accepted: int
    duplicates: int
    session_id: str
    ended: bool


def load_spool(store: Store, path: Path) -> LoadedSession:
    """Load one spool; loading it again replaces what it loaded before (idempotent)."""
    head = spool.read_header(path)
    if head is None:
        raise StoreError(f"{path}: not a turingwatch spool (no session line)")
    _check_format(head, str(path))
    session = head["session"]
    params = {
        "path": str(path),
        "session_id": session["session_id"],
        "job_id": session.get("job_id"),
        "node": session["node"],
    }
    with store.transaction() as cur:
        try:
            _run(cur, _FILE, params)
        except duckdb.Error as exc:
            raise StoreError(f"{path}: the store refused the spool: {exc}") from exc
        (samples,) = cur.execute("SELECT count(*) FROM spool_samples").fetchone()
    return LoadedSession(session["session_id"], session["node"], samples, spool.has_ended(path))


def load_output_dir(store: Store, output_dir: Path) -> list[LoadedSession]:
    return [load_spool(store, path) for path in spool.spool_files(output_dir)]


def apply_lines(store: Store, lines: Iterable[Line], session_id: str | None = None) -> Applied:
    """Apply a batch of lines of ONE session, in the order it wrote them, all or nothing.

    ``lines`` are decoded line objects, or the lines' JSON text (str or bytes); blank lines are
    skipped. The session is the one its session line names, else ``session_id`` (sample and
    end lines do not name theirs); it must be stored already or have its session line in the
    batch. Raises StoreError for a line that is not JSON, another spool format, lines of two
    sessions, a session line whose job, node or user differ from the stored session's, or a
    session the store does not know yet without its session line.
    """
    texts = [text for text in map(_line_text, lines) if text.strip()]
    with store.transaction() as cur:
        try:
            _stage(cur, texts)
            sid, sessions, stored = _batch_session(cur, session_id)
            job_id, node = _identity(sid, sessions, stored)
            ((samples, ends),) = cur.execute(
                "SELECT count(*) FILTER (k = 'sample'), count(*) FILTER (k = 'end') FROM spool_lines"
            ).fetchall()
            _run(cur, _BATCH[2:], {"session_id": sid, "job_id": job_id, "node": node})
            ((new, ended),) = cur.execute(
                "SELECT (SELECT count(*) FROM spool_samples),"
                " (SELECT ended_at IS NOT NULL FROM sessions WHERE session_id = ?)",
                [sid],
            ).fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"the store refused the batch: {exc}") from exc
    new_session = int(stored is None and bool(sessions))
    new_end = int(ends > 0 and (stored is None or not stored[3]))
    accepted = new_session + new + new_end
    return Applied(accepted, len(sessions) + samples + ends - accepted, sid, bool(ended))


def _stage(cur: Cursor, texts: list[str]) -> None:
    """The batch's lines into spool_lines, as "read" and "parse" put a file's."""
    # One list parameter: no numpy on a compute node, and no statement per line.
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE spool_batch AS"
        " SELECT i - 1 AS n, ($lines::VARCHAR[])[i] AS line FROM range(1, len($lines) + 1) t(i)",
        {"lines": texts},
    )
    try:
        # fetchall: DuckDB 2 keeps a result over Python data open until it is read to the end.
        ((bad,),) = cur.execute("SELECT min(n) FROM spool_batch WHERE NOT json_valid(line)").fetchall()
        if bad is not None:
            raise StoreError(f"line {bad + 1} of the batch is not JSON: {texts[bad][:80]!r}")
        _run(cur, _BATCH[:2], {})
    finally:
        cur.execute("DROP TABLE IF EXISTS spool_batch")


def _batch_session(
    cur: Cursor, session_id: str | None
) -> tuple[str, list[dict[str, Any]], tuple | None]:
    """The batch's session: its id, its session lines, and its stored (job_id, node, user_name,
    ended) or None."""
    sessions = []
    for v, fields, session in cur.execute(
        "SELECT v, fields, session FROM spool_lines WHERE k = 'session' ORDER BY rowid"
    ).fetchall():
        _check_format({"v": v, "fields": _json(fields)}, "batch")
        sessions.append(_json(session) or {})
    sid = _one_session(sessions, session_id)
    stored = cur.execute(
        "SELECT job_id, node, user_name, ended_at IS NOT NULL FROM sessions WHERE session_id = ?",
        [sid],
    ).fetchall()
    return sid, sessions, stored[0] if stored else None


def _run(cur: Cursor, names: Iterable[str], params: dict[str, Any]) -> None:
    """Run the named statements of load_spool.sql, each given the parameters it names."""
    statements = _statements()
    for name in names:
        for statement in filter(None, (s.strip() for s in statements[name].split(";"))):
            cur.execute(statement, {k: params[k] for k in _PARAMETER.findall(statement)})


@cache
def _statements() -> dict[str, str]:
    return named_statements("watcher.store", "load_spool.sql")


def _check_format(head: Mapping[str, Any], where: str) -> None:
    if head.get("v") != spool.SPOOL_VERSION or head.get("fields") != spool.FIELDS:
        raise StoreError(
            f"{where}: spool format v{head.get('v')} with other fields; "
            f"this turingwatch reads v{spool.SPOOL_VERSION}"
        )


def _one_session(sessions: list[dict[str, Any]], session_id: str | None) -> str:
    """The one session a batch is about."""
    named = {s.get("session_id") for s in sessions} | ({session_id} if session_id else set())
    if not named or named == {None}:
        raise StoreError("the batch names no session: give its session_id or its session line")
    if len(named) > 1 or None in named:
        found = ", ".join(sorted(map(str, named)))
        raise StoreError(f"a batch holds the lines of one session, not of several: {found}")
    return named.pop()


def _identity(
    sid: str, sessions: list[dict[str, Any]], stored: tuple | None
) -> tuple[int | None, str]:
    """(job_id, node) of the batch's session: the stored one, which its lines must not change."""
    seen = {(s.get("job_id"), s.get("node"), s.get("user_name")) for s in sessions}
    if stored is not None:
        if seen - {stored[:3]}:
            (job_id, node, user) = next(iter(seen - {stored[:3]}))
            raise StoreError(
                f"session {sid} is stored as job {stored[0]} on {stored[1]} of {stored[2]};"
                f" a session line says job {job_id} on {node} of {user}: refused"
            )
        return stored[0], stored[1]
    if not seen:
        raise StoreError(f"session {sid} is not in the store: its session line must come first")
    if len(seen) > 1:
        raise StoreError(f"session {sid}: the batch's session lines disagree on job, node or user")
    job_id, node, _user = seen.pop()
    return job_id, node


def _line_text(line: Line) -> str:
    if isinstance(line, bytes):
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StoreError(f"a line of the batch is not UTF-8: {exc}") from None
    if isinstance(line, str):
        return line
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
