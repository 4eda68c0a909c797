"""Letters through a real SMTP server (aiosmtpd): what arrives, refusals, retries, crashes."""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from click.testing import CliRunner

from watcher.analysis.periods import parse_period
from watcher.cli import cli
from watcher.config import load_config
from watcher.letters.bundle import write_bundle
from watcher.letters.sample import sample_report
from watcher.mailer import MailError, send_report_card
from watcher.mailer.delivery import Deliverer
from watcher.mailer.ledger import Ledger, ledger_path
from watcher.mailer.smtp import SmtpSession
from watcher.store import Store

pytestmark = pytest.mark.smtp

PERIOD = parse_period("2026-W46", "week", "UTC")
REPO = Path(__file__).resolve().parent.parent


class Sink:
    """An aiosmtpd handler that keeps every message and can refuse chosen recipients."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.refuse: dict[str, str] = {}          # address -> SMTP answer
        self.refuse_once: dict[str, str] = {}     # the same, for the next try only
        self.on_data = None                       # called with the count, before the reply
        self.hang_up_on: set[str] = set()         # take these users' letters, never answer
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answer = self.refuse.get(address) or self.refuse_once.pop(address, None)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append((list(envelope.rcpt_tos), message))
            count = len(self.received)
        if self.on_data:
            self.on_data(count)
        user = message["X-Turingwatch-Analysis-Id"].split(":")[1]
        if user in self.hang_up_on:
            server.transport.close()
        return "250 2.0.0 queued"

    def users(self) -> list[str]:
        return [m["X-Turingwatch-Analysis-Id"].split(":")[1] for _, m in self.received]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sink():
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def write_config(tmp_path: Path, port: int, **mail: object) -> Path:
    values = {
        "smtp_host": "127.0.0.1", "smtp_port": port, "domain": "uni.example",
        "sender": "Turing cluster <turingwatch@hpc.example>", "reply_to": "help@hpc.example",
        "cc": ["hpc-admin@hpc.example"], "rate_per_minute": 6000,
        "skip_system_accounts": False, "retry_backoff_s": 0, **mail,
    }

    def toml(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return "[" + ", ".join(toml(v) for v in value) + "]"
        return repr(value) if isinstance(value, int | float) else f'"{value}"'

    path = tmp_path / "turingwatch.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path}/store.duckdb"\n'
        f'[analysis]\nresult_dir = "{tmp_path}/analysis_result"\n'
        '[site]\nname = "Turing cluster"\ncontact = "HPC support <help@hpc.example>"\n'
        "[mail]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in values.items())
    )
    return path


def bundle_for(config, users: list[str]) -> None:
    write_bundle(config, PERIOD, [sample_report(u, jobs=5, period=PERIOD) for u in users])


def deliver(config, **options):
    with Ledger(ledger_path(config)) as ledger, SmtpSession(config.mail) as smtp:
        from watcher.letters.bundle import bundle_path, open_bundle

        bundle = open_bundle(bundle_path(config, PERIOD.id))
        return Deliverer(config, ledger=ledger, smtp=smtp, **options).deliver(bundle.letters())


def test_letters_arrive_whole(sink, tmp_path):
    handler, port = sink
    config = load_config(write_config(tmp_path, port))
    bundle_for(config, ["alice", "bob"])
    report = deliver(config)
    assert report.ok and report.summary()[0] == "2 sent"
    assert handler.users() == ["alice", "bob"]
    rcpt, msg = handler.received[0]
    assert rcpt == ["alice@uni.example", "hpc-admin@hpc.example"]
    assert msg["From"] == "Turing cluster <turingwatch@hpc.example>"
    assert msg["To"] == "alice@uni.example"
    assert msg["Cc"] == "hpc-admin@hpc.example"
    assert msg["Reply-To"] == "help@hpc.example"
    assert msg["Subject"] == "Turing cluster: your usage summary for 2026-W46"
    assert msg["Message-ID"] == "<letter.2026-W46.alice@hpc.example>"
    assert msg["List-Unsubscribe"] == "<mailto:help@hpc.example?subject=unsubscribe>"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "IN SHORT\r\n========" in text and "Analysis ID: 2026-W46:alice" in text
    assert "What to change first:" in html and "<style>" in html.split("<body")[0]
    cids = {part["Content-ID"].strip("<>"): part for part in msg.walk()
            if part.get_content_maintype() == "image"}
    referenced = set(re.findall(r'src="cid:([^"]+)"', html))
    assert referenced and referenced == set(cids)
    for part in cids.values():
        assert part.get_content().startswith(b"\x89PNG")
        assert part.get_content_disposition() == "inline"


def test_a_refused_recipient_does_not_stop_the_others_and_goes_next_run(sink, tmp_path):
    handler, port = sink
    config = load_config(write_config(tmp_path, port))
    bundle_for(config, ["alice", "bob", "carol"])
    handler.refuse["bob@uni.example"] = "550 5.1.1 <bob@uni.example>: no such user"
    first = deliver(config)
    assert handler.users() == ["alice", "carol"]
    assert not first.ok
    assert "failed: bob: bob@uni.example: 550 5.1.1" in "\n".join(first.summary())
    with Ledger(ledger_path(config)) as ledger:
        assert ledger.entry(PERIOD.id, "bob").state == "failed"

    del handler.refuse["bob@uni.example"]           # the address was fixed
    second = deliver(config)
    assert second.ok
    assert second.summary()[0] == "1 sent, 2 already sent"
    assert sorted(handler.users()) == ["alice", "bob", "carol"]   # each exactly once


def test_a_temporary_refusal_is_retried_in_the_same_run(sink, tmp_path):
    handler, port = sink
    config = load_config(write_config(tmp_path, port))
    bundle_for(config, ["alice"])
    handler.refuse_once["alice@uni.example"] = "451 4.3.0 try again later"
    report = deliver(config)
    assert report.ok and handler.users() == ["alice"]
    with Ledger(ledger_path(config)) as ledger:
        assert ledger.entry(PERIOD.id, "alice").attempts == 2


def test_a_letter_the_server_never_confirmed_is_not_sent_again(sink, tmp_path):
    handler, port = sink
    config = load_config(write_config(tmp_path, port))
    bundle_for(config, ["alice", "bob", "carol"])
    handler.hang_up_on = {"bob"}        # bob's letter arrives, the "250" never leaves
    first = deliver(config)
    assert [(o.user, o.status) for o in first.outcomes] == [
        ("alice", "sent"), ("bob", "unconfirmed"), ("carol", "sent")]
    assert "stopped answering while taking the letter" in first.outcomes[1].detail
    handler.hang_up_on = set()
    second = deliver(config)
    assert second.summary()[0] == "2 already sent, 1 unconfirmed"
    assert handler.users() == ["alice", "bob", "carol"]


def test_an_unreachable_server_stops_the_run_and_loses_nothing(tmp_path):
    config = load_config(write_config(tmp_path, free_port(), retry_attempts=2))
    bundle_for(config, ["alice", "bob"])
    report = deliver(config)
    assert report.aborted and "cannot connect to SMTP server" in report.aborted
    assert [o.status for o in report.outcomes] == ["failed"]
    with Ledger(ledger_path(config)) as ledger:
        assert ledger.entry(PERIOD.id, "alice").state == "failed"
        assert ledger.entry(PERIOD.id, "bob") is None


def test_login_with_a_password_file_and_a_refused_login(tmp_path):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login, auth_data.password) == (b"tw", b"s3cret")
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                            authenticator=authenticator, auth_require_tls=False)
    controller.start()
    try:
        secret = tmp_path / "smtp-password"
        secret.write_text("wrong\n")
        secret.chmod(0o600)  # a secret file others can read is refused
        config = load_config(write_config(tmp_path, controller.port, username="tw",
                                          password_file=str(secret)))
        bundle_for(config, ["alice", "bob"])
        refused = deliver(config)
        assert refused.aborted and "refused the login of 'tw'" in refused.aborted
        assert handler.received == []
        secret.write_text("s3cret\n")
        accepted = deliver(config)
        assert accepted.ok and handler.users() == ["alice", "bob"]
    finally:
        controller.stop()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made for the test."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "turingwatch test SMTP")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp.pem", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_encrypted_transport_checks_the_server_certificate(tmp_path, monkeypatch, security):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Sink()
    port = free_port()
    options = ({"tls_context": context, "require_starttls": True} if security == "starttls"
               else {"ssl_context": context})
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        config = load_config(write_config(tmp_path, port, security=security, retry_attempts=1))
        bundle_for(config, ["alice"])
        untrusted = deliver(config)         # the test CA is not trusted yet
        assert untrusted.aborted and "CERTIFICATE_VERIFY_FAILED" in untrusted.aborted
        assert handler.received == []
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))   # what a site's CA bundle does
        trusted = deliver(config)
        assert trusted.ok and handler.users() == ["alice"]
    finally:
        controller.stop()


def mail_process(config_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "watcher", "--config", str(config_path), "mail",
         "--period", PERIOD.id, "--no-progress", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_killed_mid_run_then_resumed_everyone_gets_exactly_one_letter(sink, tmp_path):
    handler, port = sink
    users = [f"u{i:02d}" for i in range(1, 9)]
    config_path = write_config(tmp_path, port, rate_per_minute=600)
    bundle_for(load_config(config_path), users)
    first = mail_process(config_path)

    def kill_on_third(count: int) -> None:
        # Killed after the server has the 3rd letter but before the mailer reads the reply:
        # the one moment when nobody can know whether the letter went out.
        if count == 3:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)

    handler.on_data = kill_on_third
    first.wait(60)
    assert first.returncode == -signal.SIGKILL
    assert handler.users() == users[:3]

    handler.on_data = None
    second = mail_process(config_path)
    output, _ = second.communicate(timeout=60)
    assert second.returncode == 1, output                   # an unconfirmed letter fails the run
    assert sorted(handler.users()) == users                 # every user exactly once
    assert "5 sent, 2 already sent, 1 unconfirmed" in output
    assert "unconfirmed: u03: a run stopped while sending it" in output

    # Asked explicitly, the unconfirmed letter goes again, with the same Message-ID.
    third = mail_process(config_path, "--resend-unconfirmed", "--only", "u03")
    output, _ = third.communicate(timeout=60)
    assert third.returncode == 0, output
    ids = [m["Message-ID"] for _, m in handler.received if "u03" in m["To"]]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_report_card_by_mail(sink, tmp_path):
    handler, port = sink
    config = load_config(write_config(tmp_path, port))
    send_report_card(config, "alice", "Job 4242 finished", "<p>Card <img src=\"cid:cpu@x\"></p>",
                     "Card", {"cpu@x": b"\x89PNG\r\n\x1a\nfake"})
    rcpt, msg = handler.received[0]
    assert rcpt == ["alice@uni.example"]                    # no Cc for a job's own card
    assert msg["Subject"] == "Job 4242 finished"
    image = next(p for p in msg.walk() if p.get_content_maintype() == "image")
    assert image["Content-ID"] == "<cpu@x>"
    handler.refuse["bob@uni.example"] = "550 5.1.1 unknown"
    with pytest.raises(MailError, match=r"report card for bob <bob@uni.example> not sent: .*550"):
        send_report_card(config, "bob", "Job 1", "<p>x</p>", "x")


def test_mail_command_analyzes_bundles_and_sends(sink, tmp_path, caplog):
    """End to end: accounting in the store -> analysis -> bundle -> letters by SMTP."""
    handler, port = sink
    config_path = write_config(tmp_path, port)
    config = load_config(config_path)
    start = PERIOD.start + timedelta(days=1, hours=8)
    with Store(config.store.path) as store:
        for job_id, user, cores, cpu_s in ((501, "alice", 16, 3600.0), (502, "bob", 4, 14000.0)):
            store.execute(
                "INSERT INTO jobs (cluster, job_id, job_id_display, user_name, account,"
                " partition, job_name, submit_line, state, start_time, end_time, time_limit_s,"
                " elapsed_s, nnodes, ncpus, ngpus, req_mem_bytes, total_cpu_s, max_rss_bytes)"
                " VALUES ('turing', ?, ?, ?, 'physics', 'cpu', 'sim', 'sbatch sim.sh',"
                " 'COMPLETED', ?, ?, 86400, 3600, 1, ?, 0, 8589934592, ?, 4294967296)",
                [job_id, str(job_id), user, start, start + timedelta(hours=1), cores, cpu_s],
            )
    result = CliRunner().invoke(cli, ["--config", str(config_path), "mail", "--period",
                                      PERIOD.id, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "analysis_result" / "2026-W46.tar.gz").is_file()
    assert "2 sent" in result.output
    letters = {m["To"]: m for _, m in handler.received}
    alice = letters["alice@uni.example"].get_body(("plain",)).get_content()
    assert "[Serious] Serial job on many cores in 1 job." in alice, alice  # one cause, one finding
    assert "CPU underuse" not in alice
    assert "used 1 of the 16 core-hours they reserved (6.2%)" in " ".join(alice.split())
    # Mailing again sends nothing: the ledger remembers.
    again = CliRunner().invoke(cli, ["--config", str(config_path), "mail", "--period",
                                     PERIOD.id, "--no-progress"])
    assert again.exit_code == 0 and "2 already sent" in again.output
    assert len(handler.received) == 2
    assert datetime.now(UTC) > PERIOD.end                  # a finished period: no warning
    assert "not over yet" not in result.output + caplog.text


def test_an_unfinished_period_is_not_mailed_by_accident(sink, tmp_path):
    handler, port = sink
    config_path = write_config(tmp_path, port)
    current = parse_period("current", "week", "UTC")
    write_bundle(load_config(config_path), current,
                 [sample_report("alice", jobs=2, period=current)])
    args = ["--config", str(config_path), "mail", "--period", current.id, "--no-progress"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1
    assert "its letters would be incomplete" in refused.output
    assert handler.received == []
    sent = CliRunner().invoke(cli, [*args, "--allow-unfinished"])
    assert sent.exit_code == 0, sent.output
    assert "1 sent" in sent.output and len(handler.received) == 1


def test_mail_command_exits_1_when_a_letter_failed(sink, tmp_path):
    handler, port = sink
    config_path = write_config(tmp_path, port)
    bundle_for(load_config(config_path), ["alice", "bob"])
    handler.refuse["bob@uni.example"] = "550 5.1.1 no such user"
    result = CliRunner().invoke(cli, ["--config", str(config_path), "mail", "--period",
                                      PERIOD.id, "--no-progress"])
    assert result.exit_code == 1
    assert "1 sent, 1 failed" in result.output
    assert "failed: bob: bob@uni.example: 550 5.1.1 no such user" in result.output
