"""Loading spool lines (watcher/spool.py) into the store: whole files, or a running session's.

Both loaders run the same statements (load_spool.sql), one session per transaction, so a crash
or a refused batch leaves the store as it was. ``load_spool`` replaces what an earlier load of
the file stored (loading is idempotent). ``apply_lines`` adds what a batch of one session's
lines brings that the store lacks: ``(session_id, seq)`` identifies a sample, so a line sent
twice, or a batch overlapping one applied before, is stored once. Loading the whole file later
gives exactly the tables that applying its lines gave, in whatever batches they came.

What is checked (docs/store.md, "What is trusted, what is checked"): the spool format, the shape
of every line of a known kind (a session line names its session_id, node, start; a sample has a
whole-number seq and a time, and rows of as many values as the session line names fields), that
the lines are of one session, and the casts of every value. A spool that fails any of these is
refused whole (``SpoolRefused``, nothing of it stored); lines that are not spool lines at all (a
torn last line, garbage) are skipped and counted. Given the owner of the file (``owner_of``, the
ingest), a spool is also refused when it claims another user's session, or would replace a
session stored from another owner's spool, or names a job Slurm's accounting gives to another
user.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import duckdb

from watcher import spool
from watcher.store import Cursor, Store, StoreError, named_statements

_BATCH = ("session", "end", "new_samples", "values", "steps", "processes", "gpus")
_FILE = ("forget", *_BATCH)
_PARAMETER = re.compile(r"\$(\w+)")

Line = Mapping[str, Any] | str | bytes
# DuckDB's errors that the data causes (a value that does not convert, a NULL where the schema
# needs one, JSON it cannot take): the spool's fault. Any other (I/O, memory, a binder error
# from a schema this code does not match) is the store's, and no reason to set a spool aside.
_DATA_ERRORS = (duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException)


class SpoolRefused(StoreError):
    """The spool itself is at fault: not a file, malformed, or not its owner's to hand in.

    Nothing of it was stored; ``turingwatch ingest`` sets it aside with this message. Every
    other StoreError is about the store (busy, full, refused for a reason of its own).
    """


@dataclass(frozen=True)
class SpoolOwner:
    """The user a spool file belongs to, as the file system says, and whether the site trusts
    that user to hand in other users' sessions (root, ``store.service_user``)."""

    uid: int
    name: str               # the user's name, else the uid as text
    trusted: bool = False


OwnerOf = Callable[[int], SpoolOwner]   # a file owner's uid -> who that is to this site


@dataclass(frozen=True)
class LoadedSession:
    session_id: str
    node: str
    samples: int
    ended: bool
    skipped: int = 0        # lines that are not spool lines (garbage, a torn last line)
    owner: SpoolOwner | None = None


class SpoolFile:
    """A spool opened for loading: a regular file, never followed through a link.

    Opening takes no time whatever the file is (a FIFO would block a plain open), and the loader
    reads the very file opened (``source``, its descriptor), so what was checked about the file
    (its kind, its owner) is true of what is read. Use it as a context manager.

    Raises:
        FileNotFoundError: the file is gone (another ingest moved it).
        SpoolRefused: a link, a FIFO, a directory or a device, or a file that cannot be read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            seen = os.lstat(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SpoolRefused(f"{path}: cannot be read: {exc.strerror}") from None
        if stat.S_ISLNK(seen.st_mode):
            raise SpoolRefused(f"{path}: a symbolic link, not a spool file")
        if not stat.S_ISREG(seen.st_mode):
            raise SpoolRefused(f"{path}: not a regular file")
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SpoolRefused(f"{path}: cannot be read: {exc.strerror}") from None
        self.stat = os.fstat(self.fd)
        if (self.stat.st_dev, self.stat.st_ino) != (seen.st_dev, seen.st_ino):
            self.close()
            raise SpoolRefused(f"{path}: replaced while it was opened")

    @property
    def source(self) -> str:
        """The open file as a path DuckDB reads: no glob in it, and no other file than this."""
        return f"/dev/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def load_spool(
    store: Store, path: Path | SpoolFile, *, owner_of: OwnerOf | None = None
) -> LoadedSession:
    """Load one spool (a path, or a SpoolFile opened already); loading it again replaces what
    it loaded before (idempotent).

    ``owner_of`` tells who owns the file (the ingest): the session must then be its owner's
    unless the owner is trusted, a session stored from another owner's spool is not replaced,
    and the owner is recorded (``session_owners``). Without it, nothing is checked or recorded
    about owners: a job's own spools, loaded into its own store.

    Raises:
        SpoolRefused: the spool is at fault (nothing of it is stored).
        StoreError: the store is.
        FileNotFoundError: there is no such file.
    """
    if isinstance(path, SpoolFile):
        return _load_file(store, path, owner_of)
    with SpoolFile(Path(path)) as opened:
        return _load_file(store, opened, owner_of)


def _load_file(store: Store, file: SpoolFile, owner_of: OwnerOf | None) -> LoadedSession:
    where = str(file.path)
    owner = owner_of(file.stat.st_uid) if owner_of is not None else None
    with store.transaction() as cur:
        try:
            _run(cur, ("read",), {"path": file.source})
            _run(cur, ("parse",), {})
            skipped = _fetch(cur, "skipped", {})[0][0]
            sessions, fields = _session_lines(cur, where)
            if not sessions:
                raise SpoolRefused(f"{where}: not a turingwatch spool (no session line)")
            sid = _one_session(sessions, None, where=f"{where}: a spool")
            if len({(s.get("job_id"), s.get("node"), s.get("user_name")) for s in sessions}) > 1:
                raise SpoolRefused(f"{where}: its session lines disagree on job, node or user")
            _check_lines(cur, fields, where)
            session = sessions[0]
            if owner is not None:
                _check_owner(cur, sid, session, owner, where)
            params = {"session_id": sid, "job_id": session.get("job_id"), "node": session["node"],
                      **_field_maps(fields)}
            _run(cur, _FILE, params)
            if owner is not None:
                _run(cur, ("owner",), {"session_id": sid, "owner": owner.name,
                                       "trusted": owner.trusted, "spool": file.path.name})
            ((samples, ended),) = cur.execute(
                "SELECT (SELECT count(*) FROM spool_samples),"
                " (SELECT ended_at IS NOT NULL FROM sessions WHERE session_id = ?)",
                [sid],
            ).fetchall()
        except duckdb.Error as exc:
            raise _refusal(exc, f"{where}: the store refused the spool") from exc
    return LoadedSession(sid, session["node"], samples, bool(ended), skipped, owner)


def _check_owner(
    cur: Cursor, sid: str, session: Mapping[str, Any], owner: SpoolOwner, where: str
) -> None:
    """Refuse a spool its file's owner may not hand in (see the module's docstring)."""
    user = session.get("user_name")
    if not owner.trusted and user != owner.name:
        raise SpoolRefused(
            f"{where}: the spool says it is {user or 'nobody'}'s, but its file belongs to {owner.name}:"
            " only root and store.service_user hand in other users' spools"
        )
    stored = cur.execute(
        "SELECT s.user_name, o.owner FROM sessions s LEFT JOIN session_owners o USING (session_id)"
        " WHERE s.session_id = ?",
        [sid],
    ).fetchall()
    if stored:
        stored_user, stored_owner = stored[0]
        # Stored without an owner (applied lines, or before session_owners): its user's own
        # spool, or a trusted one, may still replace it.
        mine = stored_owner == owner.name if stored_owner is not None else (
            owner.trusted or stored_user == owner.name)
        if not mine:
            raise SpoolRefused(
                f"{where}: session {sid} is stored from {stored_owner or stored_user}'s spool;"
                f" a spool of {owner.name} may not replace it"
            )
    if session.get("job_id") is not None:
        holders = {row[0] for row in cur.execute(
            "SELECT user_name FROM jobs WHERE job_id = ? AND (?::VARCHAR IS NULL OR cluster = ?)",
            [session["job_id"], session.get("cluster"), session.get("cluster")],
        ).fetchall()}
        if holders and user not in holders:
            raise SpoolRefused(
                f"{where}: job {session['job_id']} is {', '.join(sorted(holders))}'s in Slurm's"
                f" accounting, not {user}'s"
            )


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
    for n, text in enumerate(texts, 1):
        if "\n" in text:
            raise SpoolRefused(f"line {n} of the batch holds a line break: not one spool line")
    return apply_ndjson(store, "\n".join(texts).encode("utf-8"), session_id)


def apply_ndjson(
    store: Store, data: bytes, session_id: str | None = None, *, shared: bool = False
) -> Applied:
    """``apply_lines`` for the lines as they came over the wire: newline-delimited JSON, UTF-8.

    Blank lines are skipped, and line numbers in messages count the others. ``shared``: beside
    other such applies, for another session each (``Store.transaction``); the server's
    applier threads never apply two batches of one session at once.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpoolRefused(f"the batch is not UTF-8 (byte {exc.start})") from None
    with store.transaction(shared=shared) as cur:
        try:
            _stage(cur, data)
            sid, sessions, stored, fields = _batch_session(cur, session_id)
            job_id, node = _identity(sid, sessions, stored)
            ((samples, ends, gpu_lines),) = cur.execute(
                "SELECT count(*) FILTER (k = 'sample'), count(*) FILTER (k = 'end'),"
                " count(*) FILTER (k = 'sample' AND coalesce(json_array_length(gpus), 0) > 0)"
                " FROM spool_lines"
            ).fetchall()
            if fields is None and stored is not None:
                fields = _json(stored[4])   # as its session line named them, if not ours
            _check_lines(cur, fields, "the batch")   # rows as wide as those fields
            params = {"session_id": sid, "job_id": job_id, "node": node, **_field_maps(fields)}
            # Each statement costs a few ms however few its rows: a sender's batch of three
            # lines runs only those that have something to do.
            _run(cur, _batch_statements(stored is None, samples, ends, gpu_lines), params)
            ((new, ended),) = cur.execute(
                "SELECT ?, (SELECT ended_at IS NOT NULL FROM sessions WHERE session_id = ?)",
                [cur.execute("SELECT count(*) FROM spool_samples").fetchall()[0][0] if samples else 0,
                 sid],
            ).fetchall()
        except duckdb.Error as exc:
            raise _refusal(exc, "the store refused the batch") from exc
    new_session = int(stored is None and bool(sessions))
    new_end = int(ends > 0 and (stored is None or not stored[3]))
    accepted = new_session + new + new_end
    return Applied(accepted, len(sessions) + samples + ends - accepted, sid, bool(ended))


def _batch_statements(new_session: bool, samples: int, ends: int, gpu_lines: int) -> tuple[str, ...]:
    """The statements of _BATCH, in its order, that a batch of these lines needs."""
    needed = {"session": new_session, "end": ends > 0, "gpus": gpu_lines > 0}
    return tuple(name for name in _BATCH if needed.get(name, samples > 0))


def _stage(cur: Cursor, data: bytes) -> None:
    """The batch's lines into spool_lines, as "read" and "parse" put a file's."""
    # DuckDB reads the bytes from an anonymous in-memory file: handing it a Python list costs
    # about 60 us a line (value conversion), the file about 2 us, and no numpy is needed.
    fd = os.memfd_create("turingwatch-batch", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            out.write(data)
        _run(cur, ("batch",), {"path": f"/dev/fd/{fd}"})
    finally:
        os.close(fd)
    bad = _fetch(cur, "not_json", {})
    if bad:
        raise SpoolRefused(f"line {bad[0][0] + 1} of the batch is not JSON: {bad[0][1]!r}")
    _run(cur, ("parse",), {})


def _batch_session(
    cur: Cursor, session_id: str | None
) -> tuple[str, list[dict[str, Any]], tuple | None, Any]:
    """The batch's session: its id, its session lines, its stored (job_id, node, user_name,
    ended) or None, and the fields its session line names (None: no session line)."""
    sessions, fields = _session_lines(cur, "the batch")
    sid = _one_session(sessions, session_id)
    stored = cur.execute(
        "SELECT job_id, node, user_name, ended_at IS NOT NULL, json_extract(meta, '$.spool_fields')"
        " FROM sessions WHERE session_id = ?",
        [sid],
    ).fetchall()
    return sid, sessions, stored[0] if stored else None, fields


def _session_lines(cur: Cursor, where: str) -> tuple[list[dict[str, Any]], Any]:
    """The session lines of the lines staged (spool_lines), once their format and their shape
    are known to be what the statements load; and the fields the first one names."""
    heads = cur.execute(
        "SELECT v, fields, session FROM spool_lines WHERE k = 'session' ORDER BY n"
    ).fetchall()
    for v, fields, _session in heads:
        _check_format({"v": v, "fields": _json(fields)}, where)
    fields = _json(heads[0][1]) if heads else None
    if any(_json(named) != fields for _v, named, _session in heads[1:]):
        raise SpoolRefused(f"{where}: its session lines name different fields")
    _check_lines(cur, fields, where, sessions_only=True)
    return [_json(session) for *_, session in heads], fields


def _check_lines(cur: Cursor, fields: Any, where: str, *, sessions_only: bool = False) -> None:
    """Refuse the lines staged for the first line of a known kind the statements cannot load
    as written ("check")."""
    problem = _fetch(cur, "check", {**_widths(fields), "sessions_only": sessions_only})
    if problem:
        ((n, why),) = problem
        raise SpoolRefused(f"{where}: line {n}: {why}")


def _widths(fields: Any) -> dict[str, int]:
    """How many values a row of each kind holds: as the session line names the fields, else as
    this turingwatch writes them (lines of a session stored already)."""
    named = fields if isinstance(fields, dict) else {}
    return {part: len(named[part]) if isinstance(named.get(part), list) else len(ours)
            for part, ours in spool.FIELDS.items()}


def _refusal(exc: duckdb.Error, what: str) -> StoreError:
    """A DuckDB error as the StoreError it means: the spool's fault, or the store's."""
    if isinstance(exc, _DATA_ERRORS):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return SpoolRefused(f"{what}: {first}")
    return StoreError(f"{what}: {exc}")


def _fetch(cur: Cursor, name: str, params: dict[str, Any]) -> list[tuple]:
    """Every row of one named statement of load_spool.sql (a SELECT)."""
    statement = _statements()[name].rstrip().rstrip(";")
    return cur.execute(statement, {k: params[k] for k in _PARAMETER.findall(statement)}).fetchall()


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
    """Refuse another spool format, or a session line whose field lists are not lists of
    distinct names. Other fields than ours are read by name (``_field_maps``): a spool written
    before a field was added, or by a newer watcher with more of them."""
    if head.get("v") != spool.SPOOL_VERSION:
        raise SpoolRefused(
            f"{where}: spool format v{head.get('v')}; this turingwatch reads v{spool.SPOOL_VERSION}"
        )
    fields = head.get("fields")
    for part in spool.FIELDS:
        names = fields.get(part) if isinstance(fields, dict) else None
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)
                and len(set(names)) == len(names)):
            raise SpoolRefused(f"{where}: its session line does not name the fields of its {part}")


def _field_maps(fields: Any) -> dict[str, Any]:
    """The parameters of the statements that read rows ("steps", "processes", "gpus") and of
    "session": for each field this turingwatch reads, its position in the spool's rows, by name,
    or None where the spool has no such field. ``remap`` is False, and the maps None, when the
    spool's fields are ours (or unknown: lines of a session stored already)."""
    if fields is None or fields == spool.FIELDS:
        return {"remap": False, **{f"{part}_map": None for part in spool.FIELDS}}
    maps: dict[str, Any] = {"remap": True}
    for part, ours in spool.FIELDS.items():
        position = {name: i for i, name in enumerate(fields[part])}
        maps[f"{part}_map"] = [position.get(name) for name in ours]
    return maps


def _one_session(
    sessions: list[dict[str, Any]], session_id: str | None, *, where: str = "a batch"
) -> str:
    """The one session a batch (or a spool) is about."""
    named = {s.get("session_id") for s in sessions} | ({session_id} if session_id else set())
    if not named or named == {None}:
        raise SpoolRefused("the batch names no session: give its session_id or its session line")
    if len(named) > 1 or None in named:
        found = ", ".join(sorted(map(str, named)))
        raise SpoolRefused(f"{where} holds the lines of one session, not of several: {found}")
    return named.pop()


def _identity(
    sid: str, sessions: list[dict[str, Any]], stored: tuple | None
) -> tuple[int | None, str]:
    """(job_id, node) of the batch's session: the stored one, which its lines must not change."""
    seen = {(s.get("job_id"), s.get("node"), s.get("user_name")) for s in sessions}
    if stored is not None:
        if seen - {stored[:3]}:
            (job_id, node, user) = next(iter(seen - {stored[:3]}))
            raise SpoolRefused(
                f"session {sid} is stored as job {stored[0]} on {stored[1]} of {stored[2]};"
                f" a session line says job {job_id} on {node} of {user}: refused"
            )
        return stored[0], stored[1]
    if not seen:
        raise SpoolRefused(f"session {sid} is not in the store: its session line must come first")
    if len(seen) > 1:
        raise SpoolRefused(f"session {sid}: the batch's session lines disagree on job, node or user")
    job_id, node, _user = seen.pop()
    return job_id, node


def _line_text(line: Line) -> str:
    if isinstance(line, bytes):
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpoolRefused(f"a line of the batch is not UTF-8: {exc}") from None
    if isinstance(line, str):
        return line
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
