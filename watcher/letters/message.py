"""A letter as a MIME message that shows the same in Outlook, Gmail and a terminal client.

Structure::

    multipart/alternative
      text/plain                 the plain-text letter
      multipart/related
        text/html                the letter, images referenced as cid:<content id>
        image/png (inline) ...   one per chart, with its Content-ID
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from watcher.letters.render import RenderedLetter


def sender_domain(sender: str) -> str:
    """The domain of a From address, for Message-IDs ('localhost' when it has none)."""
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def letter_message_id(period: str, user: str, sender: str) -> str:
    """The same Message-ID for every try of one (period, user) letter.

    Should a letter ever go out twice (see docs/letters.md, "Exactly once"), mail clients
    and servers that drop duplicates by Message-ID show it once.
    """
    safe = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{period}.{user}")
    return f"<letter.{safe}@{sender_domain(sender)}>"


def build_message(
    letter: RenderedLetter,
    *,
    sender: str,
    to: str,
    cc: Sequence[str] = (),
    reply_to: str = "",
    message_id: str | None = None,
    unsubscribe: str | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """The letter with its headers, text and HTML alternatives and inline images."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = ", ".join(cc)
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = letter.subject
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = message_id or letter_message_id(letter.period, letter.user, sender)
    # RFC 3834: vacation responders and the like must not answer automatic mail.
    msg["Auto-Submitted"] = "auto-generated"
    if unsubscribe:
        msg["List-Unsubscribe"] = f"<{unsubscribe}>"
    msg["X-Turingwatch-Analysis-Id"] = letter.analysis_id
    msg.set_content(letter.text)
    msg.add_alternative(letter.html, subtype="html")
    if letter.images:
        html_part = msg.get_payload()[1]
        for cid, png in letter.images.items():
            html_part.add_related(
                png, maintype="image", subtype="png", cid=f"<{cid}>",
                filename=cid.partition("@")[0] + ".png", disposition="inline",
            )
    return msg

