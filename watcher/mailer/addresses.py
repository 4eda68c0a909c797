"""Who a user's letters go to: a mapping file, the GECOS field, or ``<user>@<domain>``."""

from __future__ import annotations

import pwd
import re
from pathlib import Path

from watcher.config import MailSettings, NotText, expand_path, read_text_file
from watcher.mailer.errors import AddressError, MailError

# Good enough to tell an address from a full name or a room number in a GECOS field.
_ADDRESS = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def read_address_map(path: Path) -> dict[str, str]:
    """Parse a file of ``user address`` lines; blank lines and ``#`` comments are ignored."""
    try:
        lines = read_text_file(path).splitlines()
    except OSError as exc:
        raise MailError(f"address map {path} cannot be read: {exc.strerror}") from None
    except NotText as exc:
        raise MailError(f"address map {path} {exc}") from None
    mapping: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not _ADDRESS.fullmatch(parts[1]):
            raise MailError(f"{path}:{number}: expected 'user address', got {line!r}")
        mapping[parts[0]] = parts[1]
    return mapping


def first_address(text: str) -> str | None:
    """The first e-mail address in a GECOS field such as 'Alice L.,Room 4,,,alice@uni.example'."""
    found = _ADDRESS.search(text)
    return found.group(0) if found else None


def gecos_address(user: str) -> str | None:
    """The address in the user's GECOS field, as ``getent passwd <user>`` shows it."""
    try:
        return first_address(pwd.getpwnam(user).pw_gecos)
    except KeyError:
        return None


class AddressBook:
    """Resolves users to addresses, first match wins: map file, GECOS, ``<user>@<domain>``."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self.mapping = (
            read_address_map(expand_path(settings.address_map_file))
            if settings.address_map_file
            else {}
        )

    def lookup(self, user: str) -> str:
        if user in self.mapping:
            return self.mapping[user]
        if self.settings.use_gecos:
            found = gecos_address(user)
            if found:
                return found
        if self.settings.domain:
            return f"{user}@{self.settings.domain}"
        raise AddressError(
            f"no e-mail address for user {user}: not in the address map"
            + (", no address in GECOS" if self.settings.use_gecos else "")
            + " and mail.domain is not set"
        )
