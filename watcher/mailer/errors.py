"""What can go wrong while addressing and delivering letters."""

from __future__ import annotations

from watcher.errors import TuringwatchError


class MailError(TuringwatchError):
    """A letter cannot be addressed or delivered; the message says which and why."""


class AddressError(MailError):
    """No e-mail address is known for a user."""


class DeliveryError(MailError):
    """The SMTP server did not take a letter.

    ``permanent`` is True for 5xx answers (a refused recipient, a rejected message): trying again
    in this run would give the same answer. Connection trouble and 4xx answers are temporary.
    """

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Unconfirmed(MailError):
    """The server got the letter's text but its answer never came: it may have queued the
    letter or not, and nobody can tell which."""
