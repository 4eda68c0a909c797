"""report.html in a real browser (Debian's Chromium through Playwright), for a real short job that
failed and for one on (fake) GPUs: at 390, 800 and 1280 px the page keeps the screen's width,
the end state leads in a red banner, the legend's swatches keep distinct colours, a hostile
command line is shown as text, and nothing is logged on the console.

Screenshots go to the test's folder and to /work/screens/card-report-*.png (looked at by hand).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/lib/chromium/chromium"
REPO = Path(__file__).resolve().parent.parent
FAKE_NVML = REPO / "tests" / "fake_nvml"
SCREENS = Path("/work/screens")
WIDTHS = (390, 800, 1280)
# A job that computes for 3 s and fails, with markup in its command line.
FAILING = ("# " + "<b>x</b> " * 40 + "\nimport sys, time; t = time.time()\n"
           "while time.time() - t < 3: pass\nsys.exit(3)\n")
BUSY = "import time; t = time.time()\nwhile time.time() - t < 3: pass\n"


def _run(folder: Path, turingwatch_command, code: str, env: dict[str, str] | None = None) -> Path:
    done = subprocess.run([*turingwatch_command.argv, "run", "-q", "-i", "0.5", "-o", "out", "--",
                           sys.executable, "-c", code], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, **turingwatch_command.env, **(env or {})}, timeout=120)
    assert done.returncode == (3 if "exit(3)" in code else 0), done.stderr
    return folder / "out" / "report.html"


@pytest.fixture(scope="module")
def report(tmp_path_factory, turingwatch_command) -> Path:
    return _run(tmp_path_factory.mktemp("report"), turingwatch_command, FAILING)


@pytest.fixture(scope="module")
def gpu_report(tmp_path_factory, turingwatch_command) -> Path:
    scenario = FAKE_NVML / "scenarios" / "two-gpus-one-idle.json"
    env = {"PYTHONPATH": f"{FAKE_NVML}:{REPO}", "FAKE_NVML_SCENARIO": str(scenario)}
    return _run(tmp_path_factory.mktemp("gpu-report"), turingwatch_command, BUSY, env)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def _open(browser, path: Path, width: int):
    """The page at ``width`` px, and the console errors it logged."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.as_uri())
    return page, errors


def _shoot(page, path: Path, name: str) -> None:
    shot = path.parent / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    if SCREENS.is_dir():
        shutil.copy(shot, SCREENS / shot.name)


def _visible_swatch_colours(page) -> list[list[str]]:
    """Per chart on screen: the computed fill of each legend swatch."""
    return page.evaluate("""() => [...document.querySelectorAll('svg.chart')]
        .filter(svg => svg.getBoundingClientRect().width > 0)
        .map(svg => [...svg.querySelectorAll('rect.swatch')].map(r => getComputedStyle(r).fill))""")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_report_of_a_failed_job_fits_the_screen_and_leads_with_its_end(browser, report, width):
    page, errors = _open(browser, report, width)
    assert page.evaluate("document.documentElement.scrollWidth") == width
    banner = page.locator(".end")
    assert banner.inner_text().strip() == "✖ FAILED, exit code 3"
    assert page.evaluate("getComputedStyle(document.querySelector('.end')).backgroundColor") \
        == "rgb(185, 28, 28)"
    assert banner.bounding_box()["y"] < 60          # the first thing on the page
    # The command line is text: its markup is shown, never parsed.
    assert page.locator(".cmdline code").inner_text().count("<b>x</b>") >= 2
    assert page.locator("td.cmd code").first.inner_text().count("<b>x</b>") >= 2   # cut at 120
    assert page.locator("b").count() == 0 and page.locator("script").count() == 0
    # One drawing of each chart is shown: the phone's below 600 px, else the wide one.
    shown = page.evaluate("""() => [...document.querySelectorAll('svg.chart')]
        .filter(svg => svg.getBoundingClientRect().width > 0).map(svg => svg.classList[1])""")
    assert shown and set(shown) == {"chart-narrow" if width < 600 else "chart-wide"}
    # Labels stay readable: a tick's text is drawn at 9 px or more.
    tick = page.evaluate("""() => [...document.querySelectorAll('svg.chart text.tick')]
        .filter(t => t.getBoundingClientRect().width > 0)[0].getBoundingClientRect().height""")
    assert tick >= 9
    if width < 600:  # tables stack: a row is a card of label/value lines, no header row
        assert not page.locator("table.stack thead").first.is_visible()
    _shoot(page, report, f"card-report-{width}")
    assert errors == []
    page.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_gpu_legend_keeps_a_colour_per_gpu(browser, gpu_report, width):
    page, errors = _open(browser, gpu_report, width)
    assert page.evaluate("document.documentElement.scrollWidth") == width
    assert page.locator(".end").inner_text().strip() == "COMPLETED"
    assert page.locator("text=GPU utilization").count() >= 1
    charts = _visible_swatch_colours(page)
    gpu_chart = next(c for c in charts if len(c) == 2)   # two GPUs, one node
    assert len(set(gpu_chart)) == 2
    greys = {"rgb(107, 114, 128)", "rgb(156, 163, 175)"}   # the page's muted text colours
    assert not greys & {colour for chart in charts for colour in chart}
    _shoot(page, gpu_report, f"card-report-gpu-{width}")
    assert errors == []
    page.close()
