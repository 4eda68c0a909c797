"""The admins' page: findings per rule and per user over periods, the top wasters, the
cluster's utilization per day, how fresh the data is, and a way into any user's pages."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, render_template

from webserver.auth import admin_required, login_required
from webserver.charts import utilization_chart
from webserver.pages.common import generation

bp = Blueprint("admin", __name__)


@bp.get("/admin")
@login_required
@admin_required
def admin() -> str:
    g = generation()
    fresh = g.admin("freshness")[0]
    published = g.published_at
    lag = (published - fresh["last_sample"]).total_seconds() if (
        published and fresh["last_sample"]) else None
    chart = g.cached(("utilization-chart",), lambda: utilization_chart(g.admin("utilization")))
    return render_template(
        "web/admin.html.j2", per_rule=g.admin("findings_per_rule"),
        per_user=g.admin("findings_per_user"), wasters=g.admin("top_wasters"),
        chart=chart, fresh=fresh, published_at=published, ingest_lag_s=lag,
        age_s=(datetime.now(UTC) - published).total_seconds() if published else None,
        users=[r["user_name"] for r in g.admin("users")], generation=g.number,
    )
