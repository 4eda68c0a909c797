"""``turingwatch jobs`` as a terminal shows it: run on a pseudo-terminal (so colour is chosen the
way a user gets it, not forced), its ANSI colours turned into HTML, and screenshot in Chromium
at 1000 px (also copied into $TURINGWATCH_SCREENSHOTS when that is set)."""

from __future__ import annotations

import html
import os
import pty
import re
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from tests.browser_helpers import chromium, keep_screenshot
from tests.pty_helpers import read_until_closed
from tests.test_analysis import GIB, T0, Cluster
from watcher.store import Store

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
SGR = re.compile(r"\x1b\[([0-9;]*)m")
# the SGR colours click.style uses, as a dark terminal shows them
COLOURS = {"31": "#ff6b6b", "32": "#8ae234", "33": "#fce94f", "34": "#729fcf", "36": "#34e2e2"}


def ansi_to_html(text: str) -> str:
    """Text with SGR escapes (colours, bold, reset) as HTML spans; everything else escaped."""
    out, colour, bold, pos = [], None, False, 0

    def chunk(part: str) -> None:
        if not part:
            return
        style = (f"color:{COLOURS[colour]};" if colour in COLOURS else "") + (
            "font-weight:bold;" if bold else "")
        escaped = html.escape(part)
        out.append(f'<span style="{style}">{escaped}</span>' if style else escaped)

    for match in SGR.finditer(text):
        chunk(text[pos:match.start()])
        for code in (match.group(1) or "0").split(";"):
            if code in ("0", ""):
                colour, bold = None, False
            elif code == "1":
                bold = True
            elif code == "22":
                bold = False
            elif code == "39":
                colour = None
            else:
                colour = code
        pos = match.end()
    chunk(text[pos:])
    return "".join(out)


def test_the_converter_keeps_text_and_colours():
    assert ansi_to_html("\x1b[31mFAILED\x1b[0m <x>") == (
        '<span style="color:#ff6b6b;">FAILED</span> &lt;x&gt;')


@pytest.fixture
def mixed_store(tmp_path: Path) -> Path:
    """A week of jobs that ended every way a job can."""
    path = tmp_path / "site.duckdb"
    with Store(path) as store:
        c = Cluster(store)
        hour = timedelta(hours=1)
        train = c.job(name="train-resnet", cores=16, gpus=4, elapsed=5 * 3600, limit=8 * 3600,
                      total_cpu=5 * 3600 * 14.0, max_rss=50 * GIB, mem=64 * GIB, partition="gpu")
        session = c.session(train, cores=16, elapsed=5 * 3600, interval=60)
        c.gpus(session, {i: [u] * 300 for i, u in enumerate((85.0, 80.0, 35.0, 5.0))}, interval=60)
        c.job(name="prep-data", cores=8, elapsed=1800, total_cpu=1800 * 1.0, max_rss=GIB,
              mem=32 * GIB, start=T0 + hour)
        failed = c.job(name="solver", cores=4, elapsed=300, total_cpu=1100.0, state="FAILED",
                       max_rss=3 * GIB, mem=4 * GIB, start=T0 + 2 * hour)
        store.execute("UPDATE jobs SET exit_code = 3 WHERE job_id = ?", [failed])
        segv = c.job(name="sim-mpi", cores=32, elapsed=900, total_cpu=900 * 30.0, state="FAILED",
                     max_rss=20 * GIB, mem=64 * GIB, start=T0 + 3 * hour)
        store.execute("UPDATE jobs SET exit_signal = 11 WHERE job_id = ?", [segv])
        c.job(name="long-fit", cores=4, elapsed=4 * 3600, limit=4 * 3600, total_cpu=4 * 3600 * 3.8,
              state="TIMEOUT", max_rss=2 * GIB, mem=8 * GIB, start=T0 + 4 * hour)
        c.job(name="assemble", cores=2, elapsed=700, total_cpu=1300.0, state="OUT_OF_MEMORY",
              max_rss=16 * GIB, mem=16 * GIB, start=T0 + 5 * hour)
        c.job(name="notebook", cores=8, elapsed=6 * 3600, limit=12 * 3600, total_cpu=600.0, max_rss=GIB,
              mem=16 * GIB, start=T0 + 6 * hour)
        c.job(name="array-task", cores=1, elapsed=120, total_cpu=118.0, max_rss=GIB // 2,
              mem=GIB, start=T0 + 7 * hour)
        c.job(name="running", cores=4, elapsed=600, total_cpu=2300.0, state="RUNNING",
              max_rss=GIB, mem=8 * GIB, start=T0 + 8 * hour)
    return path


def run_in_a_terminal(*args: str, env: dict[str, str]) -> str:
    """turingwatch's stdout as a terminal gets it (a pseudo-terminal 100 columns wide)."""
    master, slave = pty.openpty()
    os.set_blocking(master, True)
    full = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": "100",
            **env}
    full.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "watcher", *args], stdin=slave, stdout=slave,
                            stderr=slave, env=full)
    os.close(slave)
    shown = read_until_closed(master)
    assert proc.wait(timeout=120) == 0, shown.decode(errors="replace")
    return shown.decode().replace("\r\n", "\n")


def test_jobs_in_a_terminal_screenshot(mixed_store, tmp_path):
    shown = run_in_a_terminal("jobs", "--all-users", "--store", str(mixed_store),
                              env={"TURINGWATCH_STORE_PATH": str(mixed_store)})
    plain = SGR.sub("", shown)
    assert "\x1b[31m" in shown and "\x1b[32m" in shown  # a terminal: coloured without asking
    assert max(len(line) for line in plain.splitlines()) <= 100
    assert "FAILED, SIGSEGV" in plain and "OUT_OF_MEMORY" in plain and "RUNNING" in plain
    assert re.search(r"train-res… +COMPLETED .* 51% +\S+$", plain, re.M)  # GPUs at 85/80/35/5 %
    with screenshot(shown, tmp_path / "lookup-jobs-terminal.png") as page:
        red = page.locator("span", has_text="FAILED, exit 3")
        assert red.count() == 1
        assert red.evaluate("e => getComputedStyle(e).color") == "rgb(255, 107, 107)"


def test_one_job_in_a_terminal_screenshot(mixed_store, tmp_path):
    shown = run_in_a_terminal("job", "1000", "--store", str(mixed_store), env={})
    plain = SGR.sub("", shown)
    assert "4 GPU(s), 51% mean utilization" in plain and "Findings (judged now" in plain
    assert "GPU samples only" in plain and "accounting only" not in plain
    assert max(len(line) for line in plain.splitlines()) <= 100
    with screenshot(shown, tmp_path / "lookup-job-terminal.png") as page:
        state = page.locator("span", has_text="COMPLETED")
        assert state.evaluate("e => getComputedStyle(e).color") == "rgb(138, 226, 52)"  # green


@contextmanager
def screenshot(shown: str, shot: Path):
    """The terminal text as a dark page in Chromium at 1000 px; the screenshot is taken after
    the caller's checks on the page, then copied to $TURINGWATCH_SCREENSHOTS."""
    page_html = (
        "<!doctype html><html><head><meta charset='utf-8'><style>"
        "body{margin:0;background:#1e1e1e}"
        "pre{margin:0;padding:16px;color:#d0d0d0;font:14px/1.35 'DejaVu Sans Mono',monospace}"
        "</style></head><body><pre id='term'>" + ansi_to_html(shown) + "</pre></body></html>")
    page_file = shot.with_suffix(".html")
    page_file.write_text(page_html, encoding="utf-8")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 400})
        page.goto(page_file.as_uri())
        # 100 columns of a 14 px monospace font fit 1000 px: nothing scrolls sideways
        assert page.evaluate("document.documentElement.scrollWidth") <= 1000
        yield page
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    keep_screenshot(shot)
