"""Building the web site for a test: a Config whose [web] section is given, a private session
key in tmp_path, and the Flask app over it (webserver.create_app).

And a published site for the pages' tests (build_site): two users' jobs, analysed, lettered
and published.

alice: job alpha:424201 sampled on two nodes with two idle GPUs each (GPU and CPU findings, one
of them carrying the advice dict of common.md), alpha:424202 that FAILED by SIGSEGV with only
accounting data, alpha:424203 sampled and still running, not in accounting yet. bob: beta:737301 sampled (CPU underuse), beta:737302 (array task 737300_2)
accounting only and OUT_OF_MEMORY.
carol is the admin. The letters of week 2026-W47 are in the published bundle.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from test_publish import T0, WEEK, add_job, session_lines

from watcher.analysis.engine import analyze_period
from watcher.config import Config, WebSettings, load_config
from watcher.letters.bundle import write_bundle
from watcher.store import Store
from watcher.store.publish import Publication, publish
from watcher.store.spool_loader import apply_lines
from webserver import create_app


def secret_file(tmp_path: Path, name: str = "session-key", text: str | None = None) -> Path:
    """A private file holding a secret (read_secret refuses one others can read)."""
    path = tmp_path / name
    path.write_text(text if text is not None else secrets.token_urlsafe(32) + "\n")
    path.chmod(0o600)
    return path


def web_config(tmp_path: Path, **web: Any) -> Config:
    """The default Config with [web] settings ``web`` and a session key in ``tmp_path``."""
    web.setdefault("secret_key_file", str(secret_file(tmp_path)))
    config = Config()
    return dataclasses.replace(config, web=WebSettings(**web))


def header_app(tmp_path: Path, **web: Any) -> Flask:
    """The app logging in by X-Remote-User (from loopback, the test client's address)."""
    web.setdefault("trusted_header", "X-Remote-User")
    app = create_app(web_config(tmp_path, **web))
    app.config["TESTING"] = True
    return app


# -- a published site ----------------------------------------------------------------------

WEB_URL = "https://tw.example"
HOSTILE_NAME = '<img src=x onerror="alert(1)">'  # a job name is anything sbatch took
ADVICE = {"sentence": "Kept 1.0 of 4 cores busy; 3.0 core-hours reserved and idle.",
          "request": "--cpus-per-task=1", "scope": "job", "basis": "p90 of cores busy 1.0 × 1.1"}
# What must never appear in a page of the other user: names and job ids.
ALICE_JOBS = ("424201", "424202", "424203")
BOB_JOBS = ("737301", "737300_2")  # as shown; the task's raw id is 737302
BOB_RAW_IDS = ("737302",)


@dataclass
class Site:
    config: Config
    store_path: Path
    publication: Publication
    publish_dir: Path
    root: Path


def site_config(root: Path, **web: object) -> Config:
    """The site's configuration: its publish dir, letters' links to it, login by header."""
    key = root / "secret.key"
    if not key.exists():
        key.write_bytes(b"k" * 48)
        key.chmod(0o600)
    lines = [
        "[server]", f'publish_dir = "{root / "published"}"',
        "[analysis]", f'result_dir = "{root / "bundles"}"',
        "[site]", 'name = "Turing cluster"', f'web_url = "{WEB_URL}"',
        'job_url = "{web_url}/jobs/{cluster}/{job_id}"',
        "[letters]", 'url = "{web_url}/letters/{period}"',
        "[web]", 'trusted_header = "X-Remote-User"', 'admin_users = ["carol"]',
        f'secret_key_file = "{key}"',
    ]
    for k, v in web.items():
        lines.append(f"{k} = {json.dumps(v)}")
    path = root / "turingwatch.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path, environ={})


def build_store(path: Path) -> Store:
    store = Store(path)
    for node in ("n1", "n2"):
        apply_lines(store, session_lines(cluster="alpha", job_id=424201, node=node, gpus=2,
                                         samples=30))
    # sampled, still running, not imported yet
    apply_lines(store, session_lines(cluster="alpha", job_id=424203, node="n3", end=False,
                                     start=T0 + timedelta(hours=5)))
    apply_lines(store, session_lines(cluster="beta", job_id=737301, node="b1", user="bob",
                                     start=T0 + timedelta(days=1), busy=1.0, samples=30))
    add_job(store, "alpha", 424201, total_cpu=600.0, nodes=2, cores=8)
    add_job(store, "alpha", 424202, start=T0 + timedelta(hours=3), state="FAILED", total_cpu=100.0)
    store.execute("UPDATE jobs SET exit_code = 0, exit_signal = 11, job_name = 'crashy'"
                  " WHERE job_id = 424202")
    add_job(store, "beta", 737301, user="bob", start=T0 + timedelta(days=1))
    add_job(store, "beta", 737302, user="bob", start=T0 + timedelta(days=2), state="OUT_OF_MEMORY",
            total_cpu=50.0)
    # an array task: letters and pages show it as 737300_2
    store.execute("UPDATE jobs SET job_name = ?, job_id_display = '737300_2', array_job_id = 737300,"
                  " array_task_id = 2 WHERE job_id = 737302", [HOSTILE_NAME])
    return store


def build_site(root: Path) -> Site:
    """Analyse, letter and publish the two users' week under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    config = site_config(root)
    store = build_store(root / "site.duckdb")
    try:
        reports = analyze_period(store, config, WEEK)
        write_bundle(config, WEEK, reports)
        # The advice engineer's dict on one finding, as the analysis will store it.
        store.execute(
            "UPDATE analysis_findings SET metrics = json_merge_patch(metrics, ?)"
            " WHERE job_id = 737301 AND severity = 'serious'", [json.dumps({"advice": ADVICE})])
        pub = publish(store, Path(config.server.publish_dir),
                      bundles_dir=Path(config.analysis.result_dir))
    finally:
        store.close()
    return Site(config, root / "site.duckdb", pub, Path(config.server.publish_dir), root)


def republish(site: Site) -> Publication:
    """Publish again after a change to the store (a new generation)."""
    with Store(site.store_path) as store:
        return publish(store, site.publish_dir, bundles_dir=Path(site.config.analysis.result_dir))
