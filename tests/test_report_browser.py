"""report.html in a real browser (Debian's Chromium through Playwright): on a phone the page keeps
the screen's width (wide tables and charts scroll by themselves), and a hostile command line is
shown as text."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/lib/chromium/chromium"


@pytest.fixture(scope="module")
def report(tmp_path_factory, turingwatch_command):
    folder = tmp_path_factory.mktemp("report")
    code = "import time; t = time.time()\nwhile time.time() - t < 2: pass  # " + "<b>x</b> " * 40
    done = subprocess.run([*turingwatch_command.argv, "run", "-q", "-i", "0.5", "-o", "out", "--",
                           sys.executable, "-c", code], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, **turingwatch_command.env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder / "out" / "report.html"


@pytest.mark.parametrize("width", [1280, 390])
def test_the_report_fits_the_screen(report, width):
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(report.as_uri())
        assert page.evaluate("document.documentElement.scrollWidth") == width
        assert page.locator("td.cmd code").first.inner_text().count("<b>x</b>") >= 2   # text, not markup (cut at 120)
        assert page.locator("b").count() == 0
        page.screenshot(path=str(report.parent / f"report-{width}.png"), full_page=True)
        browser.close()
