"""The reporting web site: a Flask app that shows each user their jobs, letters and advice.

``create_app(config)`` is the one way to build it (``turingwatch web``, ``webserver.wsgi`` for
gunicorn, the tests). The contract the page modules code against (docs/web.md):

- ``app.config["TURINGWATCH_CONFIG"]`` holds the :class:`watcher.config.Config`;
- templates come from the project's one template directory (web pages under ``templates/web/``),
  with the filters of ``watcher.templating``, HTML autoescaped and undefined names an error;
- ``webserver/static/`` is served at ``/static/``;
- ``webserver.security`` sets the headers and CSRF protection, ``webserver.auth`` says who is
  looking (:func:`webserver.auth.current_viewer`), then every blueprint of
  ``webserver.pages.BLUEPRINTS`` is registered;
- errors are pages rendered with ``web/error.html.j2``, or JSON under ``/api/``.

The app holds no state of its own beyond the signed session cookie: what it shows is read from
what the server publishes, so any number of worker threads or processes may serve it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

import jinja2
from flask import Flask, Response, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

from watcher.config import Config, ConfigError, expand_path, load_config, read_secret
from watcher.errors import TuringwatchError
from watcher.templating import FILTERS, shipped_templates

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
ERROR_TEMPLATE = "web/error.html.j2"
LAYOUT = "web/base.html.j2"


class _Site(Flask):
    def select_jinja_autoescape(self, filename: str) -> bool:
        # The templates end in .j2, which Flask would not escape; the project's rule is that
        # everything is HTML but the plain-text letter (watcher.templating).
        return filename is None or not filename.endswith((".txt.j2", ".txt"))


class ServingRefused(TuringwatchError):
    """A configuration the site will not serve with (``turingwatch web`` exits 1 with it)."""


def check_serving(config: Config) -> None:
    """Refuse, before serving, what would make a site nobody can log in to, or one anybody can:
    no session key, no login method, a trusted header open to every address, no data to show."""
    try:
        key = read_secret(config.web, "secret_key_file")
        if configured_oidc(config):
            read_secret(config.web, "client_secret_file")
    except ConfigError as exc:
        raise ServingRefused(str(exc)) from None
    if key is None:
        raise ServingRefused("web.secret_key_file is not set: the site needs a private file holding "
                             "the key that signs its session cookies (docs/web.md)")
    web = config.web
    if (web.oidc_discovery_url or web.client_id) and not configured_oidc(config):
        missing = "web.client_id" if web.oidc_discovery_url else "web.oidc_discovery_url"
        raise ServingRefused(f"OpenID Connect is half configured: {missing} is not set")
    if not configured_oidc(config) and not web.trusted_header:
        raise ServingRefused("no login method: set web.oidc_discovery_url and web.client_id, or "
                             "web.trusted_header behind a proxy that logs users in (docs/web.md)")
    if web.trusted_header and not web.trusted_proxies and not listens_on_loopback(web.listen):
        raise ServingRefused(
            f"web.trusted_header ({web.trusted_header}) with web.listen = {web.listen!r}: anyone who "
            "reaches that address could name any user; listen on 127.0.0.1 behind the proxy, or "
            "name the proxy in web.trusted_proxies")
    for entry in web.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ServingRefused(f"web.trusted_proxies: {entry!r} is not an address or network "
                                 "(like 10.0.0.5 or 10.0.0.0/24)") from None
    published = expand_path(config.server.publish_dir)
    if not published.is_dir() or not os.access(published, os.R_OK | os.X_OK):
        raise ServingRefused(f"server.publish_dir: {published} is not a directory this user can read "
                             "(the site shows only what the server publishes there)")


def configured_oidc(config: Config) -> bool:
    return bool(config.web.oidc_discovery_url and config.web.client_id)


def listens_on_loopback(listen: str) -> bool:
    """Whether every address of ``web.listen`` ("host:port", space-separated) is loopback."""
    for entry in listen.split():
        host = entry.rpartition(":")[0].strip("[]")
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False  # a name, "" or "*": it may be any address
    return True


def create_app(config: Config | None = None) -> Flask:
    """The web site over ``config`` (None: loaded as the CLI does, from $TURINGWATCH_CONFIG).

    Raises ConfigError when there is no session key (``web.secret_key_file``): without one
    every login would be forgeable or lost at each restart.
    """
    from webserver import auth, security
    from webserver.pages import BLUEPRINTS

    config = load_config() if config is None else config
    secret = read_secret(config.web, "secret_key_file")
    if secret is None:
        raise ConfigError("web.secret_key_file is not set: the web site needs a private file "
                          "holding the key that signs session cookies (docs/web.md)")
    if len(secret) < 16:
        raise ConfigError("web.secret_key_file: the key is shorter than 16 characters; "
                          "make one with: head -c 32 /dev/urandom | base64")

    app = _Site(
        __name__,
        template_folder=str(shipped_templates()),
        static_folder=str(STATIC_DIR),
        static_url_path="/static",
    )
    app.config["TURINGWATCH_CONFIG"] = config
    app.secret_key = secret
    app.jinja_env.undefined = jinja2.StrictUndefined
    app.jinja_env.filters.update(FILTERS)

    # web/error.html.j2 extends the site's layout once there is one, else stands alone.
    layout = LAYOUT if (shipped_templates() / LAYOUT).is_file() else None
    app.context_processor(lambda: {"layout": layout})

    security.init_app(app, config)
    auth.init_app(app, config)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    _error_handlers(app)
    return app


def _error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        if code < 400:  # routing's redirects (a missing slash) are HTTPExceptions too
            return exc
        body, code = error_response(code, exc.name, exc.description or "")
        response = make_response(body, code)
        if "Allow" in exc.get_response().headers:  # 405 says what is allowed
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def crash(exc: Exception) -> tuple[Response | str, int]:
        # A bug: logged with its traceback, shown as a plain 500 (no details to the browser).
        log.exception("%s %s failed", request.method, request.path)
        error = InternalServerError()
        return error_response(500, error.name, "Something went wrong on our side; it has been logged.")


def error_response(code: int, title: str, message: str) -> tuple[Response | str, int]:
    """An error as JSON under /api/, else as the error page."""
    if request.path.startswith("/api/"):
        return jsonify(error=title, message=message), code
    return render_template(ERROR_TEMPLATE, code=code, title=title,
                           message=message, link=None, link_text=None), code
