"""Mailer parts that need no SMTP server: addresses, who is skipped, the ledger, the throttle,
the MIME message and dry runs."""

from __future__ import annotations

import email
import email.policy
import sqlite3

import pytest

from watcher.analysis.periods import parse_period
from watcher.analysis.rules import load_rules
from watcher.config import load_config
from watcher.letters import render_letter
from watcher.letters.message import build_message, letter_message_id
from watcher.letters.sample import sample_report
from watcher.mailer import AddressError, MailError
from watcher.mailer.addresses import AddressBook, first_address
from watcher.mailer.delivery import Deliverer
from watcher.mailer.ledger import Ledger, ledger_path
from watcher.mailer.recipients import RecipientPolicy
from watcher.mailer.throttle import Throttle

PERIOD = parse_period("2026-W46", "week", "UTC")


def settings(**values):
    env = {f"TURINGWATCH_MAIL_{k.upper()}": str(v) for k, v in values.items()}
    return load_config(None, environ=env).mail


# -- addresses -------------------------------------------------------------------------------


def test_address_map_wins_then_domain(tmp_path):
    mapping = tmp_path / "addresses"
    mapping.write_text("# user address\nalice  alice.liddell@uni.example\n\nbob bob@lab.example\n")
    book = AddressBook(settings(address_map_file=mapping, domain="hpc.example"))
    assert book.lookup("alice") == "alice.liddell@uni.example"
    assert book.lookup("carol") == "carol@hpc.example"


def test_no_address_is_a_clear_error():
    with pytest.raises(AddressError, match="no e-mail address for user dave"):
        AddressBook(settings()).lookup("dave")


def test_a_malformed_address_map_names_the_line(tmp_path):
    mapping = tmp_path / "addresses"
    mapping.write_text("alice alice@uni.example\nbob not-an-address\n")
    with pytest.raises(MailError, match=r"addresses:2: expected 'user address'"):
        AddressBook(settings(address_map_file=mapping))


def test_gecos_address():
    assert first_address("Alice Liddell,Room 4,,,alice.l@uni.example") == "alice.l@uni.example"
    assert first_address("Bob,,,") is None
    # A user in no passwd database falls through to the domain.
    book = AddressBook(settings(use_gecos="true", domain="fallback.example"))
    assert book.lookup("no-such-user-here") == "no-such-user-here@fallback.example"


# -- who is written to -----------------------------------------------------------------------


def test_skip_list_patterns_service_accounts_and_opt_outs(tmp_path):
    opt_out = tmp_path / "opt-out"
    opt_out.write_text("carol  # asked on 2026-11-02\n")
    policy = RecipientPolicy(settings(skip_users="root,svc-*", opt_out_file=opt_out))
    assert policy.skip_reason("root") == "skip list"
    assert policy.skip_reason("svc-backup") == "skip list"
    assert policy.skip_reason("carol") == "opted out"
    assert policy.skip_reason("daemon").startswith("service account (uid ")
    assert policy.skip_reason("alice-not-in-passwd") is None
    everyone = RecipientPolicy(settings(skip_users="", skip_system_accounts="false"))
    assert everyone.skip_reason("daemon") is None


def test_missing_opt_out_file_means_nobody_opted_out(tmp_path):
    policy = RecipientPolicy(settings(opt_out_file=tmp_path / "none-yet"))
    assert policy.skip_reason("alice") is None


# -- ledger ----------------------------------------------------------------------------------


def test_ledger_records_each_state_durably(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        assert ledger.entry("2026-W46", "alice") is None
        ledger.mark_sending("2026-W46", "alice", "<m1@x>", ["alice@x", "cc@x"])
        ledger.mark_failed("2026-W46", "alice", "451 try later")
        ledger.mark_sending("2026-W46", "alice", "<m1@x>", ["alice@x", "cc@x"])
        ledger.mark_sent("2026-W46", "alice")
    # A new connection (another process, later) sees the committed state.
    with Ledger(path) as ledger:
        entry = ledger.entry("2026-W46", "alice")
        assert (entry.state, entry.attempts, entry.recipients) == ("sent", 2, "alice@x, cc@x")
        assert entry.sent_at is not None
        assert ledger.entry("2026-W47", "alice") is None
    rows = sqlite3.connect(path).execute("SELECT count(*) FROM deliveries").fetchone()
    assert rows == (1,)


def test_two_runs_cannot_share_a_ledger(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path), pytest.raises(MailError, match="another mail run"):
        Ledger(path)
    Ledger(path).close()  # released when the first run ends


def test_ledger_lives_next_to_the_store_by_default(tmp_path):
    config = load_config(None, environ={"TURINGWATCH_STORE_PATH": str(tmp_path / "s.duckdb")})
    assert ledger_path(config) == tmp_path / "mail-ledger.sqlite3"


# -- throttle --------------------------------------------------------------------------------


def test_throttle_spaces_letters_evenly():
    now = [100.0]
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    throttle = Throttle(30, clock=lambda: now[0], sleep=sleep)
    throttle.wait()           # the first letter goes at once
    now[0] += 0.5             # sending took half a second
    throttle.wait()
    now[0] += 3.0             # slower than the rate: no wait
    throttle.wait()
    assert slept == [1.5]


# -- the message -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def letter():
    config = load_config(None, environ={})
    rules = {r.id: r for r in load_rules(config).rules}
    return render_letter(sample_report("alice", jobs=8, period=PERIOD), rules, config)


def test_message_has_text_html_and_every_inline_image(letter):
    msg = build_message(letter, sender="HPC <tw@hpc.example>", to="alice@uni.example",
                        cc=["admin@hpc.example"], reply_to="help@hpc.example",
                        unsubscribe="mailto:help@hpc.example?subject=unsubscribe")
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["To"] == "alice@uni.example"
    assert parsed["Cc"] == "admin@hpc.example"
    assert parsed["Reply-To"] == "help@hpc.example"
    assert parsed["Message-ID"] == "<letter.2026-W46.alice@hpc.example>"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Turingwatch-Analysis-Id"] == "2026-W46:alice"
    assert parsed["List-Unsubscribe"] == "<mailto:help@hpc.example?subject=unsubscribe>"
    text, related = parsed.get_payload()
    assert text.get_content_type() == "text/plain"
    assert text.get_content() == letter.text
    assert related.get_content_type() == "multipart/related"
    html, *images = related.get_payload()
    assert html.get_content().rstrip("\n") == letter.html
    assert {i["Content-ID"].strip("<>") for i in images} == set(letter.images)
    for image in images:
        assert image.get_content_type() == "image/png"
        assert image.get_content() == letter.images[image["Content-ID"].strip("<>")]


def test_message_id_is_the_same_for_every_try():
    assert letter_message_id("2026-W46", "alice", "tw@hpc.example") == letter_message_id(
        "2026-W46", "alice", "Turingwatch <tw@hpc.example>")


def test_dry_run_writes_one_eml_per_user_and_applies_the_skip_list(tmp_path):
    config = load_config(None, environ={
        "TURINGWATCH_MAIL_DOMAIN": "uni.example", "TURINGWATCH_LETTERS_ALL_GOOD": "none",
    })
    rules = {r.id: r for r in load_rules(config).rules}
    good = sample_report("erin", jobs=2, period=PERIOD)
    good.findings.clear()
    letters = [render_letter(r, rules, config) for r in (
        sample_report("alice", jobs=3, period=PERIOD),
        sample_report("root", jobs=3, period=PERIOD),
        good,
    )]
    report = Deliverer(config, outbox=tmp_path).deliver(letters)
    assert [(o.user, o.status) for o in report.outcomes] == [
        ("alice", "written"), ("root", "skipped"), ("erin", "skipped")]
    assert report.outcomes[2].detail == "no problem found (letters.all_good = none)"
    eml = tmp_path / "2026-W46" / "alice.eml"
    parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert parsed["To"] == "alice@uni.example"
    assert [p.name for p in (tmp_path / "2026-W46").iterdir()] == ["alice.eml"]
    assert report.summary()[0] == "1 written, 2 skipped"
