"""The DuckDB store: the one module that opens it, keeps its schema current and hands it out.

The schema is the ordered list of ``migrations/NNNN_name.sql`` files. Opening a store applies,
each in its own transaction, every migration it has not seen, and records it in
``schema_migrations``; a store written by a newer turingwatch is refused rather than damaged.

A ``Store`` is the only holder of its DuckDB connection; nobody else names it. Work reaches the
database through cursors the store hands out, each a connection of its own to the same database
(``conn.cursor()``): a cursor has its own transaction and its own TEMP tables, so threads never
share one. Writes are serialised by one lock, so any number of threads may submit them and one
is applied at a time (DuckDB would otherwise let concurrent writers conflict and fail at
COMMIT); reads take no lock and see only committed data. This is what a long-running daemon
needs: one thread ingesting while others read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from watcher.errors import StoreError

if TYPE_CHECKING:
    from watcher.config import Config

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
T = TypeVar("T")
Cursor = duckdb.DuckDBPyConnection  # what the store hands out: a cursor of its connection


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The shipped migrations, in version order."""
    found = []
    for entry in resources.files("watcher.store").joinpath("migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migrations share a version: {versions}")
    return found


def sql_text(package: str, name: str) -> str:
    """A .sql file shipped next to the code that runs it."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


class Store:
    """An open DuckDB store with the current schema.

    ``Store(path)`` opens (creating a missing store 0600, in directories made 0700) and
    migrates; ``Store(":memory:")`` gives a private in-memory store for tests and one-shot work.

    Use it through ``read(fn)``, ``write(fn)``, ``cursor()``, ``transaction()``, and the
    one-liners ``query``, ``one`` and ``execute``. All of them may be called from any thread;
    ``close()`` only once the other threads are done with the store.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        memory_limit: str = "",
        threads: int = 0,
    ) -> None:
        self.path = str(path)
        config: dict[str, Any] = {}
        if memory_limit:
            config["memory_limit"] = memory_limit
        if threads:
            config["threads"] = threads
        if self.path != ":memory:" and not read_only:
            try:
                _create_private(Path(self.path))
            except OSError as exc:
                raise StoreError(f"cannot create store {self.path}: {exc.strerror or exc}") from exc
        try:
            self._conn = duckdb.connect(self.path, read_only=read_only, config=config)
        except duckdb.Error as exc:
            # DuckDB lets one process at a time open a file read-write; say who holds it
            # ("Conflicting lock is held in PROGRAM (PID N)") rather than DuckDB's IO Error.
            if "Could not set lock" in str(exc):
                held = re.search(r"held in (.+?) \(PID (\d+)\)", str(exc))
                server = _server_holding(self.path, int(held[2]) if held else None)
                if server is not None:
                    raise StoreError(
                        f"store {self.path} is the turingwatch server's (pid {server['pid']},"
                        f" on {server.get('listen')}): it imports accounting, analyses periods"
                        " and mails on its own schedule ([server]); `turingwatch status` says"
                        " when it last did; stop it to use this command"
                    ) from exc
                who = f" ({held[1]}, pid {held[2]})" if held else ""
                raise StoreError(
                    f"store {self.path} is in use by another process{who}: wait until it is done,"
                    " or stop it"
                ) from exc
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        # The mode the store's write-ahead log gets after each write (see _private_wal).
        self._mode = None if self.path == ":memory:" or read_only else stat.S_IMODE(
            os.stat(self.path).st_mode)
        # Reentrant: code inside a write that calls execute() or write() again must not hang.
        self._write_lock = threading.RLock()
        # DuckDB does not promise that one connection object makes cursors for several threads
        # at once; making them one at a time costs nothing.
        self._cursor_lock = threading.Lock()
        if not read_only:
            self.migrate()
        else:
            self._check_version()

    @classmethod
    def site(cls, config: Config, *, read_only: bool = False, create: bool = False) -> Store:
        """The site's store as configured (``[store]``: path, memory limit, threads).

        Only the commands that write what a store is made of (``import-accounting``,
        ``ingest``) pass ``create``; every other refuses a store that is not there, so that a
        mistyped ``store.path`` is an error rather than a new, empty store with no jobs in it.
        """
        from watcher.config import expand_path

        path = expand_path(config.store.path)
        if not create and not path.exists():
            where = config.sources.get("store.path", "default")
            raise StoreError(
                f"store {path} does not exist: check store.path ({where}), or create the store"
                " with import-accounting or ingest"
            )
        return cls(
            path,
            read_only=read_only,
            memory_limit=config.store.memory_limit,
            threads=config.store.threads,
        )

    # -- schema ---------------------------------------------------------------------------
    def schema_version(self) -> int:
        exists = self.one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        )[0]
        if not exists:
            return 0
        return self.one("SELECT coalesce(max(version), 0) FROM schema_migrations")[0]

    def _check_version(self) -> int:
        current = self.schema_version()
        known = max((m.version for m in migrations()), default=0)
        if current > known:
            raise StoreError(
                f"store {self.path} has schema version {current}, newer than this turingwatch "
                f"knows ({known}); upgrade turingwatch"
            )
        return current

    def migrate(self) -> list[int]:
        """Apply the migrations this store has not seen; return their versions."""
        with self.transaction() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        current = self._check_version()
        applied = []
        for migration in migrations():
            if migration.version <= current:
                continue
            with self.transaction() as cur:
                cur.execute(migration.sql)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    [migration.version, migration.name],
                )
            applied.append(migration.version)
        return applied

    # -- use ------------------------------------------------------------------------------
    @contextmanager
    def cursor(self) -> Iterator[Cursor]:
        """A private cursor, closed (its TEMP tables dropped) at the end of the block.

        For work that needs state of its own, such as an analysis's TEMP tables, so that two
        of them, or one and an ingest, never see each other's. Each statement on it commits
        by itself; to write several as one, pass it to ``transaction(cursor)``.
        """
        with self._cursor_lock:
            cur = self._conn.cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def transaction(self, cursor: Cursor | None = None, *, shared: bool = False) -> Iterator[Cursor]:
        """All or nothing, one writer at a time: commit on success, roll back on any exception.

        Runs on ``cursor`` (one from ``cursor()``, whose TEMP tables the writes may read) or
        else on a private cursor of its own, and holds the store's write lock throughout.
        ``shared``: without the lock, beside other writers, for writes that never touch rows
        another transaction may touch (the server's applies of different sessions). DuckDB
        still refuses a conflicting commit, which is then a StoreError the caller retries.
        """
        lock = nullcontext() if shared else self._write_lock
        with lock, (nullcontext(cursor) if cursor is not None else self.cursor()) as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
                _finish(cur)
            except BaseException:
                with suppress(duckdb.Error):  # the error that got us here is the one to report
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")  # a COMMIT that fails rolls back by itself
            self._private_wal()

    def write(self, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn(cursor)`` in one transaction (see ``transaction``) and return its result."""
        with self.transaction() as cur:
            return fn(cur)

    def read(self, fn: Callable[[Cursor], T]) -> T:
        """Run ``fn(cursor)`` on a private cursor in a read-only transaction; return its result.

        ``fn`` sees one snapshot of committed data, never a write in progress, and takes no
        lock. It must fetch what it needs before returning: the cursor is closed after.
        """
        with self.cursor() as cur:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            try:
                return fn(cur)
            finally:
                with suppress(duckdb.Error):
                    cur.execute("ROLLBACK")

    def query(self, sql: str, params: Any = None) -> list[tuple]:
        """Every row of one read-only statement."""
        return self.read(lambda cur: _run(cur, sql, params).fetchall())

    def one(self, sql: str, params: Any = None) -> tuple | None:
        """The first row of one read-only statement (of one row: it reads them all), or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Any = None) -> Cursor:
        """Run one statement, reading or writing, on a cursor of its own, and return that cursor
        with the result unread (``fetchone``, ``fetchall``, ``description``).

        The statement commits by itself, under the write lock. Meant for one-liners in tests and
        scripts; code that shares the store with other threads uses ``read``/``write``.
        """
        with self._cursor_lock:
            cur = self._conn.cursor()
        with self._write_lock:  # the statement runs inside execute(), so under the lock
            result = _run(cur, sql, params)
            self._private_wal()
            return result

    def _private_wal(self) -> None:
        """Give the write-ahead log the store file's mode after a write.

        DuckDB creates ``<store>.wal`` itself at a write, with the process's umask (0644 under
        022), and removes it at each checkpoint: after every write it gets the store's mode
        (0600 for a store turingwatch made), so that it is never readable longer than the write
        that made it. The store's directory (0700 when turingwatch makes it) is what keeps
        others out of it in that moment.
        """
        if self._mode is None:
            return
        wal = self.path + ".wal"
        with suppress(OSError):  # no log (checkpointed), or not ours to change: nothing to do
            st = os.lstat(wal)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != self._mode:
                os.chmod(wal, self._mode)

    def close(self) -> None:
        """Close the store and every cursor it handed out."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _server_holding(path: str, pid: int | None) -> dict[str, Any] | None:
    """What a running server wrote beside the store it holds (watcher/server/daemon.py), when
    the process holding the store's lock is that server."""
    try:
        said = json.loads(Path(path + ".server.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(said, dict) or (pid is not None and said.get("pid") != pid):
        return None
    return said


def _create_private(path: Path) -> None:
    """Create a store that does not exist yet readable by its owner only (0600), in directories
    made 0700; an existing store keeps its mode (a site may give a group of readers 0640).

    DuckDB creates the file itself, with the process's umask. The new store is made in a private
    temporary directory beside it, set to 0600 there and linked into place, so that nobody can
    open it in the moment it is readable; a store another process made meanwhile is kept.
    """
    if path.exists():
        return
    missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    for directory in reversed(missing):
        with suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        new = scratch / path.name
        try:
            duckdb.connect(str(new)).close()
        except duckdb.Error as exc:
            raise StoreError(f"cannot create store {path}: {exc}") from exc
        os.chmod(new, 0o600)
        try:
            os.link(new, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.rename(new, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(cur: Cursor, sql: str, params: Any) -> Cursor:
    return cur.execute(sql, params) if params is not None else cur.execute(sql)


def _finish(cur: Cursor) -> None:
    """Run a statement whose result was left unread to its end: DuckDB 2 refuses to COMMIT
    over it (1.x reads every result whole, and has no ``complete``)."""
    complete = getattr(cur, "complete", None)
    if complete is not None:
        complete()


def named_statements(package: str, name: str) -> dict[str, str]:
    """Split a .sql file into the statements under its ``-- name: <id>`` markers."""
    statements: dict[str, str] = {}
    current: str | None = None
    for line in sql_text(package, name).splitlines():
        if line.startswith("-- name:"):
            current = line.split(":", 1)[1].strip()
            statements[current] = ""
        elif current is not None:
            statements[current] += line + "\n"
    return {k: v.strip() for k, v in statements.items()}
