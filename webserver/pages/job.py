"""A job's page: requested against used, how it ended, each finding with its fix, its charts
per node and step, its steps and top processes; or, for a job with accounting data only,
what accounting says and that no samples were taken."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, redirect, url_for
from werkzeug.wrappers import Response

from webserver.auth import login_required
from webserver.charts import job_charts
from webserver.data import Generation, JobDetail
from webserver.pages.common import generation, page, rules, scope

bp = Blueprint("job", __name__)


def load(cluster: str, job_id: int) -> tuple[Generation, dict[str, Any], JobDetail]:
    """The job if the viewer may see it, else 404 (the same for a job that is not there)."""
    user = scope()
    g = generation()
    row = g.job(cluster, job_id, user)
    if row is None:
        abort(404, description="No such job among the jobs you may see.")
    return g, row, g.job_detail(cluster, job_id)


def glance(row: dict[str, Any], detail: JobDetail) -> dict[str, Any]:
    """Requested against used: cores, memory, GPUs, time."""
    elapsed = row["elapsed_s"] or 0
    peak = max((v for pts in detail.memory.values() for _, v in pts if v is not None),
               default=None)
    gpu_util = [v for pts in detail.gpu_util.values() for _, v in pts if v is not None]
    return {
        "cores_used": row["total_cpu_s"] / elapsed if row["total_cpu_s"] and elapsed else None,
        "memory_used": row["max_rss_bytes"] or peak,
        "gpu_util": sum(gpu_util) / len(gpu_util) if gpu_util else row["gpu_util_pct"],
    }


def grouped(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per rule, with every place it was found (each GPU, each node's step), so a
    job with eight idle GPUs reads one explanation, not eight; the first advice found wins."""
    by_rule: dict[str, dict[str, Any]] = {}
    for f in findings:  # already in severity order
        entry = by_rule.setdefault(f["rule"], {"rule": f["rule"], "severity": f["severity"],
                                               "places": [], "advice": None})
        where = " ".join(x for x in (
            f"step {f['step']}" if f["step"] else "", f"on {f['node']}" if f["node"] else "",
            str(f["gpu"]) if f["gpu"] else "") if x)
        if where:
            entry["places"].append(where)
        advice = f["metrics"].get("advice")
        if entry["advice"] is None and isinstance(advice, dict) and advice.get("sentence"):
            entry["advice"] = advice
    return list(by_rule.values())


@bp.get("/jobs/<int:job_id>")
@login_required
def by_id(job_id: int) -> Response:
    """A job by its id alone (site.job_url = '{web_url}/jobs/{job_id}', the settings' example):
    to its page when the viewer has one job of that id, else 404 (none, or one per cluster)."""
    clusters = generation().rows("job_clusters", job_id=job_id, user=scope())
    if len(clusters) != 1:
        abort(404, description="No such job among the jobs you may see"
              + (" (several clusters have one: use /jobs/<cluster>/<job id>)." if clusters else "."))
    return redirect(url_for("job.job", cluster=clusters[0]["cluster"], job_id=job_id))


@bp.get("/jobs/<display>", defaults={"cluster": None})
@bp.get("/jobs/<cluster>/<display>")
@login_required
def by_display(cluster: str | None, display: str) -> Response:
    """A job by the id Slurm shows (``123_4``): letters link jobs so (site.job_url's
    {job_id}); to its page when the viewer has exactly one such job, else 404."""
    found = generation().rows("job_by_display", display=display, cluster=cluster, user=scope())
    if len(found) != 1:
        abort(404, description="No such job among the jobs you may see.")
    return redirect(url_for("job.job", cluster=found[0]["cluster"], job_id=found[0]["job_id"]))


@bp.get("/jobs/<cluster>/<int:job_id>")
@login_required
def job(cluster: str, job_id: int) -> str:
    _g, row, detail = load(cluster, job_id)  # 404 unless the viewer may see it
    # The body shows the job only, whoever looks: one cached copy per generation and job.
    return page(f"Job {row['job_id_display']}", (cluster, job_id), "web/job.html.j2",
                lambda: dict(job=row, detail=detail, charts=job_charts(detail, row),
                             findings=grouped(detail.findings), rules=rules(),
                             glance=glance(row, detail)))
