"""report.html in a real browser (Debian's Chromium through Playwright), for a real short job that
failed and for one on (fake) GPUs: at 390, 800 and 1280 px the page keeps the screen's width,
the end state leads in a red banner, the legend's swatches keep distinct colours, a hostile
command line is shown as text, and nothing is logged on the console.

Screenshots go to the test's folder and to $TURINGWATCH_SCREENSHOTS/card-report-*.png (looked at by hand).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser_helpers import chromium, keep_screenshot

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
FAKE_NVML = REPO / "tests" / "fake_nvml"
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
    with chromium() as launched:
        yield launched




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
    keep_screenshot(shot)


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


def _long_job_summary() -> dict:
    """A two-hour job on two nodes that hit its time limit, with findings (advised and not)."""
    timeline = [{"t": t, "node": node, "cores_in_use": (1.5 if (t // 600) % 2 else 0.4) + k,
                 "rss_bytes": (3 + k + t / 3600) * 2**30, "memory_bytes": None, "dt": 30}
                for k, node in enumerate(("node017", "node018")) for t in range(0, 7201, 30)]
    advised = {"rule": "cpu_underuse", "severity": "serious", "title": "CPU underuse", "step": None,
               "sentence": "Kept 1.4 of 16 cores busy; 29 core-hours reserved and idle.",
               "request": "--cpus-per-task=2", "advised": True, "solution": None}
    fallback = {"rule": "memory_underuse", "severity": "medium", "title": "Memory underuse",
                "step": "batch", "sentence": "Memory underuse: peak memory 5.0\u00a0GiB, requested 64.0\u00a0GiB.",
                "request": None, "advised": False,
                "solution": "Ask for the memory the job peaks at, with `--mem`, plus a margin."}
    return {
        "job_id": 4242, "job_name": "train-<resnet>", "command": "srun python train.py --epochs 90",
        "start": "2026-12-03T08:00:00+00:00", "state": "TIMEOUT", "exit_code": None,
        "exit_signal": 15, "elapsed_s": 7200.0, "time_limit_s": 7200, "time_limit_share": 1.0,
        "cores_available": 32, "cpu_user_s": 20000.0, "cpu_system_s": 100.0, "cpu_efficiency": 0.087,
        "cores_in_use": {"mean": 2.79, "distribution": [{"cores": 1, "share": 0.5},
                                                        {"cores": 3, "share": 0.5}]},
        "peak_rss_bytes": 5 * 2**30, "peak_memory_bytes": 5 * 2**30, "memory_source": "cgroup",
        "mem_requested_bytes": 64 * 2**30, "mem_used_share": 0.078, "not_measured": None,
        "nodes": [{"node": "node017"}, {"node": "node018"}], "steps": [], "gpus": [],
        "top_processes": [], "findings": [advised, fallback], "findings_note": None,
        "timeline": timeline, "gpu_timeline": [], "intercepter": None,
    }


@pytest.mark.parametrize("width", (390, 1280))
def test_a_timed_out_jobs_findings_read_as_sentences_with_their_request(browser, tmp_path, width):
    from watcher.card.html import render_report_html

    path = tmp_path / "report.html"
    path.write_text(render_report_html(_long_job_summary()))
    page, errors = _open(browser, path, width)
    assert page.evaluate("document.documentElement.scrollWidth") == width
    assert page.locator(".end").inner_text().strip() == "✖ TIMEOUT after 02:00:00"
    assert page.locator("h1").inner_text() == "Job 4242 · train-<resnet>"
    assert page.locator(".request code").first.inner_text() == "--cpus-per-task=2"
    ticks = page.evaluate("""() => [...document.querySelectorAll('svg.chart text.time')]
        .filter(t => t.getBoundingClientRect().width > 0).map(t => t.textContent)""")
    assert ticks[0] == "0:00" and ticks[-1] == "2:00" and "0:30" in ticks   # h:mm, round steps
    _shoot(page, path, f"card-report-findings-{width}")
    page.emulate_media(color_scheme="dark")     # the page follows the reader's dark mode
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(17, 24, 39)"
    _shoot(page, path, f"card-report-findings-dark-{width}")
    assert errors == []
    page.close()
