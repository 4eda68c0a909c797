"""The one module that talks SMTP: connect (plain, STARTTLS or SSL), log in, hand over letters.

Errors come out as :class:`DeliveryError` (temporary or permanent, for one letter),
:class:`ServerUnreachable` (nothing can be sent now) or :class:`MailError` (configuration).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from watcher.config import MailSettings, expand_path
from watcher.mailer.errors import DeliveryError, MailError


class ServerUnreachable(DeliveryError):
    """The server cannot be reached or dropped the connection: no letter can go right now."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


def read_password(settings: MailSettings) -> str | None:
    if not settings.password_file:
        return None
    path = expand_path(settings.password_file)
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise MailError(f"mail.password_file {path} cannot be read: {exc.strerror}") from None


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

    def send(self, message: EmailMessage, recipients: list[str]) -> dict[str, str]:
        """Hand one letter to the server; return the recipients it refused (others got it).

        Raises DeliveryError when the server took the letter for nobody.
        """
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            refused = self._smtp.send_message(message, to_addrs=recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            answers = {addr: _answer(code, text) for addr, (code, text) in exc.recipients.items()}
            permanent = all(code >= 500 for code, _ in exc.recipients.values())
            raise DeliveryError(
                "; ".join(f"{a}: {t}" for a, t in answers.items()), permanent=permanent
            ) from None
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, …
            self.close()
            raise DeliveryError(
                _answer(exc.smtp_code, exc.smtp_error), permanent=exc.smtp_code >= 500
            ) from None
        except (OSError, smtplib.SMTPException) as exc:  # dropped connection, timeout
            self._drop()
            raise ServerUnreachable(f"SMTP server {self.server}: {exc}") from None
        return {addr: _answer(code, text) for addr, (code, text) in refused.items()}

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
