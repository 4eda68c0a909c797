"""Each user sees only their own letters, jobs and samples, on every route the app has.

The routes are read from app.url_map, so a route added later is tested without anyone
remembering to: a route whose arguments this test cannot fill fails the test.
"""

from __future__ import annotations

import re

import pytest
from web_helpers import ALICE_JOBS, BOB_JOBS, BOB_RAW_IDS, build_site

from webserver import create_app

# What each user owns, to fill a route's arguments with.
OWNED = {
    "alice": {"cluster": "alpha", "job_id": int(ALICE_JOBS[0]), "period": "2026-W47",
              "user": "alice", "cid": "cores.2026-W47.alice@turingwatch", "display": "424202"},
    "bob": {"cluster": "beta", "job_id": int(BOB_JOBS[0]), "period": "2026-W47",
            "user": "bob", "cid": "cores.2026-W47.bob@turingwatch", "display": "737300_2"},
}
# Routes that show nobody's data: the login flow and static files.
NOT_DATA = {"static", "auth.login", "auth.callback", "auth.logout", "auth.whoami"}
ADMIN_ONLY = {"admin.admin", "api.admin"}


def traces(user: str) -> list[re.Pattern[str]]:
    """What in a response body would give ``user``'s data away."""
    jobs = ALICE_JOBS if user == "alice" else (*BOB_JOBS, *BOB_RAW_IDS)
    cluster = OWNED[user]["cluster"]
    return [re.compile(rf"\b{user}\b"), re.compile(rf"\b{cluster}\b"),
            *(re.compile(rf"\b{j}\b") for j in jobs)]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    site = build_site(tmp_path_factory.mktemp("iso"))
    app = create_app(site.config)
    app.config["TESTING"] = True
    return app


def data_routes(app) -> list[tuple[str, str, set[str]]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in NOT_DATA or "GET" not in (rule.methods or ()):
            continue
        routes.append((rule.endpoint, rule.rule, set(rule.arguments)))
    return routes


def url(app, endpoint: str, owner: str, **query: str) -> str:
    from flask import url_for

    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint)
    unknown = set(rule.arguments) - set(OWNED[owner])
    assert not unknown, f"{rule.rule}: teach this test the arguments {unknown}"
    with app.test_request_context():
        values = {a: OWNED[owner][a] for a in rule.arguments}
        # ?user= on top, unless the path names the user itself
        values.update({k: v for k, v in query.items() if k not in values})
        return url_for(endpoint, **values)


def get(app, path: str, who: str):
    # Followed: a redirect (a job by its id alone) is judged by where it leads.
    return app.test_client().get(path, headers={"X-Remote-User": who}, follow_redirects=True)


def test_every_data_route_is_covered(app):
    endpoints = {e for e, _, _ in data_routes(app)}
    # The page families of the issue, each with a route here.
    assert {"home.home", "jobs.jobs", "job.job", "letters.letter", "letters.letter_html",
            "letters.image", "admin.admin", "api.jobs", "api.job", "api.periods",
            "api.letter", "api.admin"} <= endpoints


@pytest.mark.parametrize(("viewer", "other"), [("alice", "bob"), ("bob", "alice")])
def test_nothing_of_another_user_on_any_route(app, viewer, other):
    checked = 0
    for endpoint, rule, _args in data_routes(app):
        for path in (url(app, endpoint, other), url(app, endpoint, other, user=other),
                     url(app, endpoint, viewer, user=other)):
            r = get(app, path, viewer)
            body = r.get_data().decode("utf-8", "replace")  # an image is bytes
            if r.status_code == 200:
                leaks = [p.pattern for p in traces(other) if p.search(body)]
                assert not leaks, f"{viewer} GET {path} ({rule}): {other}'s {leaks} in the page"
            else:
                assert r.status_code in (403, 404), f"{viewer} GET {path}: {r.status_code}"
                assert not any(p.search(body) for p in traces(other)[2:]), path
            checked += 1
    assert checked >= 3 * 12


@pytest.mark.parametrize("viewer", ["alice", "bob"])
def test_each_user_reaches_their_own_pages(app, viewer):
    for endpoint, rule, _args in data_routes(app):
        r = get(app, url(app, endpoint, viewer), viewer)
        want = 403 if endpoint in ADMIN_ONLY else 200
        assert r.status_code == want, f"{viewer} GET {rule}: {r.status_code}"
        if want == 200 and "job_id" in rule:  # their own job, where the route names one
            assert str(OWNED[viewer]["job_id"]) in r.get_data(as_text=True)


def test_the_admin_sees_everyone(app):
    for owner in ("alice", "bob"):
        for endpoint, rule, _args in data_routes(app):
            r = get(app, url(app, endpoint, owner, user=owner), "carol")
            assert r.status_code == 200, f"carol GET {rule} of {owner}: {r.status_code}"
    body = get(app, "/jobs", "carol").get_data(as_text=True)
    assert all(j in body for j in (*ALICE_JOBS, *BOB_JOBS))


def test_nobody_logged_in_gets_nothing(app):
    for endpoint, rule, _args in data_routes(app):
        r = app.test_client().get(url(app, endpoint, "alice"))
        assert r.status_code in (302, 401), f"GET {rule}: {r.status_code}"
        if r.status_code == 302:  # to the login, which comes back to the page asked for
            assert r.headers["Location"].startswith("/login?next=")
        else:
            assert r.is_json and not any(p.search(r.get_data(as_text=True)) for p in traces("alice"))
