"""The pages and the API, as a user sees them (logged in by the trusted header)."""

from __future__ import annotations

import re
import shutil
import time

import pytest
from test_publish import T0, add_job
from web_helpers import ADVICE, HOSTILE_NAME, build_site, republish

from watcher.store import Store
from webserver import create_app


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build_site(tmp_path_factory.mktemp("pages"))


@pytest.fixture(scope="module")
def app(site):
    app = create_app(site.config)
    app.config["TESTING"] = True
    return app


def page(app, path: str, who: str = "alice", status: int = 200) -> str:
    r = app.test_client().get(path, headers={"X-Remote-User": who})
    assert r.status_code == status, (path, r.status_code, r.get_data(as_text=True)[:500])
    return r.get_data(as_text=True)


def api(app, path: str, who: str = "alice", status: int = 200) -> dict:
    r = app.test_client().get(path, headers={"X-Remote-User": who})
    assert r.status_code == status and r.is_json, (path, r.status_code)
    return r.get_json()


def test_home_has_a_line_per_period_latest_jobs_and_a_tip(app):
    body = page(app, "/")
    assert "2026-W47" in body and "Core-hours used of reserved" in body
    assert "424201" in body and "424202" in body and "Tip:" in body
    assert 'action="/logout"' in body and 'name="csrf_token"' in body


def test_pages_carry_no_inline_script_or_style(app):
    for path in ("/", "/jobs", "/jobs/alpha/424201", "/letters", "/letters/2026-W47"):
        body = page(app, path)
        assert "<script" not in body and not re.search(r"\sstyle=", body), path
    assert "<script" not in page(app, "/admin", "carol")


def test_job_list_filters_sorts_pages_and_its_json(app):
    body = page(app, "/jobs?state=FAILED")
    assert "424202" in body and "424201" not in body
    assert "1 job" in body
    listed = api(app, "/api/v1/jobs?sort=idle_core_hours", "carol")
    waste = [j["idle_core_hours"] for j in listed["jobs"]]
    known = [w for w in waste if w is not None]
    assert listed["total"] == 5 and waste == [*sorted(known, reverse=True), None]
    assert [j["job_id"] for j in api(app, "/api/v1/jobs?name=crash")["jobs"]] == [424202]
    assert api(app, "/api/v1/jobs?rule=gpu_no_process")["total"] == 1
    two = api(app, "/api/v1/jobs?page=2&sort=recent", "carol")
    assert two["page"] == 2 and two["jobs"] == []  # 4 jobs, 50 a page
    assert api(app, "/api/v1/jobs?page=x", status=400)


def test_the_job_page_says_requested_against_used_findings_and_fixes(app):
    body = page(app, "/jobs/alpha/424201")
    assert "Requested and used" in body and "busy of 8" in body
    assert body.count("<svg") >= 6 and 'id="chart-cores-1"' in body and "n2 batch" in body
    assert "GPU utilization" in body and "Top processes" in body and "solver" in body
    assert "Cause:" in body and "Fix:" in body
    bob = page(app, "/jobs/beta/737301", "bob")
    assert ADVICE["sentence"] in bob and f"<code>{ADVICE['request']}</code>" in bob


def test_a_job_with_accounting_only_says_so_and_how_it_ended(app):
    body = page(app, "/jobs/alpha/424202")
    assert "Only Slurm's accounting data" in body and "<svg" not in body
    assert "SIGSEGV" in body and "state-bad" in body
    oom = page(app, "/jobs/beta/737302", "bob")
    assert "OUT_OF_MEMORY" in oom and "state-bad" in oom


def test_a_job_not_in_accounting_yet_says_so_and_shows_its_samples(app):
    body = page(app, "/jobs/alpha/424203")
    assert "not in Slurm's accounting yet" in body and "RUNNING" in body and "<svg" in body


def test_the_job_json_has_the_series_and_findings(app):
    got = api(app, "/api/v1/jobs/alpha/424201")
    assert got["sampled"] and set(got["series"]["cores"]) == {"n1 batch", "n2 batch"}
    assert len(got["series"]["gpu_util_pct"]) == 4 and got["findings"]
    assert got["page"] == "/jobs/alpha/424201"
    assert api(app, "/api/v1/jobs/alpha/424202")["sampled"] is False
    assert api(app, "/api/v1/jobs/alpha/999", status=404)["error"]


def test_the_letter_is_framed_sandboxed_with_site_links(app):
    body = page(app, "/letters/2026-W47")
    frame = re.search(r"<iframe[^>]*>", body).group(0)
    assert 'sandbox="' in frame and "allow-scripts" not in frame
    r = app.test_client().get("/letters/2026-W47/alice/letter.html",
                              headers={"X-Remote-User": "alice"})
    html = r.get_data(as_text=True)
    assert "frame-ancestors 'self'" in r.headers["Content-Security-Policy"]
    assert "script-src" not in r.headers["Content-Security-Policy"]  # default-src 'none'
    assert 'href="/jobs/alpha/424201" target="_top"' in html
    assert "https://tw.example" not in html and "cid:" not in html
    image = re.search(r'src="(/letters/2026-W47/alice/images/[^"]+)"', html).group(1)
    r = app.test_client().get(image, headers={"X-Remote-User": "alice"})
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data[:4] == b"\x89PNG"
    assert api(app, "/api/v1/letters/2026-W47")["subject"]
    page(app, "/letters/2026-W01", status=404)


def test_the_admin_page_and_any_users_pages(app):
    body = page(app, "/admin", "carol")
    for part in ("Data freshness", "Cluster utilization", "Top wasters", "Findings per rule",
                 "Findings per user", "Ingest lag"):
        assert part in body
    assert "<svg" in body and "gpu_no_process" in body
    assert "737301" in page(app, "/jobs?user=bob", "carol")
    assert "424201" not in page(app, "/jobs?user=bob", "carol")
    page(app, "/admin", "alice", status=403)
    assert api(app, "/api/v1/admin", "carol")["top_wasters"]


def test_a_new_publication_shows_without_a_restart(site, app):
    assert "424299" not in page(app, "/jobs")
    with Store(site.store_path) as store:
        add_job(store, "alpha", 424299, start=T0)
    republish(site)
    # The new generation opens in the background; pages come from the old one meanwhile.
    deadline = time.monotonic() + 30
    while "424299" not in page(app, "/jobs"):
        assert time.monotonic() < deadline, "the new publication never showed"
        time.sleep(0.05)


def test_nothing_published_yet_is_a_503(tmp_path, site):
    from web_helpers import site_config

    config = site_config(tmp_path)
    app = create_app(config)
    assert "Nothing has been published" in page(app, "/", status=503)
    shutil.rmtree(tmp_path / "published", ignore_errors=True)


def test_the_static_files_are_served(app):
    r = app.test_client().get("/static/site.css")
    assert r.status_code == 200 and b"prefers-color-scheme: dark" in r.data
    assert app.test_client().get("/static/favicon.svg").status_code == 200


@pytest.mark.parametrize(("path", "status"), [
    ("/jobs/alpha/99999999999999999999999", 404), ("/jobs/alpha/-1", 404),
    ("/jobs/a%2Fb/1", 404), ("/jobs?page=999999999999999999999", 200),
    ("/jobs?sort=1;DROP TABLE jobs", 200), ("/jobs?state=%27;--", 200),
    ("/letters/..%2F..%2Fetc", 404), ("/letters/2026-W47/alice/images/..%2Fx.png", 404),
    ("/letters/2026-W47?user=../../x", 404), ("/api/v1/jobs?period=nope", 200),
])
def test_hostile_requests_are_refused_or_empty_never_a_crash(app, path, status):
    page(app, path, status=status)


def test_a_hostile_job_name_is_text(app):
    for path in ("/jobs", "/jobs/beta/737302", "/"):
        body = page(app, path, "bob")
        assert HOSTILE_NAME not in body and "&lt;img src=x onerror=" in body, path
    assert api(app, "/api/v1/jobs?state=OUT_OF_MEMORY", "bob")["jobs"][0]["job_name"] == HOSTILE_NAME


def test_a_job_by_its_id_alone_goes_to_its_page(app):
    r = app.test_client().get("/jobs/424201", headers={"X-Remote-User": "alice"})
    assert r.status_code == 302 and r.headers["Location"] == "/jobs/alpha/424201"
    page(app, "/jobs/737301", "alice", status=404)  # bob's
    page(app, "/jobs/1", "alice", status=404)
    assert "Turing cluster" in page(app, "/letters/2026-W47/alice")
    page(app, "/letters/2026-W47/bob", "alice", status=404)


def test_an_array_task_by_the_id_slurm_shows_goes_to_its_page(app):
    for path in ("/jobs/beta/737300_2", "/jobs/737300_2"):
        r = app.test_client().get(path, headers={"X-Remote-User": "bob"})
        assert r.status_code == 302 and r.headers["Location"] == "/jobs/beta/737302", path
        page(app, path, "alice", status=404)
    assert "737300_2" in page(app, "/jobs/beta/737302", "bob")
