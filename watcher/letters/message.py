"""A letter as a MIME message that shows the same in Outlook, Gmail and a terminal client.

Structure::

    multipart/alternative
      text/plain                 the plain-text letter
      multipart/related
        text/html                the letter, images referenced as cid:<content id>
        image/png (inline) ...   one per chart, with its Content-ID

Header values made from a user name (the analysis id, the Message-ID) use its
:func:`~watcher.letters.view.user_id`, and the subject is one line (:func:`shown`): a name
with a newline can neither break the message nor add a header to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import quote

from watcher.letters.render import RenderedLetter
from watcher.letters.view import SUBJECT_MAX, shown, user_id


def sender_domain(sender: str) -> str:
    """The domain of a From address, for Message-IDs ('localhost' when it has none)."""
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def letter_message_id(period: str, user: str, sender: str) -> str:
    """The same Message-ID for every try of one (period, user) letter.

    Should a letter ever go out twice (see docs/letters.md, "Exactly once"), mail clients
    and servers that drop duplicates by Message-ID show it once. Two users never share one
    (``john_doe`` and ``john-doe`` did once): the user is percent-encoded, dots included,
    which leaves only characters a Message-ID may hold.
    """
    left = quote(user, safe="", errors="surrogatepass").replace(".", "%2E").replace("~", "%7E")
    if len(left) > 100:
        left = left[:60] + "-" + hashlib.sha256(left.encode()).hexdigest()[:16]
    return f"<letter.{quote(period, safe='')}.{left}@{sender_domain(sender)}>"


def analysis_id(letter: RenderedLetter) -> str:
    """``<period>:<user id>``: the id the letter's footer shows, as a header value."""
    return f"{letter.period}:{user_id(letter.user)}"


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
    msg["Subject"] = shown(letter.subject, SUBJECT_MAX)
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = message_id or letter_message_id(letter.period, letter.user, sender)
    # RFC 3834: vacation responders and the like must not answer automatic mail.
    msg["Auto-Submitted"] = "auto-generated"
    if unsubscribe:
        msg["List-Unsubscribe"] = f"<{unsubscribe}>"
    msg["X-Turingwatch-Analysis-Id"] = analysis_id(letter)
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

