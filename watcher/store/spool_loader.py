"""Loading spool files (watcher/spool.py) into the store, one session per transaction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from watcher import spool
from watcher.store import Store, StoreError, named_statements


@dataclass(frozen=True)
class LoadedSession:
    session_id: str
    node: str
    samples: int
    ended: bool


def load_spool(store: Store, path: Path) -> LoadedSession:
    """Load one spool; loading it again replaces what it loaded before (idempotent)."""
    head = spool.read_header(path)
    if head is None:
        raise StoreError(f"{path}: not a turingwatch spool (no session line)")
    if head.get("v") != spool.SPOOL_VERSION or head.get("fields") != spool.FIELDS:
        raise StoreError(
            f"{path}: spool format v{head.get('v')} with other fields; "
            f"this turingwatch reads v{spool.SPOOL_VERSION}"
        )
    session = head["session"]
    params = {
        "path": str(path),
        "session_id": session["session_id"],
        "job_id": session.get("job_id"),
        "node": session["node"],
    }
    statements = named_statements("watcher.store", "load_spool.sql")
    needs = {
        "read": {"path"},
        "forget": {"session_id"},
        "session": {"session_id", "job_id", "node"},
        "steps": {"session_id", "job_id", "node"},
        "processes": {"session_id"},
        "cmdlines": {"session_id"},
        "gpus": {"session_id", "job_id", "node"},
    }
    with store.transaction() as conn:
        for name, sql in statements.items():
            args = {k: params[k] for k in needs[name]}
            for statement in filter(None, (s.strip() for s in sql.split(";"))):
                conn.execute(statement, args)
        samples = conn.execute(
            "SELECT count(*) FROM spool_lines WHERE k = 'sample'"
        ).fetchone()[0]
        conn.execute("DROP TABLE spool_lines")
    return LoadedSession(session["session_id"], session["node"], samples, spool.has_ended(path))


def load_output_dir(store: Store, output_dir: Path) -> list[LoadedSession]:
    return [load_spool(store, path) for path in spool.spool_files(output_dir)]
