"""The DuckDB store: the one module that opens it and keeps its schema current.

The schema is the ordered list of ``migrations/NNNN_name.sql`` files. Opening a store applies,
each in its own transaction, every migration it has not seen, and records it in
``schema_migrations``; a store written by a newer turingwatch is refused rather than damaged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from watcher.errors import StoreError

if TYPE_CHECKING:
    from watcher.config import Config

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


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

    ``Store(path)`` opens (creating parent directories) and migrates; ``Store(":memory:")``
    gives a private in-memory store for tests and one-shot work.
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
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = duckdb.connect(self.path, read_only=read_only, config=config)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        if not read_only:
            self.migrate()
        else:
            self._check_version()

    @classmethod
    def site(cls, config: Config, *, read_only: bool = False) -> Store:
        """The site's store as configured (``[store]``: path, memory limit, threads)."""
        from watcher.config import expand_path

        return cls(
            expand_path(config.store.path),
            read_only=read_only,
            memory_limit=config.store.memory_limit,
            threads=config.store.threads,
        )

    # -- schema ---------------------------------------------------------------------------
    def schema_version(self) -> int:
        exists = self.conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchone()[0]
        if not exists:
            return 0
        return self.conn.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations"
        ).fetchone()[0]

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
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = self._check_version()
        applied = []
        for migration in migrations():
            if migration.version <= current:
                continue
            with self.transaction():
                self.conn.execute(migration.sql)
                self.conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    [migration.version, migration.name],
                )
            applied.append(migration.version)
        return applied

    # -- use ------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: commit on success, roll back on any exception."""
        self.conn.execute("BEGIN TRANSACTION")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        return self.conn.execute(sql, params) if params is not None else self.conn.execute(sql)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
