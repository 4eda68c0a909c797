"""The home page: the viewer's periods, one line each, their latest jobs, and a tip."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from watcher.jobstate import end_state
from webserver.auth import login_required
from webserver.pages.common import generation, scope, tip, viewer

bp = Blueprint("home", __name__)
PERIOD_LINES = 60  # an admin's home lists every user's periods: the newest ones


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    # How a job ended, said as everywhere else (watcher/jobstate.py), in every page.
    return {"end_state": end_state}


@bp.get("/")
@login_required
def home() -> str:
    user = scope()
    g = generation()
    return render_template(
        "web/home.html.j2", user=user, periods=g.periods(user)[:PERIOD_LINES],
        jobs=g.latest_jobs(user, 10), tip=tip(viewer().name), letters=g.letter_periods(),
        published_at=g.published_at,
    )
