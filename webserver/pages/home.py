"""The home page: the viewer's periods, one line each, their latest jobs, and a tip."""

from __future__ import annotations

from flask import Blueprint

from watcher.jobstate import end_state
from webserver.auth import login_required
from webserver.pages.common import generation, page, scope, tip, viewer

bp = Blueprint("home", __name__)
PERIOD_LINES = 60  # an admin's home lists every user's periods: the newest ones


# How a job ended, said as everywhere else (watcher/jobstate.py): a global, so that macros
# imported without the page's context see it too.
bp.add_app_template_global(end_state, "end_state")


@bp.get("/")
@login_required
def home() -> str:
    user = scope()
    g = generation()
    who = viewer()
    chosen = tip(who.name)
    return page(
        "Home", (who.name, who.is_admin, user, chosen.id if chosen else None),
        "web/home.html.j2", lambda: dict(
            user=user, periods=g.periods(user)[:PERIOD_LINES], jobs=g.latest_jobs(user, 10),
            tip=chosen, letters=g.letter_periods(), published_at=g.published_at),
    )
