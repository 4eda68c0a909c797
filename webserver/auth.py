"""Who is looking: the viewer of each request, and the login that says so.

Two ways to know the viewer, both off until configured (docs/web.md):

- **OpenID Connect** (``web.oidc_discovery_url``, ``web.client_id``): ``/login`` sends the
  browser to the provider (authorization code with PKCE S256, a state and a nonce, all kept
  in the signed session cookie by Authlib); ``/auth/callback`` exchanges the code, checks the
  ID token's signature, issuer, audience and nonce (``webserver.oidc``), and stores
  ``session["viewer"] = {"name", "admin", "at"}`` in a fresh session. The login lasts
  ``web.session_lifetime_s`` from ``at``, checked on every request.
- **A trusted header** (``web.trusted_header``, e.g. ``X-Remote-User``), for sites where Apache
  or nginx does the login: the header names the user, and is believed only from loopback or
  ``web.trusted_proxies``; the same header from anywhere else is refused with 403, because
  it is then either an attack or a proxy the configuration does not know.

A user name, whichever way it comes, must be a valid POSIX user name: it is what every page
filters the published data by.

``POST /logout`` (with the CSRF token) clears the session; ``GET /api/v1/whoami`` says who the
session is, for scripts and the pages' own checks.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from watcher.config import Config
from webserver.security import peer_address, trusted_peer

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

# POSIX portable user names (IEEE Std 1003.1, 3.437) as useradd takes them: not starting with
# '-', at most 32 characters (Linux's limit).
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Viewer:
    """The person behind a request: a cluster user name, and whether they see everyone."""

    name: str
    is_admin: bool


class LoginRefused(Exception):
    """A login that cannot go on: the message is shown to the user; ``code`` is the HTTP status."""

    def __init__(self, message: str, code: int = 403) -> None:
        super().__init__(message)
        self.code = code


def init_app(app: Flask, config: Config) -> None:
    """Register the login routes and the ``viewer`` every template sees."""
    from webserver import oidc

    if oidc.configured(config):
        oidc.init_app(app, config)
    app.register_blueprint(bp)

    @app.context_processor
    def _viewer() -> dict[str, Any]:
        return {"viewer": current_viewer()}


def _config() -> Config:
    return current_app.config["TURINGWATCH_CONFIG"]


# -- user names and admins ---------------------------------------------------------------------


def user_name(raw: Any, strip_domain: bool) -> str:
    """The cluster user name in a claim or header value, or LoginRefused saying why not."""
    if not isinstance(raw, str) or not raw:
        raise LoginRefused("the identity provider did not say which cluster user you are")
    name = raw.split("@", 1)[0] if strip_domain else raw
    if not _USER_NAME.fullmatch(name):
        raise LoginRefused(f"{name!r} is not a cluster user name; ask the site's admins to map "
                           "your login to your cluster account")
    return name


def is_admin_user(config: Config, name: str, claims: dict[str, Any] | None = None) -> bool:
    """An admin by name (``web.admin_users``) or by a group or role claim."""
    if name in config.web.admin_users:
        return True
    if claims is None or not config.web.admin_claim:
        return False
    values = claim(claims, config.web.admin_claim)
    if isinstance(values, str):
        values = values.split()  # some providers send roles as one space-separated string
    if not isinstance(values, list | tuple):
        return False
    return any(str(v) in config.web.admin_values for v in values)


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by name; a dotted name reaches into nested claims (Keycloak's realm_access.roles)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


# -- the viewer --------------------------------------------------------------------------------


def current_viewer() -> Viewer | None:
    """Who this request is from, or None when nobody is logged in (or the login expired).

    Cached per request. A trusted header from a peer that may not set it aborts with 403.
    """
    if "viewer" not in g:
        g.viewer = _find_viewer()
    return g.viewer


def _find_viewer() -> Viewer | None:
    config = _config()
    header = config.web.trusted_header
    if header and header in request.headers:
        if not trusted_peer(config, peer_address()):
            g.viewer = None  # the error page rendered next shows nobody, not this refusal again
            log.warning("refused %s from %s, which is not loopback nor in web.trusted_proxies",
                        header, peer_address())
            abort(403, description=f"{header} is accepted only from the site's proxy.")
        try:
            name = user_name(request.headers[header], config.web.username_strip_domain)
        except LoginRefused as exc:
            g.viewer = None
            abort(403, description=str(exc))
        return Viewer(name, is_admin_user(config, name))
    return session_viewer(config)


def session_viewer(config: Config) -> Viewer | None:
    stored = session.get("viewer")
    if not isinstance(stored, dict):
        return None
    at = stored.get("at")
    if not isinstance(at, int | float) or time.time() - at > config.web.session_lifetime_s:
        # Expired (or not ours): forget it all, so the next login starts a fresh session.
        session.clear()
        return None
    return Viewer(str(stored["name"]), bool(stored["admin"]))


def start_session(viewer: Viewer) -> None:
    """Log ``viewer`` in with a new session (nothing of the old one survives: no fixation)."""
    session.clear()
    session.permanent = True
    session["viewer"] = {"name": viewer.name, "admin": viewer.is_admin, "at": time.time()}
    g.viewer = viewer


def may_see(viewer: Viewer | None, user: str) -> bool:
    """Whether ``viewer`` may see what belongs to ``user``: an admin, or the user themself."""
    return viewer is not None and (viewer.is_admin or viewer.name == user)


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this site, else ``default``: no open redirects."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\t\\"):
        return default
    return target


# -- decorators --------------------------------------------------------------------------------


def login_required(view: F) -> F:
    """Only for a logged-in viewer: else a redirect to the login (a 401 JSON under /api/)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_viewer() is None:
            return _login_needed()
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def admin_required(view: F) -> F:
    """Only for an admin: anyone else logged in gets 403."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        viewer = current_viewer()
        if viewer is None:
            return _login_needed()
        if not viewer.is_admin:
            abort(403, description="This page is for the site's admins.")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _login_needed() -> Response:
    if request.path.startswith("/api/"):
        response = jsonify(error="Unauthorized", message="log in first: /login")
        response.status_code = 401
        return response
    here = request.full_path if request.query_string else request.path
    return redirect(url_for("auth.login", next=here))


# -- routes ------------------------------------------------------------------------------------


@bp.get("/login")
def login() -> Any:
    from webserver import oidc

    next_path = local_path(request.args.get("next"))
    if current_viewer() is not None:
        return redirect(next_path)
    config = _config()
    if not oidc.configured(config):
        if config.web.trusted_header:
            abort(403, description=f"Your login comes from the site's proxy, which did not "
                                   f"pass {config.web.trusted_header}.")
        abort(404, description="This site has no login configured.")
    try:
        return oidc.begin(next_path)
    except LoginRefused as exc:
        return _refused(exc)


@bp.get("/auth/callback")
def callback() -> Any:
    from webserver import oidc

    if not oidc.configured(_config()):
        abort(404)
    try:
        viewer, next_path = oidc.finish(_config())
    except LoginRefused as exc:
        log.warning("login refused from %s: %s", peer_address(), exc)
        return _refused(exc)
    log.info("login: %s%s from %s", viewer.name, " (admin)" if viewer.is_admin else "", peer_address())
    start_session(viewer)
    return redirect(next_path)


def _refused(exc: LoginRefused) -> Any:
    """A failed login as the error page, with the way to start again."""
    text = str(exc)
    message = text[:1].upper() + text[1:] + ("" if text.endswith((".", ")")) else ".")
    return render_template("web/error.html.j2", code=exc.code, title="Login failed", message=message,
                           link=url_for("auth.login"), link_text="Log in again"), exc.code


@bp.post("/logout")
def logout() -> Any:
    viewer = current_viewer()
    by_header = bool(session_viewer(_config()) is None and viewer is not None)
    session.clear()
    g.viewer = None
    if viewer is not None:
        log.info("logout: %s", viewer.name)
    if by_header:
        # The proxy logs this browser in on every request; only the proxy can log it out.
        return render_template("web/error.html.j2", code=200, title="Logged in by the site's proxy",
                               message="Your login comes from the site's proxy: close the browser, "
                                       "or log out where you logged in.", link=None, link_text=None)
    return render_template("web/error.html.j2", code=200, title="Logged out",
                           message="You are logged out.", link=url_for("auth.login"),
                           link_text="Log in again")


@bp.get("/api/v1/whoami")
@login_required
def whoami() -> Any:
    viewer = current_viewer()
    assert viewer is not None  # login_required
    return jsonify(name=viewer.name, admin=viewer.is_admin)
