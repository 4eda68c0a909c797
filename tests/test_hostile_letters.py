"""Letters from hostile input: job names, command lines and user names that Slurm can hold.

A synthetic period has a well-behaved user and users whose names, and whose jobs' names and
command lines, are each kind of hostile text. Every letter is rendered with the names escaped
and shortened (charts, HTML, text, subject); one user's letter that cannot be built never
stops the others'; and no bundle member, written or read, can leave its directory.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import tarfile
import time
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from watcher.analysis.periods import parse_period
from watcher.analysis.rules import load_rules
from watcher.cli import cli
from watcher.config import load_config
from watcher.letters import render_letter
from watcher.letters.bundle import BundleError, bundle_path, open_bundle, write_bundle
from watcher.letters.charts import cores_chart, gpu_chart
from watcher.letters.message import build_message
from watcher.letters.sample import sample_report

# The helpers this file checks first are imported where they are used, so that every other
# test here runs (and fails for its own reason) on code that does not have them.

PERIOD = parse_period("2026-W46", "week", "UTC")

# Each kind of text a job name or a command line can hold in Slurm's accounting.
HOSTILE_NAMES = {
    "newline": "train\nrun.sh",
    "crlf header": "x\r\nBcc: everyone@example.org",
    "tab": "col1\tcol2",
    "controls": "\x1b[31mred\x07\x00\x7f\x9bend",
    "rtl": "\u202egnp.exe\u202c \u2067iso\u2069 \u200fmark\u200e \u061c",
    "separators": "one\u2028two\u2029three\x85four",
    "long": "x" * 10_000,
    "script": "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "jinja": "{{ 7 * 7 }} {% if true %}yes{% endif %} {user} {0} {{",
    "replacement": "caf\ufffd.dat",     # non-UTF-8, decoded with replacement
    "surrogate": "caf\udce9.dat",       # non-UTF-8, decoded with surrogateescape
    "empty": "",
}
# User names that are not file names: a space, a slash, a parent directory, a newline, …
HOSTILE_USERS = ["mal lory", "../x", "a/b", "..", "evil\nuser", "<b>bold</b>", "{user}",
                 "caf\udce9", "-rf", "~root"]
FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                       r"\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@pytest.fixture
def config(tmp_path):
    return load_config(None, environ={
        "TURINGWATCH_ANALYSIS_RESULT_DIR": str(tmp_path / "analysis_result"),
        "TURINGWATCH_SITE_NAME": "Turing cluster",
        "TURINGWATCH_SITE_WEB_URL": "https://hpc.example.org",
        "TURINGWATCH_SITE_JOB_URL": "{web_url}/jobs/{cluster}/{job_id}?u={user}",
        "TURINGWATCH_LETTERS_URL": "{web_url}/letters/{period}/{user}",
        "TURINGWATCH_LETTERS_SUBJECT": "{site}: {user}, your summary for {period}",
        # Every job's row in the letter: each hostile name is shown somewhere.
        "TURINGWATCH_LETTERS_MAX_ROWS": "1000",
    })


@pytest.fixture
def rules(config):
    return {r.id: r for r in load_rules(config).rules}


def hostile_report(user: str, names: dict[str, str] = HOSTILE_NAMES):
    """A sample report whose jobs carry the hostile names, in every place a name appears."""
    # The sample's generator is seeded with the user name, which must be encodable.
    report = sample_report(user.encode("utf-8", "replace").decode(), jobs=len(names),
                           period=PERIOD)
    report = dataclasses.replace(report, user=user)
    name_of = {}
    for job, name in zip(report.jobs, names.values(), strict=True):
        job["job_name"], job["submit_line"] = name, f"sbatch --wrap '{name}'"
        name_of[job["job_id_display"]] = name
    for section in report.sections:
        for table in (section.latest_concerning, section.all_latest, section.history):
            for row in table.rows if table is not None else ():
                job = str(row.get("job_id") or row.get("last_job_id"))
                if job in name_of:
                    row["job_name"], row["submit_line"] = name_of[job], f"sbatch '{name_of[job]}'"
    report.findings[:] = [dataclasses.replace(f, user=user, job_name=name_of.get(
        str(f.job_id), f.job_name)) for f in report.findings]
    return report


class Elements(HTMLParser):
    """The tags, attribute names and text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text += data


def check_clean(text: str, where: str) -> None:
    bad = FORBIDDEN.search(text)
    assert bad is None, f"{where} holds {bad.group(0)!r} at {bad.start()}"
    assert "x" * 200 not in text, f"{where} holds a name of 10 kB unshortened"


# -- the pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(HOSTILE_NAMES))
def test_chart_labels_take_any_job_name(kind):
    name = HOSTILE_NAMES[kind]
    job = {"job_id": 4242, "job_name": name, "ncpus": 8, "mean_busy_cores": 1.0,
           "elapsed_s": 7200, "gpus": 1, "gpu_avg_util_pct": 10.0}
    started = time.monotonic()
    charts = [cores_chart([job]), gpu_chart([job])]
    assert time.monotonic() - started < 5       # a 10 kB name took 43 s
    for chart in charts:
        assert chart is not None and chart.png.startswith(b"\x89PNG")
        check_clean(chart.alt, f"{chart.name} chart's alt text")
        assert "\n" not in chart.alt and len(chart.alt) < 400


@pytest.mark.parametrize("kind", sorted(HOSTILE_NAMES))
def test_shown_is_one_clean_short_line(kind):
    from watcher.letters.view import shown

    text = shown(HOSTILE_NAMES[kind], 60)
    check_clean(text, "shown()")
    assert "\n" not in text and "\t" not in text and "\r" not in text
    assert len(text) <= 60
    text.encode("utf-8")                       # no lone surrogate left


def test_shown_keeps_what_is_readable():
    from watcher.letters.view import shown

    assert shown("train\nrun.sh") == "train run.sh"
    assert shown("caf\udce9.dat") == "caf\ufffd.dat"
    assert shown("  a \t b  ") == "a b"
    assert shown("x" * 100, 10) == "x" * 9 + "…"
    assert shown("مرحبا") == "مرحبا"           # right-to-left text stays, only controls go
    assert shown("naïve 日本語 emoji 👍🏽") == "naïve 日本語 emoji 👍🏽"


def test_user_ids_are_file_names_and_tell_users_apart():
    from watcher.letters.view import user_id

    ids = {user: user_id(user) for user in [*HOSTILE_USERS, "alice", "john_doe", "john-doe",
                                              "a.b", "bob@ad", "", ".", "%41", "A"]}
    assert ids["alice"] == "alice" and ids["john_doe"] == "john_doe" and ids["bob@ad"] == "bob@ad"
    assert len(set(ids.values())) == len(ids)              # one folder per user
    for user, uid in ids.items():
        assert re.fullmatch(r"[A-Za-z0-9_.@%~-]+", uid), (user, uid)
        assert not uid.startswith(("-", ".")), (user, uid)
        # Not a dot segment in a URL either (WHATWG URLs read %2e%2e as '..').
        assert uid.lower().replace("%2e", ".") not in (".", ".."), (user, uid)


# -- one letter ------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["mallory", *HOSTILE_USERS])
def test_every_hostile_name_is_rendered_escaped_and_short(config, rules, user):
    letter = render_letter(hostile_report(user), rules, config)
    for where, text in (("html", letter.html), ("text", letter.text),
                        ("subject", letter.subject)):
        check_clean(text, where)
    assert "\n" not in letter.subject and "\r" not in letter.subject
    page = Elements()
    page.feed(letter.html)
    assert not {"script", "b"} & page.tags and "onerror" not in page.attributes
    assert "<script>alert('x')</script>" in page.text     # shown as text, not run
    # What can be read stays readable: a newline became a space, the template marks are text.
    assert "train run.sh" in letter.html and "train run.sh" in letter.text
    assert "{{ 7 * 7 }}" in letter.text
    # The user's name in links is one path segment, never a way out of it.
    from watcher.letters.view import user_id

    for link in re.findall(r'href="([^"]+)"', letter.html):
        if "/letters/" in link:
            assert link == f"https://hpc.example.org/letters/2026-W46/{user_id(user)}"
    assert letter.user == user                 # the ledger and the address book get the name
    message = build_message(letter, sender="tw@hpc.example", to="someone@uni.example")
    assert "\n" not in message["X-Turingwatch-Analysis-Id"]
    assert message.as_bytes()                  # headers that can be serialised


# -- the bundle ------------------------------------------------------------------------------


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def test_hostile_users_and_names_do_not_stop_the_bundle(config, rules):
    alice = sample_report("alice", jobs=6, period=PERIOD)
    reports = [alice, hostile_report("mallory"), *(hostile_report(u) for u in HOSTILE_USERS)]
    path = write_bundle(config, PERIOD, reports, rules=rules)
    for member in members(path):
        parts = member.name.split("/")
        assert member.isfile() and parts[0] == "2026-W46", member.name
        assert ".." not in parts and "" not in parts and not member.name.startswith("/")
        assert len(parts) == 2 or (parts[1] == "users" and len(parts) in (4, 5)), member.name
    bundle = open_bundle(path)
    assert sorted(bundle.users) == sorted(r.user for r in reports)
    letters = {letter.user: letter for letter in bundle.letters()}
    assert set(letters) == {r.user for r in reports}
    # As rendered alone, with her rank among the bundle's users.
    from watcher.letters.waste import standings

    assert letters["alice"] == render_letter(alice, rules, config, standings(reports)["alice"])
    assert [x.user for x in bundle.letters(["../x", "alice"])] == ["../x", "alice"]
    assert not any((path.parent.parent / name).exists() for name in ("x", "a", "b"))


def test_a_letter_that_cannot_be_built_skips_that_user_only(config, rules, monkeypatch, caplog):
    from watcher.letters import bundle as bundle_module
    from watcher.letters.bundle import SkippedLetters

    real = bundle_module.render_letter

    def render(report, *args, **kwargs):
        if report.user == "bob":
            raise RuntimeError("can't measure length of multiline text")
        return real(report, *args, **kwargs)

    monkeypatch.setattr(bundle_module, "render_letter", render)
    reports = [sample_report(u, jobs=4, period=PERIOD) for u in ("alice", "bob", "carol")]
    with caplog.at_level(logging.ERROR), pytest.raises(SkippedLetters) as caught:
        write_bundle(config, PERIOD, reports, rules=rules)
    assert caught.value.skipped == {"bob": "RuntimeError: can't measure length of multiline text"}
    assert "1 of 3" in str(caught.value) and "bob" in str(caught.value)
    assert any("bob" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    bundle = open_bundle(caught.value.path)
    assert [x.user for x in bundle.letters()] == ["alice", "carol"]
    assert bundle.skipped == {"bob": "RuntimeError: can't measure length of multiline text"}


def write_mail_config(tmp_path: Path) -> Path:
    path = tmp_path / "turingwatch.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path}/store.duckdb"\n'
        f'[analysis]\nresult_dir = "{tmp_path}/analysis_result"\n'
        f'[mail]\ndomain = "uni.example"\noutbox = "{tmp_path}/outbox"\n'
        "skip_system_accounts = false\n"
    )
    return path


def dry_run(config_path: Path, *args: str):
    return CliRunner().invoke(cli, ["--config", str(config_path), "mail", "--period", PERIOD.id,
                                    "--dry-run", "--no-progress", *args])


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_dry_run_writes_every_letter_inside_the_outbox(tmp_path):
    config_path = write_mail_config(tmp_path)
    config = load_config(config_path)
    users = ["alice", "mal lory", "../x", "a/b", "..", "evil\nuser"]
    write_bundle(config, PERIOD, [hostile_report(u) for u in users])
    result = dry_run(config_path)
    outbox = tmp_path / "outbox" / "2026-W46"
    written = {p.name for p in outbox.iterdir()}
    assert "alice.eml" in written and len(written) >= 3
    assert {p.parent for p in (tmp_path / "outbox").rglob("*.eml")} == {outbox}
    assert files_under(tmp_path) - {"turingwatch.toml", "analysis_result/2026-W46.tar.gz"} == {
        f"outbox/2026-W46/{name}" for name in written}
    # A user who has no usable address is reported and the others still get theirs.
    assert result.exit_code == 1, result.output
    assert re.search(r"failed: ~evil%0Auser: .*address", result.output), result.output


def test_a_skipped_letter_makes_mail_exit_non_zero(tmp_path, monkeypatch):
    from watcher.letters import bundle as bundle_module

    config_path = write_mail_config(tmp_path)
    real = bundle_module.render_letter
    monkeypatch.setattr(bundle_module, "render_letter", lambda report, *a, **k: (
        (_ for _ in ()).throw(ValueError("broken")) if report.user == "bob"
        else real(report, *a, **k)))
    with pytest.raises(BundleError, match="bob"):
        write_bundle(load_config(config_path), PERIOD,
                     [sample_report(u, jobs=3, period=PERIOD) for u in ("alice", "bob")])
    result = dry_run(config_path)
    assert result.exit_code == 1
    assert "1 written, 1 failed" in result.output
    assert "failed: bob: no letter in the bundle (ValueError: broken)" in result.output
    assert (tmp_path / "outbox" / "2026-W46" / "alice.eml").is_file()


# -- bundles someone tampered with -----------------------------------------------------------


def tampered(config, change) -> Path:
    """The bundle of alice and bob, repacked with ``change(name, info, data)`` applied to
    each member; it returns the members to write instead (a list of (info, data))."""
    path = write_bundle(config, PERIOD, [sample_report(u, jobs=3, period=PERIOD)
                                         for u in ("alice", "bob")])
    with tarfile.open(path) as tar:
        original = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w:gz") as tar:
        for info, data in original:
            for new_info, new_data in change(info.name, info, data):
                tar.addfile(new_info, io.BytesIO(new_data) if new_info.isfile() else None)
    return path


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _period_escape(name, info, data):
    if name.endswith("alice/letter.json"):
        meta = json.loads(data)
        meta["period"] = "../../escape"
        data = json.dumps(meta).encode()
        info.size = len(data)
    return [(info, data)]


def _dotdot_member(name, info, data):
    if name.endswith("bob/letter.json"):
        return [_member("2026-W46/users/../../../escape/letter.json", data), (info, data)]
    return [(info, data)]


def _absolute_member(name, info, data):
    if name.endswith("bob/letter.json"):
        return [_member("/tmp/turingwatch-escape/letter.json", data), (info, data)]
    return [(info, data)]


def _symlink_member(name, info, data):
    if name.endswith("alice/letter.txt"):
        return [_member(name, kind=tarfile.SYMTYPE, link="/etc/passwd")]
    return [(info, data)]


def _hardlink_member(name, info, data):
    if name.endswith("alice/letter.txt"):
        return [_member(name, kind=tarfile.LNKTYPE, link="2026-W46/manifest.json")]
    return [(info, data)]


def _folder_of_another(name, info, data):
    if name.endswith("bob/letter.json"):
        meta = json.loads(data)
        meta["user"] = "alice"                 # bob's folder claims to be alice's letter
        data = json.dumps(meta).encode()
        info.size = len(data)
    return [(info, data)]


@pytest.mark.parametrize("change", [_period_escape, _dotdot_member, _absolute_member,
                                    _symlink_member, _hardlink_member, _folder_of_another],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_tampered_bundle_is_refused_and_nothing_leaves_the_outbox(tmp_path, change):
    config_path = write_mail_config(tmp_path)
    path = tampered(load_config(config_path), change)
    with pytest.raises(BundleError, match=str(path)):
        list(open_bundle(path).letters())
    result = dry_run(config_path)
    assert result.exit_code == 1
    assert "bundle" in result.output and str(path) in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()
    assert not (tmp_path / "outbox").exists()     # refused before any letter was written
    assert bundle_path(load_config(config_path), PERIOD.id) == path


def test_a_sane_unicode_name_survives_unchanged(config, rules):
    name = "Ünïcödé_実験"
    report = hostile_report("alice", {"one": name, "two": "b"})
    letter = render_letter(report, rules, config)
    assert unicodedata.normalize("NFC", name) in letter.html and name in letter.text
