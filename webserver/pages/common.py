"""What every page module shares: the publication, whose data a request may show, the tip.

``scope()`` is the one place that turns the viewer into the ``user`` filter of webserver.data:
a user sees their own name's data whatever they ask for (``?user=`` of anyone else is a 404,
the same answer as for something that does not exist); an admin sees everyone, or one user
with ``?user=<name>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, abort, current_app, render_template, request

from watcher.analysis.model import RuleInfo, to_json
from watcher.analysis.rules import RuleError, load_rules
from watcher.config import Config
from webserver.auth import Viewer, current_viewer
from webserver.data import DataError, Generation, JobQuery, PublishedSite

EXTENSION = "turingwatch_published"
MAX_PAGE = 1_000_000


def config() -> Config:
    return current_app.config["TURINGWATCH_CONFIG"]


def published(app: Flask | None = None) -> PublishedSite:
    """The app's one reader of ``server.publish_dir``, made on first use."""
    app = app or current_app
    site = app.extensions.get(EXTENSION)
    if site is None:
        from watcher.config import expand_path

        site = app.extensions.setdefault(
            EXTENSION, PublishedSite(expand_path(app.config["TURINGWATCH_CONFIG"].server.publish_dir),
                                     background=True))
    return site


def generation() -> Generation:
    """The current generation, or 503 while nothing is published."""
    try:
        return published().current()
    except DataError as exc:
        current_app.logger.warning("%s", exc)
        abort(503, description="Nothing has been published yet: the site shows what the "
                               "turingwatch server publishes. Try again in a few minutes.")


def page(title: str, key: tuple[Any, ...], template: str,
         context: Callable[[], dict[str, Any]]) -> str:
    """The page: its body ``template`` rendered with ``context()`` once per generation and
    ``key`` (which must name everything the body depends on: scope, query, the viewer where it
    shows them), put in the layout, which is rendered for every request (the viewer's name,
    their CSRF token). ``context`` is called only when the body is not cached yet."""
    g = generation()
    body = g.cached(("page", template, *key),
                    lambda: render_template(template, **context()))
    return render_template("web/page.html.j2", title=title, content=body)


def viewer() -> Viewer:
    found = current_viewer()
    if found is None:  # login_required runs first; this is a programming error
        abort(401)
    return found


def scope() -> str | None:
    """The ``user`` filter of this request: the viewer's own name, or for an admin everyone
    (None) or the user named by ``?user=``."""
    who = viewer()
    asked = request.args.get("user") or None
    if who.is_admin:
        return asked
    if asked is not None and asked != who.name:
        abort(404)
    return who.name


def job_query(page_size: int) -> JobQuery:
    args = request.args
    try:
        page = int(args.get("page", "1"))
    except ValueError:
        abort(400, description="page must be a number")
    # Past the last page is an empty page; past any page DuckDB could count to, the same.
    page = min(max(1, page), MAX_PAGE)
    return JobQuery(period=args.get("period") or None, state=args.get("state") or None,
                    rule=args.get("rule") or None, name=args.get("name") or None,
                    sort=args.get("sort", "recent"), page=page, page_size=page_size)


def rules() -> dict[str, RuleInfo]:
    app = current_app
    found = app.extensions.get("turingwatch_rules")
    if found is None:
        try:
            found = {r.id: r for r in load_rules(config()).rules}
        except RuleError as exc:
            app.logger.warning("%s", exc)
            found = {}
        app.extensions["turingwatch_rules"] = found
    return found


def tip(who: str) -> RuleInfo | None:
    """A rule to explain today: the same one all day for a user, another one tomorrow."""
    enabled = sorted((r for r in rules().values() if r.enabled), key=lambda r: r.id)
    if not enabled:
        return None
    day = datetime.now(UTC).date().isoformat()
    digest = hashlib.sha256(f"{day}:{who}".encode()).digest()
    return enabled[int.from_bytes(digest[:4], "big") % len(enabled)]


def plain(value: Any) -> Any:
    """Rows for the API: datetimes as ISO text, the rest as it is."""
    return to_json(value)
