"""``turingwatch run --mail``: the job's own report card, mailed to its owner at job end."""

from __future__ import annotations

import time
from email.utils import make_msgid

from watcher.config import Config
from watcher.letters.message import build_message, sender_domain
from watcher.letters.render import RenderedLetter
from watcher.mailer.addresses import AddressBook
from watcher.mailer.errors import DeliveryError, MailError
from watcher.mailer.smtp import SmtpSession


def send_report_card(
    config: Config,
    user: str,
    subject: str,
    html: str,
    text: str,
    images: dict[str, bytes] | None = None,
) -> None:
    """Mail one report card to ``user``; raise MailError saying why when it cannot.

    ``images`` maps Content-IDs to PNG bytes; ``html`` refers to them as ``cid:<content id>``.
    The skip list and the sent-ledger do not apply: the user asked for this mail, and each
    job's card is sent once, by the job itself. Temporary SMTP errors are retried as for
    period letters (mail.retry_attempts, mail.retry_backoff_s).
    """
    mail = config.mail
    to = AddressBook(mail).lookup(user)
    card = RenderedLetter(user, "job", subject, html, text, dict(images or {}), problems=0)
    message = build_message(card, sender=mail.sender, to=to, reply_to=mail.reply_to,
                            message_id=make_msgid("report-card", sender_domain(mail.sender)))
    with SmtpSession(mail) as smtp:
        for attempt in range(1, mail.retry_attempts + 1):
            try:
                smtp.send(message, to)
            except DeliveryError as exc:
                if exc.permanent or attempt == mail.retry_attempts:
                    raise MailError(f"report card for {user} <{to}> not sent: {exc}") from None
                time.sleep(mail.retry_backoff_s * 2 ** (attempt - 1))
                continue
            return
