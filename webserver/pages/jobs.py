"""The viewer's jobs: filtered by period, state, finding and name, sorted by waste, paged."""

from __future__ import annotations

from flask import Blueprint, request

from webserver.auth import login_required
from webserver.data import SORTS
from webserver.pages.common import config, generation, job_query, page, rules, scope, viewer

bp = Blueprint("jobs", __name__)
SORT_LABELS = {"recent": "newest first", "idle_core_hours": "idle core-hours",
               "idle_gpu_hours": "idle GPU-hours"}


@bp.get("/jobs")
@login_required
def jobs() -> str:
    user = scope()
    g = generation()
    query = job_query(config().web.page_size)
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    return page(
        "Jobs", (viewer().is_admin, user, query), "web/jobs.html.j2", lambda: dict(
            user=user, page=g.jobs(user, query), query=query, filters=g.job_filters(user),
            sorts={k: SORT_LABELS[k] for k in SORTS}, rules=rules(), args=args),
    )
