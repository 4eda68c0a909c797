"""Publishing the store for readers: a read-only snapshot, Hive-partitioned Parquet, the bundles.

Readers (the web site, admins' queries, another server's period analysis) never open the live
store: the server, its one writer, publishes a *generation* under ``publish_dir``::

    current -> gen-000123               the symlink readers resolve once, then read through
    gen-000123/manifest.json            when, schema version, rows per table, the data version
    gen-000123/snapshot.duckdb          the whole store, for DuckDB readers (open it read-only)
    gen-000123/<table>/cluster=<key>/day=<YYYY-MM-DD>/data_<n>.parquet
    gen-000123/bundles/…                the period bundles, linked (or copied) from result_dir

A generation is built under ``.gen-000123.tmp``, fsynced, renamed, and made current by
replacing the symlink (``rename`` of a new link over it), so a reader sees the old generation
or the new one, never half of one. Everything in it comes from one transaction of the store, so
it is one consistent view even while other threads write. Older generations stay a while (see
``publish``) so that a reader that resolved ``current`` before the swap can finish its scan.

The Parquet layout and the escaping of cluster names are in publish.sql; docs/store.md
("Published for readers") says how DuckDB, Spark and Trino read it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import duckdb

from watcher.store import Cursor, Store, StoreError, named_statements

# The tables published as Parquet; the snapshot holds every table.
TABLES = (
    "sessions", "sample_rounds", "step_samples", "process_samples", "gpu_samples",
    "jobs", "job_steps",
)
CURRENT = "current"
SNAPSHOT = "snapshot.duckdb"
MANIFEST = "manifest.json"
BUNDLES = "bundles"
FORMAT = 1

_GENERATION = re.compile(r"^gen-(\d{6,})$")
_BUILDING = re.compile(r"^\.gen-(\d{6,})\.tmp$")
_aliases = count()  # attached databases are shared by every cursor: each publish names its own


@dataclass(frozen=True)
class DataVersion:
    """What the store held when it was taken: equal versions, nothing to publish."""

    grows: tuple[int, ...]
    hashes: tuple[int, ...]

    def to_json(self) -> dict[str, list[str]]:
        # As text: the hashes are 128-bit, more than a JSON reader's double keeps.
        return {"grows": [str(v) for v in self.grows], "hashes": [str(v) for v in self.hashes]}


@dataclass(frozen=True)
class Publication:
    """One generation as published."""

    generation: Path  # gen-NNNNNN itself, not the ``current`` link
    snapshot: Path
    rows: dict[str, int]  # Parquet rows per table
    seconds: float
    version: DataVersion = field(compare=False)
    bundles: Path | None = None


def data_version(store: Store) -> DataVersion:
    """The store's data version now (one read-only transaction, a few ms; see publish.sql)."""
    return store.read(_version)


def changed_since(store: Store, marker: DataVersion | Publication | None) -> bool:
    """Whether the store holds anything that ``marker`` (a version, or the publication that
    recorded one) did not: the server's test before publishing again. None: always true."""
    if marker is None:
        return True
    if isinstance(marker, Publication):
        marker = marker.version
    return data_version(store) != marker


def publish(
    store: Store,
    publish_dir: Path,
    *,
    bundles_dir: Path | None = None,
    keep_generations: int = 2,
    grace_s: float = 600.0,
) -> Publication:
    """Publish a new generation of ``store`` under ``publish_dir`` and make it current.

    ``bundles_dir`` (``analysis.result_dir``): its files are hard-linked (copied across file
    systems) into ``bundles/``. Of the older generations the newest ``keep_generations - 1``
    are kept, and an older one also until ``grace_s`` after it was superseded, so that a
    reader mid-scan is not cut off. Publishers of one directory take turns (a lock file).
    """
    if keep_generations < 1:
        raise StoreError(f"keep_generations must be at least 1, not {keep_generations}")
    started = time.monotonic()
    publish_dir = Path(publish_dir)
    try:
        publish_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {publish_dir}: {exc.strerror or exc}") from exc
    link = publish_dir / CURRENT
    if os.path.lexists(link) and not link.is_symlink():
        raise StoreError(f"cannot publish into {publish_dir}: {link} is not a symlink; remove it")
    with _locked(publish_dir):
        _remove_unfinished(publish_dir)
        number = max(_generations(publish_dir), default=0) + 1
        name = f"gen-{number:06d}"
        building = publish_dir / f".{name}.tmp"
        # A generation is as readable as the publish directory: its mode is the boundary.
        building.mkdir(mode=stat.S_IMODE(publish_dir.stat().st_mode))
        try:
            rows, version, schema = _write(store, building)
            bundles = _link_tree(bundles_dir, building / BUNDLES) if bundles_dir else None
            manifest = {
                "format": FORMAT,
                "generation": number,
                "published_at": datetime.now(UTC).isoformat(),
                "schema_version": schema,
                "rows": rows,
                "data_version": version.to_json(),
                "partitioning": ["cluster", "day"],
                "bundles": BUNDLES if bundles else None,
            }
            (building / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _seal(building)
            generation = publish_dir / name
            os.rename(building, generation)
            _fsync_dir(publish_dir)
            _point(publish_dir, name)
        except BaseException as exc:  # the generation that was current stays so
            _discard(publish_dir, name)
            if isinstance(exc, OSError):  # a full disk, a directory others own
                raise StoreError(f"cannot publish into {publish_dir}: {exc}") from exc
            raise
        _prune(publish_dir, keep_generations, grace_s)
    return Publication(
        generation=generation,
        snapshot=generation / SNAPSHOT,
        rows=rows,
        seconds=time.monotonic() - started,
        version=version,
        bundles=generation / BUNDLES if bundles else None,
    )


# -- the one transaction ---------------------------------------------------------------------


def _write(store: Store, where: Path) -> tuple[dict[str, int], DataVersion, int]:
    """Snapshot, Parquet and data version from one transaction of the store.

    Not ``store.read``: its READ ONLY transaction may not write the attached snapshot either.
    Nothing here writes the store, so no write lock is taken and writers carry on meanwhile.
    """
    statements = named_statements("watcher.store", "publish.sql")
    alias = f"tw_publish_{os.getpid()}_{next(_aliases)}"
    snapshot = where / SNAPSHOT
    with store.cursor() as cur:
        try:
            cur.execute(statements["cluster_key"])
            cur.execute("BEGIN TRANSACTION")
            # The first read fixes the transaction's view of the store; all below share it.
            version = _version(cur)
            schema = cur.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            schema = schema.fetchone()[0]
            source = cur.execute("SELECT current_database()").fetchone()[0]
            cur.execute(f"ATTACH {_literal(snapshot)} AS {alias}")
            cur.execute(f"COPY FROM DATABASE {_ident(source)} TO {alias}")
            rows = {}
            for table in TABLES:
                target = _literal(where / table)
                done = cur.execute(
                    f"COPY (\n{statements[table]}\n) TO {target}"  # its last line may be a comment
                    " (FORMAT parquet, PARTITION_BY (cluster, day), COMPRESSION zstd)"
                )
                rows[table] = int(done.fetchone()[0])
            cur.execute("COMMIT")
        except duckdb.Error as exc:
            with suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            raise StoreError(f"cannot publish the store into {where}: {exc}") from exc
        finally:
            with suppress(duckdb.Error):  # not attached (a failure before), or already gone
                cur.execute(f"DETACH {alias}")  # closing it checkpoints it: the file is whole
    return rows, version, schema


def _version(cur: Cursor) -> DataVersion:
    grows, hashes = cur.execute(named_statements("watcher.store", "publish.sql")["data_version"]
                                ).fetchone()
    return DataVersion(tuple(int(v) for v in grows), tuple(int(v) for v in hashes))


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- files -----------------------------------------------------------------------------------


def _link_tree(source: Path, target: Path) -> Path:
    """The regular files under ``source`` in the same places under ``target``: hard links (a
    bundle is replaced by rename, so the link keeps the generation's bundle), else copies."""
    source = Path(source)
    target.mkdir()
    if not source.is_dir():
        return target  # no bundle written yet
    for root, dirs, files in os.walk(source):  # never follows a link
        rel = Path(root).relative_to(source)
        for d in dirs:
            if not os.path.islink(os.path.join(root, d)):
                (target / rel / d).mkdir(exist_ok=True)
        for f in files:
            src = Path(root) / f
            if f.startswith(".") or not stat.S_ISREG(os.lstat(src).st_mode):
                continue  # a bundle being written (its temporary file), a link, a FIFO
            try:
                os.link(src, target / rel / f)
            except OSError:  # another file system, or links refused
                shutil.copy2(src, target / rel / f)
    return target


def _seal(root: Path) -> None:
    """Make the built generation read-only and durable before it is renamed into place."""
    bundles = root / BUNDLES
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):  # deepest first
        if path.is_symlink():
            continue
        if path.is_file():
            # A hard-linked bundle shares its mode with the original: leave it as it is.
            if bundles not in path.parents:
                os.chmod(path, stat.S_IMODE(path.stat().st_mode) & ~0o222)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _point(publish_dir: Path, name: str) -> None:
    """Make ``current`` name ``name``: a new link renamed over the old one, atomically."""
    link = publish_dir / f".{CURRENT}.{name}.tmp"
    with suppress(FileNotFoundError):
        link.unlink()
    os.symlink(name, link)  # relative: the directory may be mounted elsewhere on readers
    os.replace(link, publish_dir / CURRENT)
    _fsync_dir(publish_dir)


def _discard(publish_dir: Path, name: str) -> None:
    """What a failed publish of ``name`` left, unless ``current`` names it already."""
    with suppress(OSError):
        if os.readlink(publish_dir / CURRENT) == name:
            return
    shutil.rmtree(publish_dir / f".{name}.tmp", ignore_errors=True)
    shutil.rmtree(publish_dir / name, ignore_errors=True)
    with suppress(OSError):
        (publish_dir / f".{CURRENT}.{name}.tmp").unlink()


def _generations(publish_dir: Path) -> dict[int, Path]:
    found = {}
    for entry in publish_dir.iterdir():
        m = _GENERATION.match(entry.name) or _BUILDING.match(entry.name)
        if m:
            found[int(m.group(1))] = entry
    return found


def _remove_unfinished(publish_dir: Path) -> None:
    """Generations a crashed publish left half-built (under the lock, nobody builds one now)."""
    for entry in publish_dir.iterdir():
        if _BUILDING.match(entry.name) or (
            entry.name.startswith(f".{CURRENT}.") and entry.is_symlink()
        ):
            if entry.is_symlink() or not entry.is_dir():
                entry.unlink()
            else:
                shutil.rmtree(entry, ignore_errors=True)


def _prune(publish_dir: Path, keep: int, grace_s: float) -> None:
    """Remove generations beyond the newest ``keep`` once superseded for ``grace_s``."""
    current = os.readlink(publish_dir / CURRENT)
    done = sorted(
        (n, p) for n, p in _generations(publish_dir).items() if _GENERATION.match(p.name)
    )
    now = time.time()
    for i, (_n, path) in enumerate(done[: max(0, len(done) - keep)]):
        if path.name == current:
            continue
        successor = done[i + 1][1]
        try:
            superseded = (successor / MANIFEST).stat().st_mtime
        except OSError:
            superseded = now
        if now - superseded >= grace_s:
            _remove(path)


def _remove(path: Path) -> None:
    # Sealed files are read-only; their directories are not, so rmtree can unlink them.
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _locked(publish_dir: Path) -> Iterator[None]:
    fd = os.open(publish_dir / ".publish.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
