"""Reading what servers published (watcher/store/publish.py) back as one store.

A site that outgrows one server runs one per group of nodes, each publishing to shared storage;
the period analysis then runs over all of them: ``published_store(dirs)`` is a private store
whose sample and accounting tables hold every given publication's Parquet, so that
``analyze_period`` and ``write_bundle`` work over it as over the site store. A session is kept
once (each is normally one server's), a job that several servers imported once: the newest
import. The analysis writes its results into this store, which is nobody's but the caller's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb

from watcher.store import Store, StoreError, migrations, named_statements
from watcher.store.publish import CURRENT, FORMAT, MANIFEST, TABLES

_SAMPLES = ("sample_rounds", "step_samples", "process_samples", "gpu_samples")


def current_generation(publish_dir: Path) -> Path:
    """The generation ``publish_dir`` publishes now, resolved once: read through this path,
    never through ``current``, which a publish may swap under a reader mid-scan.

    A generation directory itself (it holds ``manifest.json``) is taken as it is.
    """
    publish_dir = Path(publish_dir)
    link = publish_dir / CURRENT
    if os.path.lexists(link):
        generation = Path(os.path.realpath(link))
    elif (publish_dir / MANIFEST).is_file():
        generation = publish_dir
    else:
        raise StoreError(
            f"{publish_dir} holds no publication (no {CURRENT} link, no {MANIFEST}): give the"
            " server's server.publish_dir, or a gen-NNNNNN directory in it"
        )
    try:
        manifest = json.loads((generation / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the publication {generation}: {exc}") from exc
    known = max(m.version for m in migrations())
    if manifest.get("format", 0) > FORMAT or manifest.get("schema_version", 0) > known:
        raise StoreError(
            f"{generation} was published by a newer turingwatch (format {manifest.get('format')},"
            f" schema {manifest.get('schema_version')}); upgrade turingwatch"
        )
    return generation


def published_store(
    dirs: list[Path],
    *,
    path: str | Path = ":memory:",
    memory_limit: str = "",
    threads: int = 0,
) -> Store:
    """A store (in memory, or a new file at ``path``) holding the sample and job tables of the
    current generation of every publish directory in ``dirs``; the caller closes it."""
    if not dirs:
        raise StoreError("no publish directory given")
    generations = [current_generation(d) for d in dirs]
    statements = named_statements("watcher.store", "publish.sql")
    store = Store(path, memory_limit=memory_limit, threads=threads)
    try:
        with store.transaction() as cur:  # the TEMP views are this cursor's, gone after
            present = {t: _source(cur, t, generations) for t in TABLES}
            if present["sessions"]:
                cur.execute(statements["chosen_sessions"])
                cur.execute(statements["load_sessions"])
                for table in _SAMPLES:
                    if present[table]:
                        cur.execute(statements["load_samples"].replace("{table}", table))
            for table in ("jobs", "job_steps"):
                if present[table]:
                    cur.execute(statements[f"load_{table}"])
    except duckdb.Error as exc:
        store.close()
        raise StoreError(f"cannot read the publications {[str(g) for g in generations]}: {exc}"
                         ) from exc
    except BaseException:
        store.close()
        raise
    return store


def _source(cur: duckdb.DuckDBPyConnection, table: str, generations: list[Path]) -> bool:
    """Make ``tw_src_<table>``: the table's Parquet of every generation, tagged by its place in
    the list; False when none has any (an empty table is published as no files)."""
    parts = []
    for index, generation in enumerate(generations):
        files = sorted(str(p) for p in (generation / table).rglob("*.parquet") if p.is_file())
        if not files:
            continue
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        # The path's cluster is a key for pruning (publish.sql); cluster_name is the true name.
        parts.append(
            f"SELECT * EXCLUDE (cluster, day), {index} AS tw_source FROM read_parquet([{listed}],"
            " hive_partitioning = true, union_by_name = true,"
            " hive_types = {'cluster': VARCHAR, 'day': DATE})"
        )
    if not parts:
        return False
    cur.execute(f"CREATE OR REPLACE TEMP VIEW tw_src_{table} AS " + " UNION ALL BY NAME ".join(parts))
    return True
