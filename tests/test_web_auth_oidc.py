"""The OpenID Connect login against a real provider: oidc-provider-mock in its own process on a
free loopback port, the site through Flask's test client (the "browser" follows the provider's
redirects by hand, so each step can be checked or tampered with).

What the provider does not check, the site must: it accepts any client, secret and redirect URI
and ignores PKCE, so these tests look at what the site sends (an S256 challenge that matches the
verifier it keeps) and at what it refuses (a forged state, a code used twice, an ID token whose
nonce is not the one the login started with, the provider's "access denied").
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask.testing import FlaskClient
from flask_wtf.csrf import generate_csrf

from tests.oidc_helpers import Provider, free_port, running_provider
from tests.web_helpers import secret_file, web_config
from webserver import create_app

pytestmark = pytest.mark.oidc

@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    with running_provider(tmp_path_factory.mktemp("oidc")) as found:
        yield found


def site(tmp_path: Path, provider: Provider, *, secret: str | None = None, **web: Any) -> FlaskClient:
    """The site as a client registered with the provider: its secret checked, its redirect URI
    the only one allowed. (A public client, PKCE alone, is not tested: the mock's token
    endpoint takes only client_secret_basic and client_secret_post.)"""
    client_id, registered = provider.client()
    kept = secret_file(tmp_path, f"client-secret-{client_id}", secret or registered)
    web = {"oidc_discovery_url": provider.discovery, "client_id": client_id,
           "client_secret_file": str(kept), **web}
    app = create_app(web_config(tmp_path, **web))
    app.config["TESTING"] = True
    app.add_url_rule("/probe-token", "probe_token", generate_csrf)  # as a page's form would carry it
    return app.test_client()


def to_provider(client: FlaskClient, next_path: str = "/api/v1/whoami") -> str:
    """GET /login; the provider's authorization URL it redirects to."""
    got = client.get("/login", query_string={"next": next_path})
    assert got.status_code == 302, got.data
    return got.headers["Location"]


def consent(authorize_url: str, sub: str, action: str | None = None) -> str:
    """The user picks ``sub`` on the provider's page; the callback path and query it sends back."""
    form = {"sub": sub} | ({"action": action} if action else {})
    got = requests.post(authorize_url, data=form, allow_redirects=False, timeout=5)
    assert got.status_code == 302, got.text
    back = urlsplit(got.headers["Location"])
    assert back.path == "/auth/callback"
    return f"{back.path}?{back.query}"


def log_in(client: FlaskClient, sub: str) -> Any:
    return client.get(consent(to_provider(client), sub))


def whoami(client: FlaskClient) -> dict[str, Any] | None:
    got = client.get("/api/v1/whoami")
    return got.json if got.status_code == 200 else None


def logout(client: FlaskClient) -> Any:
    return client.post("/logout", data={"csrf_token": client.get("/probe-token").data.decode()})


def test_a_user_logs_in_with_pkce_and_lands_where_they_were_going(tmp_path: Path, provider: Provider) -> None:
    client = site(tmp_path, provider)
    sub = provider.user("u-alice-1", preferred_username="alice", email="alice@example.org")
    authorize = to_provider(client, "/jobs?page=2")
    asked = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(provider.url + "/oauth2/authorize")
    assert asked["response_type"] == ["code"] and asked["client_id"][0]
    assert asked["redirect_uri"] == ["http://localhost/auth/callback"]
    assert "openid" in asked["scope"][0].split() and asked["nonce"][0]
    assert asked["code_challenge_method"] == ["S256"]
    with client.session_transaction() as s:
        (kept,) = [v["data"] for k, v in s.items() if k.startswith("_state_oidc_")]
        s["planted"] = "by an attacker before the login"
    digest = hashlib.sha256(kept["code_verifier"].encode()).digest()
    assert asked["code_challenge"] == [base64.urlsafe_b64encode(digest).rstrip(b"=").decode()]
    assert kept["nonce"] == asked["nonce"][0]

    landed = client.get(consent(authorize, sub))
    assert landed.status_code == 302 and landed.headers["Location"] == "/jobs?page=2"
    assert whoami(client) == {"name": "alice", "admin": False}
    with client.session_transaction() as s:
        assert set(s) == {"viewer", "_permanent"}  # a fresh session: nothing planted survives
        assert s["viewer"]["name"] == "alice" and time.time() - s["viewer"]["at"] < 60


def test_an_admin_by_name(tmp_path: Path, provider: Provider) -> None:
    client = site(tmp_path, provider, admin_users=["root"])
    log_in(client, provider.user("u-root", preferred_username="root"))
    assert whoami(client) == {"name": "root", "admin": True}


def test_an_admin_by_group_claim(tmp_path: Path, provider: Provider) -> None:
    web = {"admin_claim": "groups", "admin_values": ["hpc-admins"]}
    admin, user = site(tmp_path, provider, **web), site(tmp_path, provider, **web)
    log_in(admin, provider.user("u-carol", preferred_username="carol", groups=["users", "hpc-admins"]))
    log_in(user, provider.user("u-dave", preferred_username="dave", groups=["users"]))
    assert whoami(admin) == {"name": "carol", "admin": True}
    assert whoami(user) == {"name": "dave", "admin": False}


def test_the_user_name_from_email_before_the_at(tmp_path: Path, provider: Provider) -> None:
    client = site(tmp_path, provider, username_claim="email", username_strip_domain=True)
    log_in(client, provider.user("u-erin", email="erin@example.org"))
    assert whoami(client) == {"name": "erin", "admin": False}


@pytest.mark.parametrize(("claims", "says"), [
    ({"email": "frank@example.org"}, b"did not say which cluster user"),
    ({"preferred_username": "frank smith"}, b"is not a cluster user name"),
])
def test_no_valid_user_name_no_login(tmp_path: Path, provider: Provider, claims: dict[str, str], says: bytes) -> None:
    client = site(tmp_path, provider)
    got = log_in(client, provider.user("u-frank", **claims))
    assert got.status_code == 403 and says in got.data
    assert whoami(client) is None


def test_a_forged_state_is_refused(tmp_path: Path, provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    client = site(tmp_path, provider)
    back = consent(to_provider(client), provider.user("u-gina", preferred_username="gina"))
    forged = back.replace("state=", "state=x")
    with caplog.at_level(logging.WARNING, logger="webserver"):
        got = client.get(forged)
    assert got.status_code == 400 and b"not the one this browser started" in got.data
    assert whoami(client) is None
    assert "login refused" in caplog.text


def test_a_replayed_code_is_refused(tmp_path: Path, provider: Provider) -> None:
    client = site(tmp_path, provider)
    sub = provider.user("u-hal", preferred_username="hal")
    back = consent(to_provider(client), sub)
    assert client.get(back).status_code == 302 and whoami(client)["name"] == "hal"
    assert logout(client).status_code == 200 and whoami(client) is None
    # Once more as it was: the state was used up with the first login.
    assert client.get(back).status_code == 400
    # The old code under a fresh login's state: the provider will not exchange it twice.
    fresh_state = parse_qs(urlsplit(to_provider(client)).query)["state"][0]
    old_code = parse_qs(urlsplit(back).query)["code"][0]
    got = client.get("/auth/callback", query_string={"code": old_code, "state": fresh_state})
    assert got.status_code == 403 and b"refused the login" in got.data
    assert whoami(client) is None


def test_an_id_token_with_another_nonce_is_refused(tmp_path: Path, provider: Provider) -> None:
    client = site(tmp_path, provider)
    authorize = to_provider(client)
    # The provider puts the nonce of this request into the ID token; the site expects the one it
    # keeps in the session. Changing the kept one is the same as an ID token replayed from
    # another login.
    with client.session_transaction() as s:
        (key,) = [k for k in s if k.startswith("_state_oidc_")]
        entry = s[key]
        entry["data"]["nonce"] = "not-the-nonce-the-provider-signed"
        s[key] = entry
    got = client.get(consent(authorize, provider.user("u-ivy", preferred_username="ivy")))
    assert got.status_code == 403 and b"identity token is not valid" in got.data
    assert whoami(client) is None


def test_access_denied_at_the_provider(tmp_path: Path, provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    client = site(tmp_path, provider)
    with caplog.at_level(logging.WARNING, logger="webserver"):
        got = client.get(consent(to_provider(client), "u-jo", action="deny"))
    assert got.status_code == 403 and b"access_denied" in got.data
    assert "access_denied" in caplog.text and whoami(client) is None


def test_logout_clears_the_session(tmp_path: Path, provider: Provider) -> None:
    client = site(tmp_path, provider)
    log_in(client, provider.user("u-kim", preferred_username="kim"))
    assert whoami(client)["name"] == "kim"
    assert client.get("/logout").status_code == 405 and whoami(client)["name"] == "kim"
    assert logout(client).status_code == 200
    assert whoami(client) is None
    with client.session_transaction() as s:
        assert "viewer" not in s


def test_a_wrong_client_secret_is_refused(tmp_path: Path, provider: Provider) -> None:
    client = site(tmp_path, provider, secret="not-the-secret")
    got = log_in(client, provider.user("u-max", preferred_username="max"))
    assert got.status_code == 403 and b"invalid_client" in got.data


def test_an_unreachable_provider_is_a_clear_502(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration"
    app = create_app(web_config(tmp_path, oidc_discovery_url=dead, client_id="x"))
    got = app.test_client().get("/login")
    assert got.status_code == 502 and b"cannot be reached" in got.data
