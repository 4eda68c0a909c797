"""The site's data layer: what a published generation says, per viewer, and new generations
picked up without a restart."""

from __future__ import annotations

import pytest
from web_helpers import ADVICE, build_site, republish

from webserver import data
from webserver.charts import downsample, job_charts
from webserver.data import DataError, JobQuery, PublishedSite


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build_site(tmp_path_factory.mktemp("web"))


@pytest.fixture
def published(site):
    p = PublishedSite(site.publish_dir)
    yield p
    p.close()


def test_each_user_sees_only_their_jobs_and_periods(published):
    g = published.current()
    alice = g.jobs("alice", JobQuery())
    assert {(r["cluster"], r["job_id"]) for r in alice.rows} == {
        ("alpha", 424201), ("alpha", 424202), ("alpha", 424203)}
    assert {r["user_name"] for r in g.jobs(None, JobQuery()).rows} == {"alice", "bob"}
    assert [p["user_name"] for p in g.periods("bob")] == ["bob"]
    assert g.job("alpha", 424201, "bob") is None and g.job("alpha", 424201, "alice") is not None
    assert g.job("alpha", 424201, None)["user_name"] == "alice"
    assert g.job_filters("bob")["rule"] and "gpu_no_process" not in g.job_filters("bob")["rule"]


def test_period_line_counts_jobs_core_hours_findings_and_idle_gpu_hours(published):
    (line,) = published.current().periods("alice")
    assert line["period_id"] == "2026-W47" and line["jobs"] == 3
    (bob,) = published.current().periods("bob")
    assert bob["core_hours"] == pytest.approx(4 + 4)  # two jobs of 4 cores × 1 h
    assert line["busy_core_hours"] < line["core_hours"]
    assert line["serious"] >= 1 and line["idle_gpu_hours"] > 0


def test_job_list_filters_sorts_and_pages(published):
    g = published.current()
    by_waste = g.jobs(None, JobQuery(sort="idle_core_hours"))
    wastes = [r["idle_core_hours"] for r in by_waste.rows]
    known = [w for w in wastes if w is not None]
    assert wastes == [*sorted(known, reverse=True), None] and by_waste.total == 5  # unknown last
    assert [r["job_id"] for r in g.jobs(None, JobQuery(state="OUT_OF_MEMORY")).rows] == [737302]
    assert [r["job_id"] for r in g.jobs(None, JobQuery(name="CRASH")).rows] == [424202]
    gpu = g.jobs(None, JobQuery(rule="gpu_no_process")).rows
    assert [r["job_id"] for r in gpu] == [424201] and gpu[0]["idle_gpu_hours"] == pytest.approx(4.0)
    assert g.jobs("alice", JobQuery(period="2026-W47")).total == 3
    assert g.jobs("alice", JobQuery(period="2026-W01")).total == 0
    page2 = g.jobs(None, JobQuery(page=2, page_size=3))
    assert page2.total == 5 and len(page2.rows) == 2 and page2.pages == 2


def test_idle_core_hours_are_reserved_less_used_never_negative(published):
    row = published.current().job("alpha", 424201, None)
    assert row["idle_core_hours"] == pytest.approx((3600 * 8 - 600) / 3600)
    assert row["cpu_efficiency"] == pytest.approx(600 / (3600 * 8))


def test_job_detail_has_series_per_node_and_step_steps_findings_processes(published):
    g = published.current()
    d = g.job_detail("alpha", 424201)
    assert set(d.cores) == {"n1 batch", "n2 batch"}
    assert set(d.gpu_util) == {"n1 GPU 0", "n1 GPU 1", "n2 GPU 0", "n2 GPU 1"}
    assert all(v == pytest.approx(1.0) for _, v in d.cores["n1 batch"][1:])
    assert d.steps[0]["step"] == "batch" and d.processes[0]["comm"] == "solver"
    assert {f["rule"] for f in d.findings} >= {"gpu_no_process"}
    keys = [c.key for c in job_charts(d, g.job("alpha", 424201, None))]
    assert {"cores-1", "memory-1", "gpu-util-1", "gpu-memory-1", "gpu-power-1", "io-1"} <= set(keys)
    assert all("<svg" in c.svg for c in job_charts(d, g.job("alpha", 424201, None)))
    advice = [f for f in g.job_detail("beta", 737301).findings if f["severity"] == "serious"]
    assert advice[0]["metrics"]["advice"] == ADVICE


def test_accounting_only_job_has_no_samples_and_no_charts(published):
    g = published.current()
    d = g.job_detail("alpha", 424202)
    assert not d.sampled and d.steps and job_charts(d, g.job("alpha", 424202, None)) == []


def test_a_sampled_job_not_in_accounting_yet_is_its_sessions_users(published):
    g = published.current()
    row = g.job("alpha", 424203, "alice")
    assert row is not None and not row["has_accounting"] and row["state"] == "RUNNING"
    assert row["ncpus"] == 4 and row["total_cpu_s"] is None and row["sessions"] == 1
    assert row["idle_core_hours"] is None  # unknown until accounting says its CPU time
    assert g.job("alpha", 424203, "bob") is None
    assert g.job_detail("alpha", 424203).cores


def test_letters_come_from_the_published_bundle(published):
    g = published.current()
    letter = g.letter("2026-W47", "alice")
    assert letter is not None and letter.user == "alice" and "<html" in letter.html.lower()
    assert g.letter("2026-W47", "nobody") is None and g.letter("../etc", "alice") is None
    assert "2026-W47" in g.letter_periods()


def test_a_new_generation_is_picked_up_without_a_restart(site, published):
    first = published.current()
    assert published.current() is first  # same generation: nothing reopened
    republish(site)
    second = published.current()
    assert second.number == first.number + 1 and second is not first
    assert second.jobs("alice", JobQuery()).total == 3


def test_the_generation_layout_is_the_publishers():
    from watcher.store import publish

    assert (data.SNAPSHOT, data.BUNDLES) == (publish.SNAPSHOT, publish.BUNDLES)


def test_nothing_published_is_a_data_error(tmp_path):
    with pytest.raises(DataError):
        PublishedSite(tmp_path).current()


def test_downsample_keeps_at_most_the_limit_and_the_mean():
    points = [(float(t), float(t % 2)) for t in range(10_000)]
    out = downsample(points, 100)
    assert len(out) <= 100 and sum(v for _, v in out) / len(out) == pytest.approx(0.5, abs=0.02)
    assert downsample([(0.0, None), (1.0, 2.0)]) == [(1.0, 2.0)]


def test_concurrent_readers_share_a_bounded_pool_of_cursors(published):
    from concurrent.futures import ThreadPoolExecutor

    g = published.current()
    with ThreadPoolExecutor(16) as pool:
        totals = list(pool.map(lambda i: g.jobs("alice" if i % 2 else "bob",
                                                JobQuery(name=f"x{i}" if i % 5 == 0 else None)).total,
                               range(200)))
    assert {t for i, t in enumerate(totals) if i % 5 and i % 2} == {3}
    assert {t for i, t in enumerate(totals) if i % 5 == 0} == {0}
    assert g._made <= data.POOL


def test_in_the_background_the_old_generation_answers_until_the_new_one_is_open(site):
    import time

    p = PublishedSite(site.publish_dir, background=True)
    try:
        first = p.current()  # nothing open yet: opened before it returns
        republish(site)
        assert p.current() is first  # the new one is being opened meanwhile
        deadline = time.monotonic() + 30
        while p.current() is first:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert p.current().number == first.number + 1
    finally:
        p.close()
