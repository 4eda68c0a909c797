"""What every response of the web site carries, and what every request must bring.

- **Headers**, set with ``setdefault`` after each request (errors included), so a view may set
  its own Content-Security-Policy (the letter page frames the bundle's letter HTML under its
  own): a CSP that allows no inline script or style and no framing (``frame-ancestors
  'none'``), ``nosniff``, a same-origin referrer, no caching of pages (they show one user's
  data), and HSTS on requests that came over TLS.
- **CSRF**: Flask-WTF's ``CSRFProtect`` on every POST, PUT, PATCH and DELETE; forms carry
  ``{{ csrf_token() }}``. GET never changes anything (the pages' rule, docs/web.md).
- **The session cookie**: ``HttpOnly``, ``SameSite=Lax`` (the provider's redirect back to
  /auth/callback is a top-level GET, which Lax lets through), ``Secure`` unless the request is
  plain HTTP between loopback addresses (a developer's browser on the same machine) and
  ``site.web_url`` is not https, and
  lasting ``web.session_lifetime_s``.
- **A proxy in front**: ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are believed only from
  loopback and ``web.trusted_proxies``; from anyone else they are ignored, so a client cannot
  claim TLS (and HSTS, Secure cookies, https redirect URIs) it does not have.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_wtf.csrf import CSRFProtect

from watcher.config import Config

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "frame-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
HSTS = "max-age=31536000"
SESSION_COOKIE = "turingwatch_session"
PEER = "turingwatch.peer"  # the WSGI environ key of the TCP peer's address, before any proxy header

csrf = CSRFProtect()


def init_app(app: Flask, config: Config) -> None:
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,  # cookies ignore ports: not Flask's shared "session"
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=config.web.session_lifetime_s,
        # The login ends on its own clock (webserver.auth), not a sliding one: re-signing and
        # re-sending an unchanged cookie on every page would buy nothing and cost each request.
        SESSION_REFRESH_EACH_REQUEST=False,
        # A form left open as long as the login lasts still posts.
        WTF_CSRF_TIME_LIMIT=int(config.web.session_lifetime_s),
    )
    app.session_interface = _SessionInterface()
    csrf.init_app(app)
    app.wsgi_app = ForwardedFromTrusted(app.wsgi_app, config)  # type: ignore[method-assign]
    app.after_request(_headers)


def _headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


class _SessionInterface(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        # A site whose public URL is https is never plain HTTP to its users, whatever a proxy
        # that forgot X-Forwarded-Proto makes this request look like.
        public_https = app.config["TURINGWATCH_CONFIG"].site.web_url.startswith("https:")
        return public_https or request.is_secure or not plain_loopback()

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime:
        # Every cookie expires (Flask's default is a browser-session cookie unless marked
        # permanent); the login in it expires on its own clock too (webserver.auth).
        return datetime.now(UTC) + app.permanent_session_lifetime


def plain_loopback() -> bool:
    """Plain HTTP from a loopback peer to a loopback host name: development on one machine."""
    if request.is_secure or not _is_loopback(peer_address()):
        return False
    host = (request.host or "").rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or _is_loopback(host)


def peer_address() -> str | None:
    """The address of the TCP peer of this request (a proxy's, when there is one)."""
    return request.environ.get(PEER, request.remote_addr)


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def trusted_peer(config: Config, address: str | None) -> bool:
    """Whether ``address`` (the TCP peer) may speak for the user: loopback or a trusted proxy."""
    if _is_loopback(address):
        return True
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in config.web.trusted_proxies:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            log.warning("web.trusted_proxies: %r is not an address or network; ignored", entry)
    return False


class ForwardedFromTrusted:
    """Werkzeug's ProxyFix for Proto and Host, but only for requests from a trusted peer."""

    def __init__(self, app: Callable[..., Iterable[bytes]], config: Config) -> None:
        self.app = app
        self.config = config

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR")
        environ[PEER] = peer
        if trusted_peer(self.config, peer):
            proto = _last(environ.get("HTTP_X_FORWARDED_PROTO"))
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
            host = _last(environ.get("HTTP_X_FORWARDED_HOST"))
            if host:
                environ["HTTP_HOST"] = host
        return self.app(environ, start_response)


def _last(value: str | None) -> str | None:
    # One proxy: the value it appended is the last one (a client may have sent its own first).
    if not value:
        return None
    return value.split(",")[-1].strip() or None
