"""The sent-ledger's states against a real SMTP server: 'sending' only around DATA, and
unconfirmed letters reported on every run until an admin settles them.

The server is aiosmtpd in this process; the mailer runs as `turingwatch mail`, in a
subprocess when a test kills it at a chosen SMTP command.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from watcher.analysis.periods import parse_period
from watcher.cli import cli
from watcher.config import load_config
from watcher.letters.bundle import write_bundle
from watcher.letters.sample import sample_report
from watcher.mailer.delivery import UNCONFIRMED, DeliveryReport, Outcome
from watcher.mailer.ledger import Ledger, ledger_path

PERIOD = parse_period("2026-W46", "week", "UTC")
EARLIER = parse_period("2026-W45", "week", "UTC")
REPO = Path(__file__).resolve().parent.parent


class Server:
    """An aiosmtpd handler that records what it was given and when, and can be told to kill
    the mailer (``kill_at``: (command, the address or count that triggers it))."""

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.received: list[email.message.EmailMessage] = []
        self.events: list[tuple[str, str, str | None]] = []   # (command, argument, ledger state)
        self.kill_at: tuple[str, str] | None = None
        self.victim: subprocess.Popen | None = None
        self.refuse_data: set[str] = set()
        self.mail_count = 0

    def state(self, user: str) -> str | None:
        """The ledger's row for ``user``, read as another process would."""
        if not self.ledger.exists():
            return None
        with sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True) as db:
            row = db.execute("SELECT state FROM deliveries WHERE period = ? AND user_name = ?",
                             (PERIOD.id, user)).fetchone()
        return row[0] if row else None

    def _maybe_kill(self, command: str, argument: str) -> None:
        if self.kill_at == (command, argument) and self.victim is not None:
            os.kill(self.victim.pid, signal.SIGKILL)
            self.victim.wait(10)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self._maybe_kill("EHLO", "1")
        session.host_name = hostname       # what aiosmtpd leaves to an EHLO hook
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mail_count += 1
        self._maybe_kill("MAIL", str(self.mail_count))
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        user = address.partition("@")[0]
        self.events.append(("RCPT", user, self.state(user)))
        self._maybe_kill("RCPT", address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        user = message["X-Turingwatch-Analysis-Id"].split(":")[1]
        self.events.append(("DATA", user, self.state(user)))
        if user in self.refuse_data:
            self.refuse_data.discard(user)
            return "554 5.6.0 message refused"
        self.received.append(message)
        self._maybe_kill("DATA", user)
        return "250 2.0.0 queued"

    def users(self) -> list[str]:
        return [m["X-Turingwatch-Analysis-Id"].split(":")[1] for m in self.received]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "turingwatch.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path}/store.duckdb"\n'
        f'[analysis]\nresult_dir = "{tmp_path}/analysis_result"\n'
        '[site]\nname = "Turing cluster"\n'
        f'[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\ndomain = "uni.example"\n'
        'sender = "turingwatch@hpc.example"\nrate_per_minute = 6000\nretry_backoff_s = 0\n'
        "skip_system_accounts = false\n"
    )
    return path


@pytest.fixture
def site(tmp_path):
    """A config, a bundle of alice, bob and carol for 2026-W46, and a running server."""
    from aiosmtpd.controller import Controller

    port = free_port()
    config_path = write_config(tmp_path, port)
    config = load_config(config_path)
    write_bundle(config, PERIOD, [sample_report(u, jobs=3, period=PERIOD)
                                  for u in ("alice", "bob", "carol")])
    server = Server(ledger_path(config))
    controller = Controller(server, hostname="127.0.0.1", port=port)
    controller.start()
    yield config_path, server
    controller.stop()


def mail(config_path: Path, *args: str, period: str = PERIOD.id) -> subprocess.CompletedProcess:
    """`turingwatch mail` in its own process: its exit status, stdout and stderr together."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", "--config", str(config_path), "mail", "--period",
         period, "--no-progress", *args],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=120,
    )


def killed_run(config_path: Path, server: Server, command: str, argument: str) -> None:
    server.kill_at = (command, argument)
    server.victim = subprocess.Popen(
        [sys.executable, "-m", "watcher", "--config", str(config_path), "mail", "--period",
         PERIOD.id, "--no-progress"],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.victim.wait(60)
    assert server.victim.returncode == -signal.SIGKILL
    server.kill_at = server.victim = None


@pytest.mark.smtp
def test_sending_is_written_only_once_the_server_took_the_envelope(site):
    config_path, server = site
    result = mail(config_path)
    assert result.returncode == 0, result.stdout
    assert server.users() == ["alice", "bob", "carol"]
    # At RCPT TO the ledger has no row yet; at DATA the row says 'sending'.
    assert server.events == [
        ("RCPT", "alice", None), ("DATA", "alice", "sending"),
        ("RCPT", "bob", None), ("DATA", "bob", "sending"),
        ("RCPT", "carol", None), ("DATA", "carol", "sending"),
    ]


@pytest.mark.smtp
@pytest.mark.parametrize(("command", "argument", "victim"), [
    ("EHLO", "1", "alice"),                  # while connecting: nothing sent yet
    ("MAIL", "2", "bob"),                    # MAIL FROM of the second letter
    ("RCPT", "bob@uni.example", "bob"),      # RCPT TO of the second letter
])
def test_a_crash_before_data_leaves_the_letter_unsent_and_the_next_run_sends_it(
        site, command, argument, victim):
    config_path, server = site
    killed_run(config_path, server, command, argument)
    assert victim not in server.users()
    assert server.state(victim) is None      # not 'sending': the server never had it
    result = mail(config_path)
    assert result.returncode == 0, result.stdout
    assert "unconfirmed" not in result.stdout
    assert sorted(server.users()) == ["alice", "bob", "carol"]     # each exactly once


@pytest.mark.smtp
def test_a_refused_letter_after_sending_is_failed_and_goes_next_run(site):
    config_path, server = site
    server.refuse_data = {"bob"}
    first = mail(config_path)
    assert first.returncode == 1
    assert "failed: bob: message: 554 5.6.0 message refused" in first.stdout
    assert server.state("bob") == "failed"
    second = mail(config_path)
    assert second.returncode == 0, second.stdout
    assert sorted(server.users()) == ["alice", "bob", "carol"]


@pytest.mark.smtp
def test_an_unconfirmed_letter_is_reported_until_marked_sent(site):
    config_path, server = site
    killed_run(config_path, server, "DATA", "bob")     # bob's letter arrived, unrecorded
    assert server.state("bob") == "sending"
    for _ in range(2):                                  # loud on every run, not only the first
        result = mail(config_path)
        assert result.returncode == 1, result.stdout
        lines = result.stdout.splitlines()
        counts = next(line for line in lines if re.fullmatch(r"\d+ [a-z ]+(, \d+ [a-z ]+)*", line))
        assert counts.endswith("already sent, 1 unconfirmed"), result.stdout
        warning = next(line for line in lines if line.startswith("turingwatch: the letter of bob"))
        assert "<letter.2026-W46.bob@hpc.example>" in warning, warning
        assert "--mark-sent bob" in result.stdout and "--resend bob" in result.stdout
    assert server.users().count("bob") == 1

    marked = mail(config_path, "--mark-sent", "bob")
    assert marked.returncode == 0, marked.stdout
    assert "bob: marked as sent" in marked.stdout
    assert server.state("bob") == "sent"
    after = mail(config_path)
    assert after.returncode == 0, after.stdout
    assert "3 already sent" in after.stdout
    assert server.users().count("bob") == 1


@pytest.mark.smtp
def test_resend_sends_an_unconfirmed_letter_again_with_its_message_id(site):
    config_path, server = site
    killed_run(config_path, server, "DATA", "bob")
    resent = mail(config_path, "--resend", "bob")
    assert resent.returncode == 0, resent.stdout
    bobs = [m for m in server.received if m["To"] == "bob@uni.example"]
    assert len(bobs) == 2 and bobs[0]["Message-ID"] == bobs[1]["Message-ID"]
    assert server.state("bob") == "sent"
    # A letter the server confirmed is never sent twice, asked or not.
    refused = mail(config_path, "--resend", "alice")
    assert refused.returncode == 1 and "confirmed by the server" in refused.stdout
    assert mail(config_path).returncode == 0


@pytest.mark.smtp
def test_an_unconfirmed_letter_of_another_period_keeps_the_status_non_zero(site):
    config_path, server = site
    config = load_config(config_path)
    with Ledger(ledger_path(config)) as ledger:
        ledger.mark_sending(EARLIER.id, "dave", "<letter.2026-W45.dave@hpc.example>",
                            ["dave@uni.example"])
    result = mail(config_path)
    assert result.returncode == 1
    assert sorted(server.users()) == ["alice", "bob", "carol"]
    assert "3 sent, 1 unconfirmed" in result.stdout
    assert "unconfirmed: dave: its letter of 2026-W45: a run stopped" in result.stdout
    assert "--period 2026-W45 --mark-sent dave" in result.stdout

    assert mail(config_path, "--mark-sent", "dave", period=EARLIER.id).returncode == 0
    again = mail(config_path)
    assert again.returncode == 0, again.stdout
    assert "3 already sent" in again.stdout


# -- without a server ------------------------------------------------------------------------


@pytest.fixture
def ledger_config(tmp_path):
    """A config whose SMTP server does not exist: these commands must not need one."""
    config_path = write_config(tmp_path, free_port())
    config = load_config(config_path)
    with Ledger(ledger_path(config)) as ledger:
        ledger.mark_sending(PERIOD.id, "alice", "<a@x>", ["alice@uni.example"])
        ledger.mark_sending(PERIOD.id, "bob", "<b@x>", ["bob@uni.example"])
        ledger.mark_failed(PERIOD.id, "bob", "451 later")
        ledger.mark_sending(PERIOD.id, "carol", "<c@x>", ["carol@uni.example"])
        ledger.mark_sent(PERIOD.id, "carol")
    return config_path, config


def invoke(config_path: Path, *args: str):
    return CliRunner().invoke(cli, ["--config", str(config_path), "mail", "--period",
                                    PERIOD.id, "--no-progress", *args])


def test_mark_sent_settles_only_unconfirmed_letters(ledger_config):
    config_path, config = ledger_config
    failed = invoke(config_path, "--mark-sent", "bob")
    assert failed.exit_code == 1 and "not unconfirmed but failed (451 later)" in failed.output
    unknown = invoke(config_path, "--mark-sent", "erin")
    assert unknown.exit_code == 1 and "no letter for erin" in unknown.output
    with Ledger(ledger_path(config)) as ledger:
        assert ledger.entry(PERIOD.id, "alice").state == "sending"   # nothing half done
    done = invoke(config_path, "--mark-sent", "alice", "--mark-sent", "carol")
    assert done.exit_code == 0, done.output
    assert "alice: marked as sent" in done.output and "carol: already sent" in done.output
    with Ledger(ledger_path(config)) as ledger:
        entry = ledger.entry(PERIOD.id, "alice")
        assert entry.state == "sent" and "--mark-sent" in entry.last_error
        assert ledger.unconfirmed() == []
    mixed = invoke(config_path, "--mark-sent", "alice", "--dry-run")
    assert mixed.exit_code == 2 and "only records" in mixed.output


def test_a_ledger_failure_before_data_counts_the_try_and_keeps_the_letter_due(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.mark_failed(PERIOD.id, "alice", "451 try later", before_data=True,
                           message_id="<m@x>", recipients=["alice@x"])
        entry = ledger.entry(PERIOD.id, "alice")
        assert (entry.state, entry.attempts, entry.message_id) == ("failed", 1, "<m@x>")
        ledger.mark_sending(PERIOD.id, "alice", "<m@x>", ["alice@x"])
        assert ledger.unconfirmed()[0].user == "alice"
        assert ledger.resolve_sent(PERIOD.id, "alice", "found in the log")
        assert not ledger.resolve_sent(PERIOD.id, "alice", "twice")   # only unconfirmed ones
        assert ledger.entry(PERIOD.id, "alice").attempts == 2


def test_an_unconfirmed_letter_is_not_ok():
    report = DeliveryReport([Outcome("alice", "sent"), Outcome("bob", UNCONFIRMED, "check it")])
    assert not report.ok
    assert report.summary() == ["1 sent, 1 unconfirmed", "unconfirmed: bob: check it"]
