"""Delivering letters: addresses, who is skipped, the sent-ledger, throttling and SMTP."""

from watcher.mailer.errors import AddressError, DeliveryError, MailError
from watcher.mailer.report_card import send_report_card

__all__ = ["AddressError", "DeliveryError", "MailError", "send_report_card"]
