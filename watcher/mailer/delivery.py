"""Send a period's letters: each user at most once, throttled, resumable, with a summary.

The order of events for one letter, and what a crash at each point leaves behind:

1. ledger row 'sent' already: skip (a re-run, or a run that resumed);
2. ledger row 'sending' left by an earlier run: *unconfirmed*. That run stopped while talking
   to the server, after or before the server took the letter; nobody can know which. To never
   send a letter twice, it is not sent again unless asked (``resend_unconfirmed``); the run's
   summary names these users. A re-send reuses the letter's Message-ID, so clients that drop
   duplicates show it once.
3. write 'sending' (synced to disk), hand the letter to the SMTP server;
4. the server accepted it: write 'sent'. It refused it: write 'failed' with the answer, so
   the next run tries again. A temporary refusal is retried in this run first, with back-off.
   The connection broke after the letter's text went out: 'sending' stays, as after a crash.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from watcher.config import Config
from watcher.letters.message import build_message, letter_message_id
from watcher.letters.render import RenderedLetter
from watcher.letters.view import contact_address
from watcher.mailer.addresses import AddressBook
from watcher.mailer.errors import AddressError, DeliveryError, MailError, Unconfirmed
from watcher.mailer.ledger import SENDING, SENT, Ledger
from watcher.mailer.recipients import RecipientPolicy
from watcher.mailer.smtp import ServerUnreachable, SmtpSession
from watcher.mailer.throttle import Throttle

# Outcomes, as the summary counts them.
SENT_NOW, WRITTEN, ALREADY_SENT = "sent", "written", "already sent"
SKIPPED, UNCONFIRMED, FAILED = "skipped", "unconfirmed", "failed"


@dataclass(frozen=True)
class Outcome:
    user: str
    status: str
    detail: str = ""


@dataclass
class DeliveryReport:
    outcomes: list[Outcome] = field(default_factory=list)
    aborted: str | None = None          # why the run stopped early, if it did

    def count(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    def of(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def ok(self) -> bool:
        return self.aborted is None and not self.of(FAILED)

    def summary(self) -> list[str]:
        """A line of counts, then one line per letter that needs someone's attention."""
        counts = self.count()
        order = (SENT_NOW, WRITTEN, ALREADY_SENT, SKIPPED, UNCONFIRMED, FAILED)
        lines = [", ".join(f"{counts[s]} {s}" for s in order if counts[s]) or "no letters"]
        for outcome in self.of(FAILED):
            lines.append(f"failed: {outcome.user}: {outcome.detail} (tried again next run)")
        for outcome in self.of(UNCONFIRMED):
            lines.append(f"unconfirmed: {outcome.user}: {outcome.detail}")
        if self.aborted:
            lines.append(f"stopped: {self.aborted}")
        return lines


def contact_unsubscribe(config: Config) -> str | None:
    """A mailto: for the List-Unsubscribe header, when the site contact is an address."""
    address = contact_address(config.site.contact)
    return f"mailto:{address}?subject=unsubscribe" if address else None


class Deliverer:
    """Sends (or, for a dry run, writes) letters according to the configuration."""

    def __init__(
        self,
        config: Config,
        *,
        ledger: Ledger | None = None,
        smtp: SmtpSession | None = None,
        outbox: Path | None = None,
        resend_unconfirmed: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if (outbox is None) == (smtp is None or ledger is None):
            raise ValueError("give either an outbox (dry run) or an SMTP session and a ledger")
        self.config, self.ledger, self.smtp, self.outbox = config, ledger, smtp, outbox
        self.resend_unconfirmed = resend_unconfirmed
        self.sleep = sleep
        self.addresses = AddressBook(config.mail)
        self.policy = RecipientPolicy(config.mail)
        self.throttle = Throttle(config.mail.rate_per_minute, sleep=sleep)
        self.unsubscribe = contact_unsubscribe(config)

    def deliver(
        self, letters: Iterable[RenderedLetter], on_outcome: Callable[[Outcome], None] | None = None
    ) -> DeliveryReport:
        report = DeliveryReport()
        for letter in letters:
            try:
                outcome = self.deliver_one(letter)
            except MailError as exc:  # nothing more can go now: no server, login refused, …
                report.outcomes.append(Outcome(letter.user, FAILED, str(exc)))
                report.aborted = f"{exc}; the letters not sent yet go on the next run"
                break
            report.outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
        return report

    def deliver_one(self, letter: RenderedLetter) -> Outcome:
        user, mail = letter.user, self.config.mail
        reason = self.policy.skip_reason(user)
        if reason is None and letter.problems == 0 and self.config.letters.all_good == "none":
            reason = "no problem found (letters.all_good = none)"
        if reason:
            return Outcome(user, SKIPPED, reason)
        try:
            to = self.addresses.lookup(user)
        except AddressError as exc:
            return Outcome(user, FAILED, str(exc))
        if self.ledger is not None:
            entry = self.ledger.entry(letter.period, user)
            if entry is not None and entry.state == SENT:
                return Outcome(user, ALREADY_SENT, f"on {entry.sent_at}")
            if entry is not None and entry.state == SENDING and not self.resend_unconfirmed:
                return Outcome(user, UNCONFIRMED,
                               f"a run stopped while sending it ({entry.updated_at}); not sent "
                               "again (--resend-unconfirmed sends it)")
        message = build_message(
            letter, sender=mail.sender, to=to, cc=mail.cc, reply_to=mail.reply_to,
            message_id=letter_message_id(letter.period, user, mail.sender),
            unsubscribe=self.unsubscribe,
        )
        if self.outbox is not None:
            return self._write(letter, message.as_bytes())
        self.throttle.wait()
        return self._send(letter, message, to)

    def _write(self, letter: RenderedLetter, data: bytes) -> Outcome:
        assert self.outbox is not None
        folder = self.outbox / letter.period
        path = folder / f"{letter.user}.eml"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise MailError(f"cannot write {path}: {exc.strerror}") from None
        return Outcome(letter.user, WRITTEN, str(path))

    def _send(self, letter: RenderedLetter, message: EmailMessage, to: str) -> Outcome:
        assert self.ledger is not None and self.smtp is not None
        mail, period, user = self.config.mail, letter.period, letter.user
        for attempt in range(1, mail.retry_attempts + 1):
            self.ledger.mark_sending(period, user, message["Message-ID"], [to, *mail.cc])
            try:
                refused = self.smtp.send(message, to, mail.cc)
            except Unconfirmed as exc:
                # The ledger keeps 'sending': the next run will not send it again either.
                return Outcome(user, UNCONFIRMED, str(exc))
            except DeliveryError as exc:
                self.ledger.mark_failed(period, user, str(exc))
                last = attempt == mail.retry_attempts
                if exc.permanent or (last and not isinstance(exc, ServerUnreachable)):
                    return Outcome(user, FAILED, str(exc))
                if last:
                    raise
                self.sleep(mail.retry_backoff_s * 2 ** (attempt - 1))
                continue
            except MailError as exc:  # the login was refused: nothing was handed over
                self.ledger.mark_failed(period, user, str(exc))
                raise
            note = "; ".join(f"refused {a}: {t}" for a, t in refused.items()) or None
            self.ledger.mark_sent(period, user, note)
            return Outcome(user, SENT_NOW, note or to)
        raise AssertionError("unreachable: the loop returns or raises")
