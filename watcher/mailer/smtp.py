"""The one module that talks SMTP: connect (plain, STARTTLS or SSL), log in, hand over letters.

Errors come out as :class:`DeliveryError` (temporary or permanent, for one letter),
:class:`ServerUnreachable` (nothing can be sent now) or :class:`MailError` (configuration).
"""

from __future__ import annotations

import email.policy
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import parseaddr

from watcher.config import MailSettings, read_secret
from watcher.errors import ConfigError
from watcher.mailer.errors import DeliveryError, MailError, Unconfirmed


class ServerUnreachable(DeliveryError):
    """The server cannot be reached or dropped the connection: no letter can go right now."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


def read_password(settings: MailSettings) -> str | None:
    """The SMTP password from ``mail.password_file``; None when no file is configured."""
    try:
        return read_secret(settings, "password_file")
    except ConfigError as exc:  # a mail configuration problem, reported as the mailer's own
        raise MailError(str(exc)) from None


def _answer(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


class SmtpSession:
    """A lazily opened, reused SMTP connection. Use as a context manager."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self.password = read_password(settings)
        self._smtp: smtplib.SMTP | None = None

    @property
    def server(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.timeout_s,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout_s)
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if s.username:
                smtp.login(s.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(
                f"SMTP server {self.server} refused the login of {s.username!r}: "
                f"{_answer(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise MailError(f"SMTP server {self.server}: {exc} (check mail.security)") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise ServerUnreachable(f"cannot connect to SMTP server {self.server}: {exc}") from None
        return smtp

    def send(
        self,
        message: EmailMessage,
        to: str,
        cc: list[str] | None = None,
        before_data: Callable[[], None] | None = None,
    ) -> dict[str, str]:
        """Hand one letter to the server; return the Cc addresses it refused.

        The main recipient comes first and alone: when the server refuses it, the transaction
        is abandoned before DATA, so no copy reaches the Cc list either (and a later retry
        cannot give the Cc list a second one). Raises DeliveryError then, and Unconfirmed when
        the connection fails after the letter's text went out.

        ``before_data`` is called once the server accepted MAIL FROM and RCPT TO, right before
        DATA: up to there the server has nothing, and any failure (connecting, the login, a
        refusal, a dropped connection) leaves the letter plainly unsent. When it raises, the
        transaction is abandoned (RSET) and its exception goes on.
        """
        data = message.as_bytes(policy=email.policy.SMTP)
        if self._smtp is None:
            self._smtp = self._connect()
        smtp = self._smtp
        sender = parseaddr(str(message["From"]))[1]
        try:
            smtp.ehlo_or_helo_if_needed()
            code, text = smtp.mail(sender)
            if code != 250:
                self._abandon(code, text, f"sender {sender}")
            code, text = smtp.rcpt(to)
            if code not in (250, 251):
                self._abandon(code, text, to)
            refused = {}
            for address in cc or []:
                code, text = smtp.rcpt(address)
                if code not in (250, 251):
                    refused[address] = _answer(code, text)
            if before_data is not None:
                try:
                    before_data()
                except BaseException:
                    self._reset()
                    raise
            try:
                code, text = smtp.data(data)
            except smtplib.SMTPDataError as exc:  # DATA itself refused: nothing was sent
                self._abandon(exc.smtp_code, exc.smtp_error, "message")
            except (OSError, smtplib.SMTPServerDisconnected) as exc:
                self._drop()
                raise Unconfirmed(
                    f"SMTP server {self.server} stopped answering while taking the letter: {exc}"
                ) from None
            if code != 250:
                self._abandon(code, text, "message")
        except smtplib.SMTPServerDisconnected as exc:
            self._drop()
            raise ServerUnreachable(f"SMTP server {self.server} hung up: {exc}") from None
        except (OSError, smtplib.SMTPException) as exc:  # a timeout, a reset connection
            self._drop()
            raise ServerUnreachable(f"SMTP server {self.server}: {exc}") from None
        return refused

    def _abandon(self, code: int, text: bytes, what: str) -> None:
        self._reset()
        raise DeliveryError(f"{what}: {_answer(code, text)}", permanent=code >= 500)

    def _reset(self) -> None:
        """End the transaction so that the connection can take the next letter."""
        try:
            self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        """Say goodbye politely when the connection is still alive."""
        if self._smtp is None:
            return
        try:
            self._smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            self._drop()

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
