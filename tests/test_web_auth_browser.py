"""The login in a real browser: headless Chromium, `turingwatch web` in its own process and
oidc-provider-mock in another. What only a browser checks: the session cookie's flags let it
through the provider's cross-site redirect back (SameSite=Lax; site and provider are on
different hosts, localhost and 127.0.0.1), and the error page renders under the site's CSP
with nothing blocked. Screenshots go to tmp_path and $TURINGWATCH_SCREENSHOTS/webauth-*.png when that
directory exists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.browser_helpers import chromium, keep_screenshot
from tests.oidc_helpers import Provider, free_port, running_provider
from tests.web_helpers import secret_file

pytestmark = [pytest.mark.browser, pytest.mark.oidc]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Provider]]:
    """`turingwatch web` logging in with the provider: (its URL, the provider)."""
    work = tmp_path_factory.mktemp("web")
    with running_provider(work) as provider:
        port = free_port()
        url = f"http://localhost:{port}"
        client_id, secret = provider.client(f"{url}/auth/callback")
        published = work / "published"
        published.mkdir()
        config = work / "turingwatch.toml"
        config.write_text(
            f'[site]\nweb_url = "{url}"\n[server]\npublish_dir = "{published}"\n[web]\n'
            f'listen = "127.0.0.1:{port}"\nsecret_key_file = "{secret_file(work)}"\n'
            f'oidc_discovery_url = "{provider.discovery}"\nclient_id = "{client_id}"\n'
            f'client_secret_file = "{secret_file(work, "client-secret", secret)}"\n'
            'admin_claim = "groups"\nadmin_values = ["hpc-admins"]\n')
        env = {**os.environ, "PYTHONPATH": str(REPO), "TURINGWATCH_CONFIG": str(config)}
        proc = subprocess.Popen([sys.executable, "-m", "watcher", "-v", "web"], env=env,
                                stdout=subprocess.DEVNULL, stderr=(work / "web.log").open("wb"))
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests.get(f"{url}/api/v1/whoami", timeout=1)
                    break
                except requests.ConnectionError:
                    assert proc.poll() is None and time.monotonic() < deadline, (work / "web.log").read_text()
                    time.sleep(0.2)
            yield url, provider
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)


@pytest.fixture()
def page(tmp_path: Path) -> Iterator[object]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 390, "height": 640})
        yield context.new_page()


def shot(page: object, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"webauth-{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    keep_screenshot(path)


def test_an_admin_logs_in_through_the_provider(site: tuple[str, Provider], page, tmp_path: Path) -> None:
    url, provider = site
    provider.user("u-carol", preferred_username="carol", groups=["hpc-admins"])
    page.goto(f"{url}/login?next=/api/v1/whoami")
    assert page.url.startswith(provider.url + "/oauth2/authorize")
    page.fill("input[name=sub]", "u-carol")
    page.click("button:has-text('Authorize')")
    page.wait_for_url(f"{url}/api/v1/whoami")
    assert json.loads(page.inner_text("body")) == {"name": "carol", "admin": True}
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "turingwatch_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["expires"] > time.time()
    assert not cookie["secure"]  # plain HTTP on loopback: development
    shot(page, tmp_path, "logged-in")


def test_a_denied_login_shows_the_error_page_unblocked(site: tuple[str, Provider], page, tmp_path: Path) -> None:
    url, _ = site
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{url}/login")
    page.fill("input[name=sub]", "u-dave")
    page.click("button[value=deny]")
    page.wait_for_url(f"{url}/auth/callback*")
    assert page.inner_text("h1") == "Login failed"
    assert "access_denied" in page.inner_text("main")
    assert not blocked, blocked
    shot(page, tmp_path, "access-denied")
