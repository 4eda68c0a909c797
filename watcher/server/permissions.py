"""Who may send what: the rule the server applies to every batch before it journals it.

root and ``auth.service_users`` send for any job and for node-wide sessions (the node scraper,
the distributor). Any other uid sends only for jobs Slurm says are its own, and for sessions
outside Slurm of its own name; never for a session stored as another user's, and never more for
a session that has ended (its samples are final). The sender's uid comes from its credential
(munged, or the signed HMAC header), never from what the batch says.
"""

from __future__ import annotations

import logging
import pwd
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from watcher.auth import Sender
from watcher.config import AuthSettings
from watcher.errors import SlurmError, TuringwatchError

log = logging.getLogger(__name__)


class Refused(TuringwatchError):
    """A batch this sender may not send: ``status`` is the HTTP answer (403, 409, 503) and
    ``reason`` the label ``/metrics`` counts it under."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class StoredSession:
    user_name: str | None
    job_id: int | None
    node: str
    ended: bool


JobOwner = Callable[[int], "str | None"]   # a job id -> its owner's name, from Slurm


class Permissions:
    def __init__(self, settings: AuthSettings, job_owner: JobOwner,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._job_owner = job_owner
        self._clock = clock
        self._owners: dict[int, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def trusted(self, uid: int) -> bool:
        return uid == 0 or user_name(uid) in self.settings.service_users

    def check(self, sender: Sender, session: Mapping[str, Any], stored: StoredSession | None) -> None:
        """Raise Refused unless ``sender`` may send lines of ``session`` (its session line's
        fields; ``stored``: what the store or the journal holds of it already)."""
        if self.trusted(sender.uid):
            return
        name = user_name(sender.uid)
        if name is None:
            raise Refused(403, "unknown_uid", f"uid {sender.uid} has no account on the server")
        claimed = session.get("user_name")
        if claimed != name:
            raise Refused(403, "forged", f"the session says it is {claimed or 'nobody'}'s; "
                                         f"{name} sends only their own")
        if stored is not None:
            if stored.user_name != name:
                raise Refused(403, "forged", f"session {session.get('session_id')} is "
                                             f"{stored.user_name}'s, not {name}'s")
            if stored.ended:
                raise Refused(409, "ended", f"session {session.get('session_id')} has ended: "
                                            "its samples are final")
        job_id = session.get("job_id")
        if job_id is None:
            if session.get("mode") == "node":
                raise Refused(403, "forged", "node-wide sessions come from root or "
                                             "auth.service_users only")
            return
        owner = self.owner(int(job_id))
        if owner is None:
            raise Refused(403, "forged", f"Slurm knows no job {job_id}")
        if owner != name:
            raise Refused(403, "forged", f"job {job_id} is {owner}'s in Slurm, not {name}'s")

    def owner(self, job_id: int) -> str | None:
        """The job's owner as Slurm says, remembered ``auth.owner_cache_s`` (an unknown job
        only briefly: it may have been submitted a moment ago)."""
        now = self._clock()
        with self._lock:
            hit = self._owners.get(job_id)
        if hit is not None and now < hit[0]:
            return hit[1]
        try:
            owner = self._job_owner(job_id)
        except SlurmError as exc:
            raise Refused(503, "slurm", f"cannot ask Slurm who owns job {job_id}: {exc}") from None
        keep = self.settings.owner_cache_s if owner is not None else min(10.0, self.settings.owner_cache_s)
        with self._lock:
            if len(self._owners) > 100_000:
                self._owners.clear()   # a bound, not an LRU: refilled from Slurm as needed
            self._owners[job_id] = (now + keep, owner)
        return owner


def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
