"""A period's letter, as mailed, inside the site.

The letter page frames ``letter.html``: the bundle's HTML with its ``cid:`` images pointed at
this site and its links to the web site (``site.web_url``…) rewritten to this site's paths,
opening in the whole window. The frame is sandboxed without scripts, and the framed document
has a CSP of its own, the only one on the site that allows inline styles (the letter's
``<style>`` block, kept for dark mode and narrow screens): nothing else may load in it.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, abort, render_template, url_for

from watcher.letters.bundle import letter_for_browser
from webserver.auth import login_required, may_see
from webserver.data import Generation
from webserver.pages.common import config, generation, scope, viewer

bp = Blueprint("letters", __name__)

LETTER_CSP = "; ".join([
    "default-src 'none'", "style-src 'unsafe-inline'", "img-src 'self'",
    "frame-ancestors 'self'", "base-uri 'none'", "form-action 'none'",
])
_LINK = re.compile(r'<a\s([^>]*?)href="([^"]*)"([^>]*)>', re.IGNORECASE)


def for_site(html: str, period: str, user: str) -> str:
    """The letter's HTML as this site serves it (see the module's docstring)."""
    html = letter_for_browser(html, lambda cid: url_for(
        "letters.image", period=period, user=user, cid=cid))
    web = config().site.web_url.rstrip("/")

    def link(m: re.Match[str]) -> str:
        before, href, after = m.group(1), m.group(2), m.group(3)
        if href.startswith("#"):
            return m.group(0)  # within the letter: stays in the frame
        if web and (href == web or href.startswith(web + "/")):
            local = href[len(web):] or "/"  # as escaped in the letter: left as it is
            return f"<a {before}href=\"{local}\" target=\"_top\"{after}>"
        return f'<a {before}href="{href}" target="_blank" rel="noopener noreferrer"{after}>'

    return _LINK.sub(link, html)


def _own_letter(period: str, user: str) -> tuple[Generation, Any]:
    if not may_see(viewer(), user):
        abort(404)
    g = generation()
    letter = g.letter(period, user)
    if letter is None:
        abort(404, description=f"No letter of {period} for you in what is published.")
    return g, letter


@bp.get("/letters")
@login_required
def index() -> str:
    user = scope()
    g = generation()
    have = g.letter_periods()
    periods = [p for p in g.periods(user) if p["period_id"] in have]
    return render_template("web/letters.html.j2", periods=periods, user=user)


@bp.get("/letters/<period>")
@login_required
def letter(period: str) -> str:
    user = scope() or viewer().name  # an admin without ?user= reads their own
    _g, found = _own_letter(period, user)
    return render_template("web/letter.html.j2", period=period, user=user, letter=found)


@bp.get("/letters/<period>/<user>")
@login_required
def letter_of(period: str, user: str) -> str:
    """The letter page by the user's name in the path (letters.url with {user})."""
    _g, found = _own_letter(period, user)
    return render_template("web/letter.html.j2", period=period, user=user, letter=found)


@bp.get("/letters/<period>/<user>/letter.html")
@login_required
def letter_html(period: str, user: str) -> Response:
    _g, found = _own_letter(period, user)
    response = Response(for_site(found.html, period, user), mimetype="text/html")
    response.headers["Content-Security-Policy"] = LETTER_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@bp.get("/letters/<period>/<user>/images/<cid>.png")
@login_required
def image(period: str, user: str, cid: str) -> Response:
    _g, found = _own_letter(period, user)
    data = found.images.get(cid)
    if data is None:
        abort(404)
    return Response(data, mimetype="image/png")
