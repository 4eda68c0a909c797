"""What every response of the web site carries (security headers, also on errors), the session
cookie's flags, CSRF on every form, and forwarded headers believed only from a trusted proxy."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from flask import Flask, Response, session

from tests.web_helpers import header_app, secret_file, web_config
from watcher.config import ConfigError
from webserver import create_app
from webserver.security import HEADERS

ALICE = {"X-Remote-User": "alice"}


def probe_app(tmp_path: Path, **web: object) -> Flask:
    app = header_app(tmp_path, **web)
    app.config["TESTING"] = False  # so a crash reaches the 500 handler instead of the test

    def crash() -> str:
        raise RuntimeError("a bug")

    def own_policy() -> Response:
        response = Response("framed letter")
        response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'; style-src 'unsafe-inline'"
        return response

    def log_in() -> str:
        session["viewer"] = {"name": "alice", "admin": False, "at": time.time()}
        return "in"

    app.add_url_rule("/crash", "crash", crash)
    app.add_url_rule("/api/v1/crash", "api_crash", crash)
    app.add_url_rule("/letter", "letter", own_policy)
    app.add_url_rule("/form", "form", lambda: "posted", methods=["POST"])
    app.add_url_rule("/in", "log_in", log_in)
    return app


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/v1/whoami", 200),
    ("GET", "/api/v1/nothing", 401),  # no such page, but nobody logged in either: 404
    ("GET", "/nothing", 404),
    ("GET", "/logout", 405),
    ("POST", "/form", 400),  # no CSRF token
    ("GET", "/crash", 500),
    ("GET", "/api/v1/crash", 500),
])
def test_every_response_carries_the_headers(tmp_path: Path, method: str, path: str, status: int) -> None:
    client = probe_app(tmp_path).test_client()
    headers = ALICE if status != 401 else {}
    got = client.open(path, method=method, headers=headers)
    if path == "/api/v1/nothing":
        status = 404
    assert got.status_code == status
    for name, value in HEADERS.items():
        assert got.headers[name] == value, name
    csp = got.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    assert got.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in got.headers  # plain HTTP


def test_errors_are_json_under_the_api_and_pages_elsewhere(tmp_path: Path) -> None:
    client = probe_app(tmp_path).test_client()
    api = client.get("/api/v1/crash", headers=ALICE)
    page = client.get("/crash", headers=ALICE)
    assert api.json == {"error": "Internal Server Error",
                        "message": "Something went wrong on our side; it has been logged."}
    assert page.mimetype == "text/html" and b"<h1>Internal Server Error</h1>" in page.data
    assert b"a bug" not in page.data  # no details to the browser


def test_a_view_may_set_its_own_policy(tmp_path: Path) -> None:
    got = probe_app(tmp_path).test_client().get("/letter")
    assert got.headers["Content-Security-Policy"].startswith("sandbox;")
    assert got.headers["X-Content-Type-Options"] == "nosniff"


def test_hsts_under_tls_from_a_trusted_proxy_only(tmp_path: Path) -> None:
    client = probe_app(tmp_path, trusted_proxies=["198.51.100.1"]).test_client()
    https = {"X-Forwarded-Proto": "https"}
    proxied = client.get("/api/v1/whoami", headers={**ALICE, **https}, environ_base={"REMOTE_ADDR": "198.51.100.1"})
    direct = client.get("/letter", headers=https, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    tls = client.get("/letter", base_url="https://site.example")
    assert proxied.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "Strict-Transport-Security" not in direct.headers  # a client cannot claim TLS
    assert tls.headers["Strict-Transport-Security"] == "max-age=31536000"


def cookie_of(response: Response) -> str:
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("turingwatch_session=")]
    return cookie


@pytest.mark.parametrize(("base_url", "extra", "secure"), [
    ("http://localhost", {}, False),  # a developer's browser on the same machine
    ("http://127.0.0.1:8741", {}, False),
    ("http://site.example", {}, True),  # plain HTTP elsewhere: the browser keeps no cookie
    ("http://127.0.0.1:8741", {"X-Forwarded-Proto": "https"}, True),
    ("https://site.example", {}, True),
])
def test_the_session_cookie_flags(tmp_path: Path, base_url: str, extra: dict[str, str], secure: bool) -> None:
    client = probe_app(tmp_path, session_lifetime_s=600).test_client()
    got = client.get("/in", base_url=base_url, headers=extra)
    cookie = cookie_of(got).lower()
    assert "; httponly" in cookie and "; samesite=lax" in cookie and "; path=/" in cookie
    assert ("; secure" in cookie) is secure
    assert "max-age=600" in cookie or "expires=" in cookie


def test_an_https_site_url_makes_the_cookie_secure_behind_any_proxy(tmp_path: Path) -> None:
    app = probe_app(tmp_path)
    config = app.config["TURINGWATCH_CONFIG"]
    app.config["TURINGWATCH_CONFIG"] = dataclasses.replace(
        config, site=dataclasses.replace(config.site, web_url="https://tw.example"))
    got = app.test_client().get("/in", base_url="http://127.0.0.1:8741")  # a proxy without X-Forwarded-Proto
    assert "; secure" in cookie_of(got).lower()


def test_csrf_refuses_a_form_without_its_token(tmp_path: Path) -> None:
    client = probe_app(tmp_path).test_client()
    client.get("/in")
    refused = client.post("/form", data={"csrf_token": "forged"})
    assert refused.status_code == 400 and b"CSRF" in refused.data


def test_no_session_key_no_site(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web\.secret_key_file is not set"):
        create_app(web_config(tmp_path, secret_key_file=""))
    short = secret_file(tmp_path, "short", "tiny\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        create_app(web_config(tmp_path, secret_key_file=str(short)))
    shared = secret_file(tmp_path, "shared")
    shared.chmod(0o644)
    with pytest.raises(ConfigError, match="can be read by every user"):
        create_app(web_config(tmp_path, secret_key_file=str(shared)))
