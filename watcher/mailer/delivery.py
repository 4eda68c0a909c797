"""Send a period's letters: each user at most once, throttled, resumable, with a summary.

The order of events for one letter, and what a crash at each point leaves behind:

1. ledger row 'sent' already: skip (a re-run, or a run that resumed).
2. ledger row 'sending' left by an earlier run: *unconfirmed*. That run stopped while the
   server was taking the letter (step 5), after or before the server queued it; nobody can
   know which. To never send a letter twice it is not sent again until an admin has looked
   for its Message-ID in the mail server's log and said what they found:
   ``mail --period P --mark-sent USER`` (it arrived) or ``--resend USER`` (it did not; the
   re-send has the same Message-ID, so clients that drop duplicates show it once). Until
   then every run with a ledger warns about it with what to check, counts it in the summary
   and exits non-zero, whatever period it mails: the ledger's unconfirmed letters of other
   periods are reported too. ``resend_unconfirmed`` re-sends all of this run's.
3. the letter is addressed and its message built. A user with no usable address, or a
   message that cannot be built, is 'failed' in the summary (the ledger is not touched) and
   the other letters go on.
4. connect (once per run, lazily), log in, MAIL FROM, RCPT TO (the user, then the Cc list).
   A crash here leaves the ledger as it was: the server has nothing, and the next run sends
   the letter. A refusal or a broken connection writes 'failed'; a temporary one is retried
   in this run first, with back-off, and a server that cannot be reached stops the run.
5. write 'sending' (synced to disk), then DATA hands the server the letter's text. A crash
   from here to step 6, or the connection breaking before the server's answer, leaves
   'sending': unconfirmed (step 2). The window between the ledger write and DATA, where the
   server still has nothing, is the price of never sending twice.
6. the server answered: 250 writes 'sent' (a refused Cc address is noted in it); any other
   answer writes 'failed', and the next run tries again.

A ledger that cannot be written (LedgerError) stops the run before the letter goes.
"""

from __future__ import annotations

import email.errors
import email.policy
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from watcher.config import Config
from watcher.files import atomic_write
from watcher.letters.bundle import check_period_id
from watcher.letters.message import build_message, letter_message_id
from watcher.letters.render import RenderedLetter
from watcher.letters.view import contact_address, shown, user_id
from watcher.mailer.addresses import AddressBook
from watcher.mailer.errors import AddressError, DeliveryError, MailError, Unconfirmed
from watcher.mailer.ledger import SENDING, SENT, Ledger, LedgerEntry, LedgerError
from watcher.mailer.recipients import RecipientPolicy
from watcher.mailer.smtp import ServerUnreachable, SmtpSession
from watcher.mailer.throttle import Throttle

# Outcomes, as the summary counts them.
SENT_NOW, WRITTEN, ALREADY_SENT = "sent", "written", "already sent"
SKIPPED, UNCONFIRMED, FAILED = "skipped", "unconfirmed", "failed"

log = logging.getLogger(__name__)

# An address a server can be given: one @, no space, control character or address syntax.
_USABLE_ADDRESS = re.compile(r'[^\s<>(),;:"\[\]\\@]+@[^\s<>(),;:"\[\]\\@]+')


@dataclass(frozen=True)
class Outcome:
    user: str
    status: str
    detail: str = ""
    period: str = ""


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
        """Nothing needs anyone: no failure, no unconfirmed letter, the run went to its end."""
        return self.aborted is None and not self.of(FAILED) and not self.of(UNCONFIRMED)

    def summary(self) -> list[str]:
        """A line of counts, then one line per letter that needs someone's attention.

        Users are named by their user_id: a login as it is, any other name escaped, so that
        no name can garble the terminal or the log it is shown in.
        """
        counts = self.count()
        order = (SENT_NOW, WRITTEN, ALREADY_SENT, SKIPPED, UNCONFIRMED, FAILED)
        lines = [", ".join(f"{counts[s]} {s}" for s in order if counts[s]) or "no letters"]
        for outcome in self.of(FAILED):
            lines.append(f"failed: {user_id(outcome.user)}: {outcome.detail} (tried again next run)")
        for outcome in self.of(UNCONFIRMED):
            lines.append(f"unconfirmed: {user_id(outcome.user)}: {outcome.detail}")
        if self.aborted:
            lines.append(f"stopped: {self.aborted}")
        return lines


def contact_unsubscribe(config: Config) -> str | None:
    """A mailto: for the List-Unsubscribe header, when the site contact is an address."""
    address = contact_address(config.site.contact)
    return f"mailto:{address}?subject=unsubscribe" if address else None


def what_to_check(period: str, user: str, message_id: str) -> str:
    """How an admin resolves an unconfirmed letter (see docs/letters.md, "Exactly once")."""
    who = user_id(user)
    return (f"look for {message_id} in the mail server's log, then run 'turingwatch mail "
            f"--period {period} --mark-sent {who}' if it arrived, or '--resend {who}' if not")


def usable_address(address: str) -> bool:
    """Whether ``address`` can be given to a server and put in a header as it is."""
    return address.isprintable() and _USABLE_ADDRESS.fullmatch(address) is not None


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
        resend: Collection[str] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if (outbox is None) == (smtp is None or ledger is None):
            raise ValueError("give either an outbox (dry run) or an SMTP session and a ledger")
        self.config, self.ledger, self.smtp, self.outbox = config, ledger, smtp, outbox
        self.resend_unconfirmed = resend_unconfirmed
        self.resend = frozenset(resend)         # users whose unconfirmed letter goes again
        self.sleep = sleep
        self.addresses = AddressBook(config.mail)
        self.policy = RecipientPolicy(config.mail)
        self.throttle = Throttle(config.mail.rate_per_minute, sleep=sleep)
        self.unsubscribe = contact_unsubscribe(config)

    def deliver(
        self, letters: Iterable[RenderedLetter], on_outcome: Callable[[Outcome], None] | None = None
    ) -> DeliveryReport:
        """Deliver ``letters`` in order; then report the ledger's other unconfirmed letters
        (other periods, users not in this run), which need an admin as much."""
        report = DeliveryReport()
        earlier = {(e.period, e.user): e for e in self.ledger.unconfirmed()} if self.ledger else {}
        for letter in letters:
            earlier.pop((letter.period, letter.user), None)
            try:
                outcome = self.deliver_one(letter)
            except MailError as exc:  # nothing more can go now: no server, login refused, …
                report.outcomes.append(Outcome(letter.user, FAILED, str(exc), letter.period))
                report.aborted = f"{exc}; the letters not sent yet go on the next run"
                break
            report.outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
        for entry in earlier.values():
            report.outcomes.append(self._unconfirmed(entry, f"its letter of {entry.period}: "))
        return report

    def _unconfirmed(self, entry: LedgerEntry, where: str = "") -> Outcome:
        check = what_to_check(entry.period, entry.user, entry.message_id)
        log.warning("the letter of %s for %s is unconfirmed: a run stopped while the server was "
                    "taking it (%s); %s", user_id(entry.user), entry.period, entry.updated_at, check)
        return Outcome(entry.user, UNCONFIRMED,
                       f"{where}a run stopped while sending it ({entry.updated_at}); not sent "
                       f"again until resolved: {check}", entry.period)

    def deliver_one(self, letter: RenderedLetter) -> Outcome:
        user, period, mail = letter.user, letter.period, self.config.mail
        try:
            reason = self.policy.skip_reason(user)
            if reason is None and letter.problems == 0 and self.config.letters.all_good == "none":
                reason = "no problem found (letters.all_good = none)"
            to = None if reason else self.addresses.lookup(user)
        except AddressError as exc:
            return Outcome(user, FAILED, str(exc), period)
        except ValueError as exc:  # the passwd database refuses the name (a NUL byte in it)
            return Outcome(user, FAILED, f"cannot look up the user: {exc}", period)
        if reason or to is None:
            return Outcome(user, SKIPPED, reason or "", period)
        if not usable_address(to):
            return Outcome(user, FAILED, f"no usable e-mail address ({shown(to)!r} is none): set "
                           "one in mail.address_map_file or the GECOS field", period)
        entry = self.ledger.entry(period, user) if self.ledger is not None else None
        if entry is not None and entry.state == SENT:
            return Outcome(user, ALREADY_SENT, f"on {entry.sent_at}", period)
        if entry is not None and entry.state == SENDING and not (
                self.resend_unconfirmed or user in self.resend):
            return self._unconfirmed(entry)
        try:
            message = build_message(
                letter, sender=mail.sender, to=to, cc=mail.cc, reply_to=mail.reply_to,
                # A re-send keeps the Message-ID the first try had.
                message_id=entry.message_id if entry else letter_message_id(period, user,
                                                                            mail.sender),
                unsubscribe=self.unsubscribe,
            )
            data = message.as_bytes(policy=email.policy.SMTP)   # what the server would get
        except (ValueError, TypeError, email.errors.MessageError) as exc:
            log.error("the letter of %s for %s cannot be made a message: %s", user_id(user),
                      period, exc, exc_info=True)
            return Outcome(user, FAILED, f"the message cannot be built: {exc}", period)
        if self.outbox is not None:
            return self._write(letter, data)
        self.throttle.wait()
        return self._send(letter, message, to)

    def _write(self, letter: RenderedLetter, data: bytes) -> Outcome:
        assert self.outbox is not None
        # Both names come from a bundle: the period is checked and the user escaped, so the
        # file lands in <outbox>/<period>/ whatever the bundle says.
        folder = self.outbox / check_period_id(letter.period)
        path = folder / f"{user_id(letter.user)}.eml"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data, mode=0o600)
        except OSError as exc:
            raise MailError(f"cannot write {path}: {exc.strerror}") from None
        return Outcome(letter.user, WRITTEN, str(path), letter.period)

    def _send(self, letter: RenderedLetter, message: EmailMessage, to: str) -> Outcome:
        assert self.ledger is not None and self.smtp is not None
        ledger, mail, period, user = self.ledger, self.config.mail, letter.period, letter.user
        message_id, recipients = str(message["Message-ID"]), [to, *mail.cc]
        for attempt in range(1, mail.retry_attempts + 1):
            handed = False

            def hand_over() -> None:
                # MAIL FROM and RCPT TO were accepted: from now on the server may get it.
                nonlocal handed
                ledger.mark_sending(period, user, message_id, recipients)
                handed = True

            try:
                refused = self.smtp.send(message, to, mail.cc, before_data=hand_over)
            except Unconfirmed as exc:
                # The ledger keeps 'sending': the next run will not send it again either.
                check = what_to_check(period, user, message_id)
                log.warning("the letter of %s for %s is unconfirmed: %s; %s", user_id(user),
                            period, exc, check)
                return Outcome(user, UNCONFIRMED, f"{exc}; {check}", period)
            except LedgerError:
                raise
            except DeliveryError as exc:
                ledger.mark_failed(period, user, str(exc), before_data=not handed,
                                   message_id=message_id, recipients=recipients)
                last = attempt == mail.retry_attempts
                if exc.permanent or (last and not isinstance(exc, ServerUnreachable)):
                    return Outcome(user, FAILED, str(exc), period)
                if last:
                    raise
                self.sleep(mail.retry_backoff_s * 2 ** (attempt - 1))
                continue
            except MailError as exc:  # the login was refused: nothing was handed over
                ledger.mark_failed(period, user, str(exc), before_data=not handed,
                                   message_id=message_id, recipients=recipients)
                raise
            note = "; ".join(f"refused {a}: {t}" for a, t in refused.items()) or None
            ledger.mark_sent(period, user, note)
            return Outcome(user, SENT_NOW, note or to, period)
        raise AssertionError("unreachable: the loop returns or raises")
