"""A store that is not there, and who may read one that is.

Commands that read the site store refuse one that does not exist (a mistyped store.path must not
look like a site without jobs); only the writers (import-accounting, ingest) create it, and a
store turingwatch creates is readable by its owner only, its write-ahead log included.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.config import load_config
from watcher.store import Store, StoreError

REPO = Path(__file__).resolve().parent.parent
SACCT = REPO / "tests" / "fixtures" / "sacct" / "real-22.05.txt"


def turingwatch(cwd: Path, *args: str, store: Path, **env: str):
    full = {**os.environ, "PYTHONPATH": str(REPO), "TURINGWATCH_STORE_PATH": str(store),
            "TURINGWATCH_ANALYSIS_RESULT_DIR": str(cwd / "results"), **env}
    for name in ("TURINGWATCH_CONFIG", "JOURNAL_STREAM", "INVOCATION_ID"):
        full.pop(name, None)
    return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [
    ("analyze", "--period", "2026-W47"),
    ("analyze", "--period", "2026-W47", "--all-users", "--bundle"),
    ("mail", "--dry-run", "--period", "2026-W47"),
])
def test_readers_refuse_a_store_that_is_not_there(tmp_path, command):
    typo = tmp_path / "sotre" / "site.duckdb"
    done = turingwatch(tmp_path, *command, store=typo)
    assert done.returncode == 1, done.stdout
    assert done.stderr.splitlines() == [
        f"turingwatch {command[0]}: store {typo} does not exist: check store.path"
        " (env TURINGWATCH_STORE_PATH), or create the store with import-accounting or ingest"]
    assert not typo.parent.exists() and not (tmp_path / "results").exists()


def test_the_message_says_where_the_path_came_from(tmp_path):
    file = tmp_path / "turingwatch.toml"
    file.write_text(f'[store]\npath = "{tmp_path / "nowhere.duckdb"}"\n')
    with pytest.raises(StoreError, match=rf"check store.path \(file {file}\)"):
        Store.site(load_config(file, environ={}))
    assert not (tmp_path / "nowhere.duckdb").exists()


def test_the_writers_create_the_store(tmp_path):
    spools = tmp_path / "spools"
    spools.mkdir()
    ingested = turingwatch(tmp_path, "ingest", str(spools), store=tmp_path / "a" / "site.duckdb")
    assert ingested.returncode == 0, ingested.stderr
    assert (tmp_path / "a" / "site.duckdb").is_file()

    sacct = tmp_path / "sacct.txt"
    sacct.write_text("".join(line for line in SACCT.read_text().splitlines(keepends=True)
                             if not line.startswith("#")))
    imported = turingwatch(tmp_path, "import-accounting", "--all-users", "--from-file", str(sacct),
                           store=tmp_path / "b" / "site.duckdb")
    assert imported.returncode == 0, imported.stderr
    read = turingwatch(tmp_path, "analyze", "--period", "2026-W47", "--all-users",
                       store=tmp_path / "b" / "site.duckdb")
    assert read.returncode == 0, read.stderr


def test_a_new_store_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "new" / "deeper" / "site.duckdb"
    old = os.umask(0o022)
    try:
        with Store(path) as store:
            store.execute("CREATE TABLE t (x VARCHAR)")
            store.execute("INSERT INTO t VALUES ('a command line with a password')")
            wal = Path(f"{path}.wal")
            assert wal.exists()  # written, not checkpointed yet: the log holds the row
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600
            with store.transaction() as cur:
                cur.execute("INSERT INTO t VALUES ('another')")
            assert not wal.exists() or stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["site.duckdb"]  # nothing left behind


def test_an_existing_store_keeps_the_mode_the_site_gave_it(tmp_path):
    path = tmp_path / "site.duckdb"
    Store(path).close()
    path.chmod(0o640)  # a group of readers
    with Store(path) as store:
        store.execute("CREATE TABLE t (x INTEGER)")
        wal = Path(f"{path}.wal")
        assert not wal.exists() or stat.S_IMODE(wal.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
