"""``turingwatch web``: serve the reporting site with waitress until SIGTERM.

Waitress because it is pure Python and threaded, with nothing to compile on the web host; it
speaks plain HTTP, so TLS is the reverse proxy's (docs/web.md). The checks of
``webserver.check_serving`` run first: a site without a session key or a login method, or
with a trusted header anyone can send, does not start (one line, exit 1).
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import click

from watcher.cli import AppContext, pass_app

log = logging.getLogger(__name__)


@click.command()
@pass_app
def web(app: AppContext) -> None:
    """Serve the web site on web.listen in the foreground until SIGTERM (docs/web.md). Logs go
    to stderr (the journal under systemd)."""
    from waitress import create_server

    from webserver import check_serving, configured_oidc, create_app

    config = app.config
    check_serving(config)
    site = create_app(config)
    # The site's own records (logins, refusals, crashes) at the level the CLI chose for ours.
    logging.getLogger("webserver").setLevel(logging.getLogger("watcher").getEffectiveLevel())
    server = create_server(site, listen=config.web.listen, threads=config.web.threads, ident="turingwatch")

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        raise SystemExit(0)  # waitress's loop ends on it and shuts its threads down

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    login = "OpenID Connect" if configured_oidc(config) else f"the {config.web.trusted_header} header"
    log.info("web site on %s (login by %s, %d threads)", " ".join(_urls(server)), login, config.web.threads)
    server.run()
    log.info("web site stopped")


def _urls(server: object) -> list[str]:
    # One address: a TcpWSGIServer; several: a MultiSocketServer listing them.
    listen = getattr(server, "effective_listen", None) or [
        (server.effective_host, server.effective_port)]  # type: ignore[attr-defined]
    return [f"http://[{h}]:{p}" if ":" in str(h) else f"http://{h}:{p}" for h, p in listen]
