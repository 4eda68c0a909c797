"""Packaging by role: a compute node's install (no [site] or [web] extra) runs and reports a job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SITE_AND_WEB_ONLY = ("numpy", "PIL", "flask", "authlib", "flask_wtf", "waitress", "webserver")

# Runs `turingwatch run` in a Python where the [site] and [web] extras' modules cannot be imported.
BLOCKED_RUN = f"""
import sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SITE_AND_WEB_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed on a compute node)")
        return None

sys.meta_path.insert(0, NotInstalled())
from watcher.cli import main
main()
"""


def test_a_compute_node_install_watches_a_job_without_the_site_and_web_extras(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TURINGWATCH_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, "run", "-i", "0.5", "-o", "out", "--",
         sys.executable, "-c", "import time; time.sleep(1.2)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "No module named" not in done.stderr, done.stderr
    assert "turingwatch report card" in done.stdout + done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["findings"] is not None
    assert "<svg" in (tmp_path / "out" / "report.html").read_text()


def test_dependencies_are_split_by_role() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for module in ("numpy", "pillow", "flask", "authlib"):
        assert module not in base, f"{module} is not needed on a compute node"
    assert any(d.startswith("numpy") for d in extras["site"])
    assert any(d.startswith("flask") for d in extras["web"])
    duckdb = next(d for d in project["dependencies"] if d.startswith("duckdb"))
    assert "<2" in duckdb, "DuckDB 2.0 removed APIs: keep an upper bound on its major version"


# What webserver/ imports from outside the project -> the [web] extra's requirement that brings it
# (werkzeug, jinja2 and joserfc come with flask and authlib).
WEB_IMPORTS = {"flask": "flask", "werkzeug": "flask", "jinja2": "flask", "authlib": "authlib",
               "joserfc": "authlib", "requests": "requests", "flask_wtf": "flask-wtf", "waitress": "waitress"}


def test_the_web_extra_brings_what_the_web_site_imports() -> None:
    import ast

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    web = " ".join(project["optional-dependencies"]["web"])
    base = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    stdlib = sys.stdlib_module_names
    found: set[str] = set()
    for path in [*(REPO / "webserver").rglob("*.py"), REPO / "watcher" / "commands" / "web.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    outside = found - set(stdlib) - {"watcher", "webserver", "__future__"} - base
    assert outside <= WEB_IMPORTS.keys(), f"webserver imports {outside - WEB_IMPORTS.keys()}: add it to the [web] extra"
    for module in outside:
        assert WEB_IMPORTS[module] in web, f"{module} comes with {WEB_IMPORTS[module]}, missing from [web]"
    assert "install_subdir('webserver'" in (REPO / "meson.build").read_text()
