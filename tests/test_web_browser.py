"""The site in a real browser (Debian's Chromium through Playwright), served by waitress as
`turingwatch web` serves it: log in (the trusted header), the pages fit 1280 and 390 px, the
charts render, the letter's links lead to the site's pages, and nothing is refused by the CSP
or logged as an error. Screenshots go to the test's tmp_path and $TURINGWATCH_SCREENSHOTS for review.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from web_helpers import build_site

from tests.browser_helpers import chromium, keep_screenshot
from webserver import create_app

pytestmark = pytest.mark.browser

PAGES = {  # screenshot name -> (path, user)
    "home": ("/", "alice"),
    "jobs": ("/jobs?sort=idle_core_hours", "carol"),
    "job": ("/jobs/alpha/424201", "alice"),
    "letter": ("/letters/2026-W47", "alice"),
    "admin": ("/admin", "carol"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    waitress = pytest.importorskip("waitress")
    site = build_site(tmp_path_factory.mktemp("browser"))
    app = create_app(site.config)
    srv = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}"
    srv.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched




def open_page(browser, width: int, user: str, dark: bool = False):
    context = browser.new_context(viewport={"width": width, "height": 900},
                                  extra_http_headers={"X-Remote-User": user},
                                  color_scheme="dark" if dark else "light")
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return context, page, problems


def shoot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep_screenshot(path)


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_fits_and_loads_clean(server, browser, tmp_path, name, width):
    path, user = PAGES[name]
    context, page, problems = open_page(browser, width, user)
    response = page.goto(server + path)
    assert response.status == 200
    page.wait_for_load_state("networkidle")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "wider than the screen"
    if name in ("job", "admin"):
        charts = page.locator("svg.chart")
        assert charts.count() >= (6 if name == "job" else 1)
        box = charts.first.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 50
    shoot(page, tmp_path, f"web-{name}-{width}")
    context.close()
    assert problems == [], problems  # CSP refusals are console errors too


def test_dark_mode_screens(server, browser, tmp_path):
    for name in ("job", "home"):
        path, user = PAGES[name]
        context, page, problems = open_page(browser, 390, user, dark=True)
        page.goto(server + path)
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(18, 21, 26)"
        shoot(page, tmp_path, f"web-{name}-390-dark")
        context.close()
        assert problems == [], problems


def test_the_letters_links_lead_to_the_sites_pages(server, browser):
    context, page, problems = open_page(browser, 1280, "alice")
    images: list[tuple[int, str]] = []
    page.on("response", lambda r: images.append((r.status, r.headers.get("content-type", "")))
            if "/images/" in r.url else None)
    page.goto(server + "/letters/2026-W47")
    page.wait_for_load_state("networkidle")
    frame = page.frame_locator("iframe.letter")
    frame.locator("a[href='#top']").first.wait_for()
    frame.locator("a[href='#top']").first.click()  # within the letter: the page stays
    assert page.url.endswith("/letters/2026-W47")
    # The letter's charts came from the site (no script may run in the frame to ask it).
    assert images and all(status == 200 and kind == "image/png" for status, kind in images)
    frame.locator("a[href='/jobs/alpha/424201']").first.click()
    page.wait_for_url("**/jobs/alpha/424201")
    assert page.locator("h1").inner_text().startswith("Job 424201")
    context.close()
    assert problems == [], problems
