"""Headless Debian Chromium through Playwright, launched one way for every browser test, and
the screenshots those tests take, kept where a developer looks at them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/lib/chromium/chromium"
# No sandbox (root in a VM), no GPU, and nothing that reaches out to the network by itself.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# A developer collects the screenshots here to look at them; unset (CI): they stay in tmp_path.
SCREENSHOTS_ENV = "TURINGWATCH_SCREENSHOTS"


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright Browser); the test is skipped without one."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def keep_screenshot(path: Path) -> None:
    """Copy a screenshot into $TURINGWATCH_SCREENSHOTS when that names a folder."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder and Path(folder).is_dir():
        shutil.copy(path, Path(folder) / path.name)
