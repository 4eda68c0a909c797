"""Who the web site thinks is looking: the trusted header, the session's login and its expiry,
the decorators pages rely on, and the redirects a login may make."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from flask import Flask
from flask_wtf.csrf import generate_csrf

from tests.web_helpers import header_app, web_config
from webserver import create_app
from webserver.auth import Viewer, admin_required, is_admin_user, local_path, login_required, may_see

FROM_ELSEWHERE = {"REMOTE_ADDR": "192.0.2.7"}


def with_pages(app: Flask) -> Flask:
    """Pages like the site's: one for anyone logged in, one for admins, one handing out a CSRF token."""
    app.add_url_rule("/mine", "mine", login_required(lambda: "mine"))
    app.add_url_rule("/api/v1/mine", "api_mine", login_required(lambda: {"ok": True}))
    app.add_url_rule("/everyone", "everyone", admin_required(lambda: "everyone"))
    app.add_url_rule("/token", "token", lambda: generate_csrf())
    return app


def test_the_trusted_header_names_the_viewer_from_loopback(tmp_path: Path) -> None:
    client = header_app(tmp_path, admin_users=["root"]).test_client()
    assert client.get("/api/v1/whoami", headers={"X-Remote-User": "alice"}).json == {"name": "alice", "admin": False}
    assert client.get("/api/v1/whoami", headers={"X-Remote-User": "root"}).json == {"name": "root", "admin": True}


def test_the_trusted_header_from_elsewhere_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = with_pages(header_app(tmp_path)).test_client()
    with caplog.at_level(logging.WARNING, logger="webserver"):
        api = client.get("/api/v1/whoami", headers={"X-Remote-User": "root"}, environ_base=FROM_ELSEWHERE)
        page = client.get("/mine", headers={"X-Remote-User": "root"}, environ_base=FROM_ELSEWHERE)
    assert api.status_code == 403 and "accepted only from the site's proxy" in api.json["message"]
    assert page.status_code == 403 and b"accepted only from the site&#39;s proxy" in page.data
    assert "refused X-Remote-User from 192.0.2.7" in caplog.text


def test_a_configured_proxy_may_set_the_header(tmp_path: Path) -> None:
    client = header_app(tmp_path, trusted_proxies=["192.0.2.0/28"]).test_client()
    inside = client.get("/api/v1/whoami", headers={"X-Remote-User": "bob"}, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    outside = client.get("/api/v1/whoami", headers={"X-Remote-User": "bob"}, environ_base={"REMOTE_ADDR": "192.0.2.17"})
    assert (inside.status_code, inside.json["name"]) == (200, "bob")
    assert outside.status_code == 403


@pytest.mark.parametrize("value", ["../etc", "-rf", "a b", "x" * 33, "ali;ce", ""])
def test_a_header_that_is_no_user_name_is_refused(tmp_path: Path, value: str) -> None:
    client = header_app(tmp_path).test_client()
    got = client.get("/api/v1/whoami", headers={"X-Remote-User": value})
    assert got.status_code == 403


def test_the_domain_is_cut_when_asked(tmp_path: Path) -> None:
    kept = header_app(tmp_path).test_client()
    cut = header_app(tmp_path, username_strip_domain=True).test_client()
    assert kept.get("/api/v1/whoami", headers={"X-Remote-User": "alice@example.org"}).status_code == 403
    assert cut.get("/api/v1/whoami", headers={"X-Remote-User": "alice@example.org"}).json["name"] == "alice"


def test_pages_want_a_login_and_the_api_says_401(tmp_path: Path) -> None:
    client = with_pages(header_app(tmp_path)).test_client()
    page = client.get("/mine?x=1")
    assert page.status_code == 302 and page.headers["Location"] == "/login?next=/mine?x%3D1"
    api = client.get("/api/v1/mine")
    assert api.status_code == 401 and api.json["error"] == "Unauthorized"


def test_admin_pages_are_for_admins(tmp_path: Path) -> None:
    client = with_pages(header_app(tmp_path, admin_users=["root"])).test_client()
    assert client.get("/everyone", headers={"X-Remote-User": "alice"}).status_code == 403
    assert client.get("/everyone", headers={"X-Remote-User": "root"}).data == b"everyone"
    assert client.get("/everyone").status_code == 302


def test_may_see_is_own_name_or_admin() -> None:
    assert may_see(Viewer("alice", False), "alice")
    assert not may_see(Viewer("alice", False), "bob")
    assert may_see(Viewer("root", True), "bob")
    assert not may_see(None, "alice")


@pytest.mark.parametrize(("target", "expected"), [
    ("/jobs/42?tab=cpu", "/jobs/42?tab=cpu"),
    ("//evil.example/x", "/"),
    ("/\\evil.example", "/"),
    ("https://evil.example/", "/"),
    ("javascript:alert(1)", "/"),
    ("jobs", "/"),
    ("/ok\r\nSet-Cookie: x", "/"),
    (None, "/"),
])
def test_next_goes_only_to_a_local_path(target: str | None, expected: str) -> None:
    assert local_path(target) == expected


def test_login_with_a_foreign_next_stays_on_the_site(tmp_path: Path) -> None:
    client = header_app(tmp_path).test_client()
    got = client.get("/login?next=//evil.example/", headers={"X-Remote-User": "alice"})
    assert got.status_code == 302 and got.headers["Location"] == "/"


def session_client(tmp_path: Path, **web: object):
    """A client of an app that knows logins only from its session (no header, no provider)."""
    app = with_pages(create_app(web_config(tmp_path, **web)))
    app.config["TESTING"] = True
    return app.test_client()


def test_an_expired_login_asks_for_a_new_one(tmp_path: Path) -> None:
    client = session_client(tmp_path, session_lifetime_s=3600)
    with client.session_transaction() as s:
        s["viewer"] = {"name": "alice", "admin": False, "at": time.time() - 3000}
    assert client.get("/api/v1/whoami").json["name"] == "alice"
    with client.session_transaction() as s:
        s["viewer"]["at"] = time.time() - 3601
        s["other"] = "kept from before"
    assert client.get("/api/v1/whoami").status_code == 401
    assert client.get("/mine").headers["Location"].startswith("/login")
    with client.session_transaction() as s:
        assert dict(s) == {}  # forgotten entirely, not just the viewer


def test_get_logout_does_not_log_out_and_post_needs_the_token(tmp_path: Path) -> None:
    client = session_client(tmp_path)
    with client.session_transaction() as s:
        s["viewer"] = {"name": "alice", "admin": False, "at": time.time()}
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # no CSRF token
    assert client.get("/api/v1/whoami").status_code == 200
    token = client.get("/token").data.decode()
    out = client.post("/logout", data={"csrf_token": token})
    assert out.status_code == 200 and b"You are logged out" in out.data
    assert client.get("/api/v1/whoami").status_code == 401


def test_login_without_a_method_says_so(tmp_path: Path) -> None:
    assert session_client(tmp_path).get("/login").status_code == 404
    header_only = header_app(tmp_path).test_client().get("/login")
    assert header_only.status_code == 403 and b"did not" in header_only.data


def test_logout_behind_a_login_proxy_says_where_to_log_out(tmp_path: Path) -> None:
    client = with_pages(header_app(tmp_path)).test_client()
    token = client.get("/token").data.decode()
    got = client.post("/logout", data={"csrf_token": token}, headers={"X-Remote-User": "alice"})
    assert got.status_code == 200 and b"Your login comes from the site&#39;s proxy" in got.data


@pytest.mark.parametrize(("claims", "admin"), [
    ({"groups": ["users", "hpc-admins"]}, True),
    ({"groups": ["users"]}, False),
    ({"groups": "users hpc-admins"}, True),  # roles as one space-separated string
    ({"realm_access": {"roles": ["hpc-admins"]}}, True),  # Keycloak's nested roles, by a dotted name
    ({"groups": {"hpc-admins": True}}, False),  # not a list: no admin by accident
    ({}, False),
])
def test_admins_by_a_group_or_role_claim(tmp_path: Path, claims: dict, admin: bool) -> None:
    claim_name = "realm_access.roles" if "realm_access" in claims else "groups"
    config = web_config(tmp_path, admin_claim=claim_name, admin_values=["hpc-admins"])
    assert is_admin_user(config, "alice", claims) is admin
