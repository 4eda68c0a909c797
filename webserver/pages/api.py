"""The JSON API under /api/v1: the pages' data, with the pages' authorization (webserver.auth
answers 401 JSON to a request without a login; a job or letter the viewer may not see is 404).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, url_for
from werkzeug.wrappers import Response

from webserver.auth import admin_required, login_required
from webserver.charts import downsample
from webserver.pages.common import config, generation, job_query, plain, scope, viewer
from webserver.pages.job import load
from webserver.pages.letters import _own_letter

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _series(by_label: dict[str, list[tuple[float, Any]]]) -> dict[str, list[list[float]]]:
    return {label: [[t, v] for t, v in downsample(pts)] for label, pts in by_label.items()}


@bp.get("/periods")
@login_required
def periods() -> Response:
    user = scope()
    g = generation()
    return jsonify(generation=g.number, periods=plain(g.periods(user)))


@bp.get("/jobs")
@login_required
def jobs() -> Response:
    user = scope()
    g = generation()
    page = g.jobs(user, job_query(config().web.page_size))
    return jsonify(generation=g.number, total=page.total, page=page.query.page,
                   pages=page.pages, jobs=plain(page.rows))


@bp.get("/jobs/<cluster>/<int:job_id>")
@login_required
def job(cluster: str, job_id: int) -> Response:
    g, row, detail = load(cluster, job_id)
    return jsonify(
        generation=g.number, job=plain(row), sampled=detail.sampled,
        steps=plain(detail.steps), findings=plain(detail.findings),
        processes=plain(detail.processes), sessions=plain(detail.sessions),
        series={"cores": _series(detail.cores), "memory_bytes": _series(detail.memory),
                "io_bytes_per_s": _series(detail.io), "gpu_util_pct": _series(detail.gpu_util),
                "gpu_memory_bytes": _series(detail.gpu_memory),
                "gpu_power_w": _series(detail.gpu_power)},
        page=url_for("job.job", cluster=cluster, job_id=job_id),
    )


@bp.get("/letters/<period>")
@login_required
def letter(period: str) -> Response:
    user = scope() or viewer().name  # as the letter page: an admin's own, or ?user=
    _g, found = _own_letter(period, user)
    return jsonify(user=found.user, period=found.period, subject=found.subject,
                   problems=found.problems, text=found.text,
                   html=url_for("letters.letter_html", period=period, user=user),
                   page=url_for("letters.letter", period=period, user=user))


@bp.get("/admin")
@login_required
@admin_required
def admin() -> Response:
    g = generation()
    return jsonify(generation=g.number, published_at=plain(g.published_at),
                   **{name: plain(g.admin(name)) for name in (
                       "findings_per_rule", "findings_per_user", "top_wasters", "utilization",
                       "freshness")})
