"""The period bundle: what is in it, that it is replaced whole, and that it reads back."""

from __future__ import annotations

import json
import tarfile

import pytest

from watcher.analysis.model import to_json
from watcher.analysis.periods import parse_period
from watcher.analysis.rules import load_rules
from watcher.config import load_config
from watcher.letters import render_letter
from watcher.letters.bundle import (
    BundleError,
    bundle_path,
    letter_for_browser,
    open_bundle,
    write_bundle,
)
from watcher.letters.sample import sample_report
from watcher.letters.waste import standings

PERIOD = parse_period("2026-W46", "week", "UTC")


@pytest.fixture
def config(tmp_path):
    return load_config(None, environ={
        "TURINGWATCH_ANALYSIS_RESULT_DIR": str(tmp_path / "analysis_result"),
        "TURINGWATCH_SITE_NAME": "Turing cluster",
    })


@pytest.fixture
def reports():
    return [sample_report(user, jobs=6, period=PERIOD) for user in ("bob", "alice", "carol")]


def members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_bundle_holds_letters_images_and_numbers(config, reports):
    path = write_bundle(config, PERIOD, reports)
    assert path == bundle_path(config, "2026-W46")
    assert path.name == "2026-W46.tar.gz"
    files = members(path)
    names = list(files)
    assert names[0] == "2026-W46/manifest.json"
    manifest = json.loads(files[names[0]])
    assert manifest["format"] == 1
    assert manifest["period"]["id"] == "2026-W46"
    assert [u["user"] for u in manifest["users"]] == ["alice", "bob", "carol"]
    alice = next(r for r in reports if r.user == "alice")
    summary = manifest["users"][0]
    assert summary["jobs"] == 6
    assert summary["problems"] == len({f.rule for f in alice.findings})
    assert sum(summary["findings"].values()) == len(alice.findings)

    report = json.loads(files["2026-W46/users/alice/report.json"])
    assert report == json.loads(json.dumps(to_json(alice)))   # the model's documented form
    assert report["user"] == "alice"
    assert len(report["findings"]) == len(alice.findings)
    assert report["findings"][0]["rule"] == alice.findings[0].rule
    assert report["totals"]["core_hours"] == alice.totals["core_hours"]
    assert report["jobs"][0]["start_time"] == alice.jobs[0]["start_time"].isoformat()
    assert [s["id"] for s in report["sections"]] == ["resources", "gpu", "system"]

    meta = json.loads(files["2026-W46/users/alice/letter.json"])
    assert meta["subject"].endswith("2026-W46")
    for cid in meta["images"]:
        png = files[f"2026-W46/users/alice/images/{cid}.png"]
        assert png.startswith(b"\x89PNG")
        assert f"cid:{cid}".encode() in files["2026-W46/users/alice/letter.html"]
    assert b"IN SHORT" in files["2026-W46/users/alice/letter.txt"]


def test_letters_read_back_as_rendered(config, reports):
    rules = {r.id: r for r in load_rules(config).rules}
    path = write_bundle(config, PERIOD, reports, rules=rules)
    bundle = open_bundle(path)
    assert bundle.period_id == "2026-W46"
    letters = list(bundle.letters())
    assert [letter.user for letter in letters] == ["alice", "bob", "carol"]
    # The bundle's letter is the one render_letter makes, with the user's rank among them all.
    direct = render_letter(next(r for r in reports if r.user == "bob"), rules, config,
                           standings(reports)["bob"])
    assert letters[1] == direct
    assert "Of the 3 users of this week, your jobs left the most core-hours idle." in " ".join(letters[1].text.split())
    assert [letter.user for letter in bundle.letters(["carol"])] == ["carol"]


def test_rerun_replaces_the_bundle_and_leaves_no_temp_file(config, reports):
    first = write_bundle(config, PERIOD, reports)
    second = write_bundle(config, PERIOD, reports[:1])
    assert first == second
    assert open_bundle(second).users == ["bob"]
    assert [p.name for p in second.parent.iterdir()] == ["2026-W46.tar.gz"]


def test_a_failed_write_keeps_the_old_bundle(config, reports):
    path = write_bundle(config, PERIOD, reports)
    before = path.read_bytes()
    broken = load_config(None, environ={
        "TURINGWATCH_ANALYSIS_RESULT_DIR": config.analysis.result_dir,
        "TURINGWATCH_LETTERS_SUBJECT": "{nonsense}",
    })
    with pytest.raises(Exception, match="nonsense"):
        write_bundle(broken, PERIOD, reports)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["2026-W46.tar.gz"]


def test_user_names_that_are_not_file_names_get_a_safe_member_name(config):
    path = write_bundle(config, PERIOD, [sample_report("../etc", jobs=1, period=PERIOD)])
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert "2026-W46/users/~%2E%2E%2Fetc/letter.json" in names
    assert not any(".." in n.split("/") for n in names)
    assert [letter.user for letter in open_bundle(path).letters()] == ["../etc"]


def test_a_foreign_archive_is_not_a_bundle(tmp_path):
    path = tmp_path / "x.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(__file__, arcname="readme.txt")
    with pytest.raises(BundleError, match="not a turingwatch bundle"):
        open_bundle(path)
    with pytest.raises(BundleError, match="no bundle"):
        open_bundle(tmp_path / "missing.tar.gz")


def test_web_version_points_images_at_files():
    html = '<img src="cid:cores.2026-W46.alice@turingwatch" alt="x">'
    assert letter_for_browser(html, lambda cid: f"images/{cid}.png") == (
        '<img src="images/cores.2026-W46.alice@turingwatch.png" alt="x">'
    )
