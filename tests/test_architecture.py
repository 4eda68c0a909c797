"""The floor plan of docs/architecture.md, checked on every module's imports.

ruff (TID251) keeps the node side out of everything else; this walks the imports of every
module, at the top and inside functions, and checks the whole table, including that every new
module has been given a floor.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# First component under watcher/ -> floor.
FLOORS = {
    "shared": {"__init__", "config", "errors", "logsetup", "units", "files", "templating",
               "markup", "records", "spool", "slurm", "auth", "sending", "jobstate",
               "svgchart"},
    "node": {"sampling", "watch", "card", "demo"},
    "site": {"store", "accounting", "analysis", "letters", "mailer", "server", "distributor"},
    "cli": {"cli", "commands", "__main__"},
}
MAY_IMPORT = {
    "shared": {"shared"},
    "site": {"shared", "site"},
    # The job's end judges it with the site's engine on a store of its own.
    "node": {"shared", "node", "site"},
    "cli": {"shared", "node", "site", "web", "cli"},  # `turingwatch web` serves the site
    # The web site reads what the server publishes; never the job watcher.
    "web": {"shared", "site", "web"},
}
# Of the site side, the web floor imports only what reads what the server publishes (the
# published snapshot, the store opened read-only, bundles and what describes their content):
# never the server, the mailer, the engine or a store writer (docs/architecture.md).
WEB_READS = {
    "watcher.store",  # Store, opened read_only=True only (test_web_opens_stores_read_only)
    "watcher.store.published",
    "watcher.analysis", "watcher.analysis.model", "watcher.analysis.rules", "watcher.analysis.sections",
}
WEB_READS_UNDER = ("watcher.letters",)  # the bundle and what its letters are: it writes no store


def floor_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "webserver":
        return "web"
    if parts[0] != "watcher":
        return None
    top = parts[1] if len(parts) > 1 else "__init__"
    for floor, members in FLOORS.items():
        if top in members:
            return floor
    return "unplaced"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else [parts[0], "__init__"]
    return ".".join(parts)


def imported(path: Path, module: str) -> set[str]:
    """Every absolute module name this file imports, wherever the import statement is."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            # `from watcher import spool` imports the module watcher.spool
            found.update(f"{name}.{a.name}" for a in node.names if is_module(f"{name}.{a.name}"))
    return found


def is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def python_files() -> list[Path]:
    files = sorted((REPO / "watcher").rglob("*.py"))
    if (REPO / "webserver").is_dir():
        files += sorted((REPO / "webserver").rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def violations(path: Path, module: str) -> list[str]:
    """The imports of ``path`` (module ``module``) that its floor may not make."""
    floor = floor_of(module)
    if floor == "unplaced":
        return [f"{module} stands on no floor: add it to FLOORS here and to docs/architecture.md"]
    wrong = []
    for name in sorted(imported(path, module)):
        target = floor_of(name)
        if target is None:  # not ours
            continue
        if target == "unplaced" and not is_module(name):
            continue
        if target not in MAY_IMPORT[floor]:
            wrong.append(f"{module} ({floor}) imports {name} ({target})")
        elif floor == "web" and target == "site" and name not in WEB_READS and not any(
                name == p or name.startswith(p + ".") for p in WEB_READS_UNDER):
            wrong.append(f"{module} (web) imports {name} (site, not a reader of what is published)")
    return wrong + writable_stores(path, module)


def writable_stores(path: Path, module: str) -> list[str]:
    """Calls in a web module that open a store (``Store(...)``, ``Store.site(...)``) without
    ``read_only=True``: the web site never holds a writable store. ``Store(":memory:")`` is
    a private scratch store (the snapshot is attached to it read-only), nobody's data."""
    if floor_of(module) != "web":
        return []
    wrong = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        opens = (isinstance(func, ast.Name) and func.id == "Store") or (
            isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id == "Store")
        read_only = any(k.arg == "read_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                        for k in node.keywords)
        private = bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == ":memory:"
        if opens and not read_only and not private:
            wrong.append(f"{module} (web) opens a store without read_only=True (line {node.lineno})")
    return wrong


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_module_imports_follow_the_floor_plan(path: Path) -> None:
    wrong = violations(path, module_name(path))
    assert not wrong, "; ".join(wrong) + " (see docs/architecture.md)"


def test_every_floor_is_documented() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for floor, members in FLOORS.items():
        if floor == "cli":
            continue
        for member in members - {"__init__", "__main__"}:
            assert f"`{member}" in text, f"docs/architecture.md does not place {member} on the {floor} floor"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("watcher.store.probe", "def f():\n    from watcher.sampling.sampler import Sampler\n",
         ["watcher.store.probe (site) imports watcher.sampling.sampler (node)"]),
        ("watcher.spool", "from watcher import analysis\n",
         ["watcher.spool (shared) imports watcher.analysis (site)"]),
        ("watcher.letters.probe", "from ..watch import session\n",
         ["watcher.letters.probe (site) imports watcher.watch (node)",
          "watcher.letters.probe (site) imports watcher.watch.session (node)"]),
        ("watcher.mailer.probe", "from watcher import card\n",
         ["watcher.mailer.probe (site) imports watcher.card (node)"]),
        ("watcher.card.probe", "from watcher.analysis.engine import analyze_session\n", []),
        ("webserver.probe", "from watcher.store.published import current_generation\n", []),
        ("webserver.probe", "from watcher.analysis.model import Finding\n", []),
        ("webserver.probe", "from watcher.letters.bundle import read_manifest\n", []),
        ("webserver.probe", "import watcher.card.render\n",
         ["webserver.probe (web) imports watcher.card.render (node)"]),
        ("webserver.probe", "from watcher.store.publish import publish\n",
         ["webserver.probe (web) imports watcher.store.publish (site, not a reader of what is published)"]),
        ("webserver.probe", "from watcher.server import daemon\n",
         ["webserver.probe (web) imports watcher.server (site, not a reader of what is published)",
          "webserver.probe (web) imports watcher.server.daemon (site, not a reader of what is published)"]),
        ("webserver.probe", "from watcher.store import Store\ns = Store.site(c)\n",
         ["webserver.probe (web) opens a store without read_only=True (line 2)"]),
        ("webserver.probe", "from watcher.store import Store\ns = Store.site(c, read_only=True)\n", []),
        ("webserver.probe", "from watcher.store import Store\ns = Store(p, read_only=False)\n",
         ["webserver.probe (web) opens a store without read_only=True (line 2)"]),
        ("webserver.probe", "from watcher.store import Store\ns = Store(':memory:')\n", []),
        ("webserver.probe", "from watcher.letters.render import RenderedLetter\n", []),
        ("webserver.probe", "from watcher.analysis.engine import analyze_period\n",
         ["webserver.probe (web) imports watcher.analysis.engine (site, not a reader of what is published)"]),
        ("watcher.newthing", "import os\n",
         ["watcher.newthing stands on no floor: add it to FLOORS here and to docs/architecture.md"]),
    ],
)
def test_the_check_itself(tmp_path: Path, module: str, source: str, expected: list[str]) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert violations(path, module) == expected
