"""The letter in a real browser (Debian's Chromium through Playwright): images load, every
internal link lands on its anchor, the page is as wide as the letter, not wider, and three
kinds of letter (a heavy waster's, a fine user's, a GPU user's) are photographed at 800 and
390 px, light and dark, into $TURINGWATCH_SCREENSHOTS/letter-<kind>-<width>[-dark].png for a person to
look at."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser_helpers import chromium, keep_screenshot
from watcher.analysis.rules import load_rules
from watcher.config import load_config
from watcher.letters import render_letter
from watcher.letters.bundle import letter_for_browser
from watcher.letters.sample import GPU_NAMES, fine_report, sample_report
from watcher.letters.waste import Standing

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched




def _config():
    return load_config(None, environ={
        "TURINGWATCH_SITE_NAME": "Turing cluster",
        "TURINGWATCH_SITE_WEB_URL": "https://hpc.example.org",
        "TURINGWATCH_SITE_JOB_URL": "{web_url}/jobs/{cluster}/{job_id}",
        "TURINGWATCH_SITE_CONTACT": "HPC support <hpc-support@example.org>",
        "TURINGWATCH_LETTERS_URL": "{web_url}/letters/{period}/{user}",
        "TURINGWATCH_LETTERS_NEWS": "The A100 partition is open.",
        "TURINGWATCH_SITE_FEEDBACK_URL": "https://example.org/feedback",
    })


def _write(folder: Path, report, standing=None) -> Path:
    config = _config()
    rules = {r.id: r for r in load_rules(config).rules}
    letter = render_letter(report, rules, config, standing)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    for cid, png in letter.images.items():
        (folder / "images" / f"{cid}.png").write_bytes(png)
    path = folder / "letter.html"
    path.write_text(letter_for_browser(letter.html, lambda cid: f"images/{cid}.png"),
                    encoding="utf-8")
    return path


LETTERS = {
    "heavy": lambda: (sample_report("alice", jobs=40), Standing(3, 212, 6239.0)),
    "fine": lambda: (fine_report("carol"), Standing(180, 212, 0.4)),
    "gpu": lambda: (sample_report("gina", jobs=16, names=GPU_NAMES), Standing(12, 212, 900.0)),
}


@pytest.fixture(scope="module")
def letter_file(tmp_path_factory) -> Path:
    report, standing = LETTERS["heavy"]()
    return _write(tmp_path_factory.mktemp("letter"), report, standing)


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

    # The TL;DR is the first screen: it starts within it, and the bad endings in it are red.
    tldr = page.evaluate("document.getElementById('tldr').getBoundingClientRect().top")
    assert tldr < 400
    red = page.evaluate("getComputedStyle(document.querySelector('.tldr .bad')).color")
    assert red == "rgb(198, 40, 40)"

    # A badge takes the reader to its problem's explanation.
    page.click("table.data a.badge >> nth=0")
    target = page.evaluate("location.hash")
    assert target.startswith("#problem-")
    box = page.evaluate(f"document.getElementById('{target[1:]}').getBoundingClientRect().top")
    assert -1 < box < 200  # scrolled to it (sub-pixel offsets happen)
    page.close()


def test_narrow_screen_keeps_the_text_readable(browser, letter_file):
    page = browser.new_page(viewport={"width": 390, "height": 800})
    page.goto(letter_file.as_uri())
    card = page.evaluate("document.querySelector('table.card').getBoundingClientRect().width")
    assert card <= 390
    # Wide tables scroll inside their own box rather than shrinking the text.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    font = page.evaluate("getComputedStyle(document.querySelector('.content')).fontSize")
    assert font == "15px"
    page.close()


@pytest.mark.parametrize("kind", sorted(LETTERS))
def test_three_letters_photographed_at_800_and_390_px(browser, tmp_path, kind):
    report, standing = LETTERS[kind]()
    path = _write(tmp_path / kind, report, standing)
    shots = []
    for width in (800, 390):
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.emulate_media(color_scheme=scheme)
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            # The footer with the contact address is there, whatever the letter.
            assert "hpc-support@example.org" in page.inner_text("td.footer")
            suffix = "" if scheme == "light" else "-dark"
            shot = tmp_path / f"letter-{kind}-{width}{suffix}.png"
            page.screenshot(path=str(shot), full_page=scheme == "light")
            shots.append(shot)
            page.close()
    for shot in shots:
        keep_screenshot(shot)
