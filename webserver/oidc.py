"""The one wrapper around Authlib: an OpenID Connect login, from the redirect to a Viewer.

The flow (authorization code, RFC 6749 4.1, with PKCE S256, RFC 7636):

1. :func:`begin` makes a state, a nonce and a PKCE verifier, which Authlib keeps in the signed
   session cookie, and redirects to the provider's authorization endpoint (found through
   ``web.oidc_discovery_url``). The redirect URI is ``site.web_url`` + ``/auth/callback`` when
   the site's public URL is known, else this request's own URL.
2. :func:`finish`, at ``/auth/callback``: an ``error`` from the provider, a state the session
   does not hold (forged, or used already), a code the provider will not exchange (replayed,
   or the PKCE verifier does not match), or an ID token whose signature, issuer, audience or
   nonce is wrong ends the login with :class:`~webserver.auth.LoginRefused`. Authlib's
   ``authorize_access_token`` checks the nonce through ``parse_id_token`` only when the token
   answer holds an ID token, so a token answer without one is refused here: an access token
   alone says nothing about who logged in.
3. The user name is the claim ``web.username_claim`` (optionally cut at ``@``); when the ID
   token lacks it, or the admin claim, the provider's userinfo endpoint is asked once.

Nothing is kept of the tokens: the site asks the provider nothing after the login.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app, request, session, url_for
from joserfc.errors import JoseError
from werkzeug.wrappers import Response

from watcher.config import Config, ConfigError, read_secret
from webserver.auth import LoginRefused, Viewer, claim, is_admin_user, user_name

log = logging.getLogger(__name__)

CLIENT = "oidc"  # Authlib's name for the one provider (its session keys start _state_oidc_)
NEXT = "login_next"
TIMEOUT_S = 10  # each request to the provider; a hung provider must not hang a worker thread


def configured(config: Config) -> bool:
    from webserver import configured_oidc

    return configured_oidc(config)


def init_app(app: Flask, config: Config) -> None:
    if "openid" not in config.web.oidc_scopes.split():
        raise ConfigError(f"web.oidc_scopes: {config.web.oidc_scopes!r} lacks 'openid'; without "
                          "it the provider sends no ID token and the login cannot be checked")
    oauth = OAuth(app)
    oauth.register(
        CLIENT,
        client_id=config.web.client_id,
        # None: a public client, PKCE alone (Authlib then authenticates with "none").
        client_secret=read_secret(config.web, "client_secret_file"),
        server_metadata_url=config.web.oidc_discovery_url,
        client_kwargs={
            "scope": config.web.oidc_scopes,
            "code_challenge_method": "S256",
            "default_timeout": TIMEOUT_S,
        },
    )
    app.extensions["turingwatch_oidc"] = oauth


def _client() -> Any:
    return current_app.extensions["turingwatch_oidc"].create_client(CLIENT)


def redirect_uri(config: Config) -> str:
    if config.site.web_url:
        return config.site.web_url.rstrip("/") + "/auth/callback"
    return url_for("auth.callback", _external=True)


def begin(next_path: str) -> Response:
    """The redirect to the provider's login page."""
    config: Config = current_app.config["TURINGWATCH_CONFIG"]
    session[NEXT] = next_path
    try:
        return _client().authorize_redirect(redirect_uri(config))
    except (requests.RequestException, ValueError, KeyError) as exc:
        log.error("cannot read the OIDC provider's metadata at %s: %s",
                  config.web.oidc_discovery_url, exc)
        raise LoginRefused("the identity provider cannot be reached; try again later", 502) from None


def finish(config: Config) -> tuple[Viewer, str]:
    """The viewer the provider vouches for at /auth/callback, and where they were going."""
    error = request.args.get("error")
    if error:
        detail = request.args.get("error_description") or ""
        raise LoginRefused(f"the identity provider ended the login: {error}"
                           + (f" ({detail[:200]})" if detail else ""), 403)
    next_path = session.pop(NEXT, "/")
    client = _client()
    try:
        token = client.authorize_access_token()
    except MismatchingStateError:
        raise LoginRefused("this login link is not the one this browser started (or was used "
                           "already); log in again", 400) from None
    except OAuthError as exc:
        raise LoginRefused(f"the identity provider refused the login: {exc.error}", 403) from None
    except (AuthlibBaseError, JoseError) as exc:
        raise LoginRefused(f"the identity token is not valid: {exc}", 403) from None
    except requests.RequestException as exc:
        log.error("the OIDC provider's token endpoint failed: %s", exc)
        raise LoginRefused("the identity provider cannot be reached; try again later", 502) from None
    claims = token.get("userinfo")
    if not claims:
        raise LoginRefused("the identity provider sent no ID token", 403)
    claims = dict(claims)
    wanted = [config.web.username_claim] + ([config.web.admin_claim] if config.web.admin_claim else [])
    if any(claim(claims, name) is None for name in wanted):
        claims = {**_userinfo(client, token), **claims}  # the signed ID token wins
    name = user_name(claim(claims, config.web.username_claim), config.web.username_strip_domain)
    return Viewer(name, is_admin_user(config, name, claims)), next_path


def _userinfo(client: Any, token: dict[str, Any]) -> dict[str, Any]:
    if not client.load_server_metadata().get("userinfo_endpoint"):
        return {}
    try:
        return dict(client.userinfo(token=token))
    except (requests.RequestException, AuthlibBaseError, ValueError) as exc:
        log.warning("the OIDC provider's userinfo endpoint failed: %s", exc)
        return {}
