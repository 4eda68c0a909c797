"""Who is never written to: the skip list, service accounts and users who opted out."""

from __future__ import annotations

import fnmatch
import pwd
from pathlib import Path

from watcher.config import MailSettings, NotText, expand_path, read_text_file
from watcher.mailer.errors import MailError


def read_opt_outs(path: Path) -> set[str]:
    """Users listed one a line; a missing file means nobody opted out yet."""
    try:
        text = read_text_file(path)
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise MailError(f"opt-out file {path} cannot be read: {exc.strerror}") from None
    except NotText as exc:
        raise MailError(f"opt-out file {path} {exc}") from None
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}


class RecipientPolicy:
    """Decides, per user, whether letters may be sent, and says why not."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self.opted_out = (
            read_opt_outs(expand_path(settings.opt_out_file)) if settings.opt_out_file else set()
        )

    def skip_reason(self, user: str) -> str | None:
        """None when the user may get letters, else a short reason for the run's summary."""
        if any(fnmatch.fnmatchcase(user, pattern) for pattern in self.settings.skip_users):
            return "skip list"
        if user in self.opted_out:
            return "opted out"
        if self.settings.skip_system_accounts:
            try:
                uid = pwd.getpwnam(user).pw_uid
            except KeyError:
                uid = None  # not known on this host: cannot tell, so do not guess
            if uid is not None and uid < self.settings.min_uid:
                return f"service account (uid {uid})"
        return None
