"""The letter in a real browser (Debian's Chromium through Playwright): images load, every
internal link lands on its anchor, and the page is as wide as the letter, not wider."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watcher.analysis.rules import load_rules
from watcher.config import load_config
from watcher.letters import render_letter
from watcher.letters.bundle import letter_for_browser
from watcher.letters.sample import sample_report

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/lib/chromium/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def letter_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("letter")
    config = load_config(None, environ={
        "TURINGWATCH_SITE_NAME": "Turing cluster",
        "TURINGWATCH_LETTERS_NEWS": "The A100 partition is open.",
        "TURINGWATCH_SITE_FEEDBACK_URL": "https://example.org/feedback",
    })
    rules = {r.id: r for r in load_rules(config).rules}
    letter = render_letter(sample_report("alice"), rules, config)
    (folder / "images").mkdir()
    for cid, png in letter.images.items():
        (folder / "images" / f"{cid}.png").write_bytes(png)
    html = letter_for_browser(letter.html, lambda cid: f"images/{cid}.png")
    path = folder / "letter.html"
    path.write_text(html, encoding="utf-8")
    return path


def test_letter_renders_whole_in_chromium(browser, letter_file):
    page = browser.new_page(viewport={"width": 800, "height": 1200})
    page.goto(letter_file.as_uri())
    page.wait_for_load_state("load")

    images = page.evaluate(
        "[...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) == 2
    assert all(complete and width > 0 for _, complete, width in images), images

    missing = page.evaluate("""[...document.querySelectorAll('a[href^="#"]')]
        .map(a => a.getAttribute('href').slice(1))
        .filter(id => !document.getElementById(id) && !document.getElementsByName(id).length)""")
    assert missing == []

    # The letter fits its 760 px card: no table pushes the page sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 800

    # A badge takes the reader to its problem's explanation.
    page.click("table.data a.badge >> nth=0")
    target = page.evaluate("location.hash")
    assert target.startswith("#problem-")
    box = page.evaluate(f"document.getElementById('{target[1:]}').getBoundingClientRect().top")
    assert -1 < box < 200  # scrolled to it (sub-pixel offsets happen)

    shots = letter_file.parent
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "letter-top.png"))
    page.screenshot(path=str(shots / "letter-full.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(shots / "letter-dark.png"))
    print(f"screenshots in {shots}")
    page.close()


def test_narrow_screen_keeps_the_text_readable(browser, letter_file):
    page = browser.new_page(viewport={"width": 400, "height": 800})
    page.goto(letter_file.as_uri())
    card = page.evaluate("document.querySelector('table.card').getBoundingClientRect().width")
    assert card <= 400
    # Wide tables scroll inside their own box rather than shrinking the text.
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    font = page.evaluate("getComputedStyle(document.querySelector('.content')).fontSize")
    assert font == "15px"
    page.screenshot(path=str(letter_file.parent / "letter-narrow.png"))
    page.close()
