"""Who sent a batch: munge credentials, or, for sites without munge, a shared-key HMAC.

Shared floor: the senders (``run``, ``attach``, ``ingest --send``) sign a request body, the
server verifies it. Either way what is signed is the lowercase hex SHA-256 of the body, so a
body changed after signing is refused, and the server learns the sender's uid from munged (or,
in HMAC mode, from the signed header: only holders of the key, root and the server, can sign).

Headers (``Authorization``):
  MUNGE <credential>                          payload: the body's digest, nothing else
  HMAC uid=<uid>,ts=<unix seconds>,sig=<hex>  sig: HMAC-SHA256(key, "v1\\n{uid}\\n{ts}\\n{digest}")
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

from watcher.auth.munge import Munge, MungeError
from watcher.config import AuthSettings, read_secret
from watcher.errors import TuringwatchError

__all__ = ["AuthError", "Sender", "Signer", "Verifier", "body_digest"]

_HMAC_HEADER = re.compile(r"HMAC uid=(\d{1,10}),ts=(\d{1,12}),sig=([0-9a-f]{64})")


class AuthError(TuringwatchError):
    """A request's credential was refused. ``reason`` is what ``/metrics`` counts it as:
    missing, malformed, expired, replayed, digest (signed another body), invalid, unavailable
    (the server cannot check credentials now: munged is down)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Sender:
    uid: int
    gid: int | None
    via: str            # "munge" or "hmac"


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _hmac_key(settings: AuthSettings) -> bytes:
    key = read_secret(settings, "hmac_key_file")
    if not key:
        raise AuthError("unavailable", "auth.mode is hmac but auth.hmac_key_file names no key")
    return key.encode("utf-8")


def _hmac_sig(key: bytes, uid: int, ts: int, digest: str) -> str:
    return hmac.new(key, f"v1\n{uid}\n{ts}\n{digest}".encode(), hashlib.sha256).hexdigest()


class Signer:
    """Makes the ``Authorization`` header of a body for this process's user."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._munge = Munge(settings.munge_socket) if settings.mode == "munge" else None
        self._key = _hmac_key(settings) if settings.mode == "hmac" else None

    def authorization(self, body: bytes) -> str:
        digest = body_digest(body)
        if self._munge is not None:
            try:
                cred = self._munge.encode(digest.encode("ascii"), ttl_s=int(self.settings.max_age_s))
            except MungeError as exc:
                raise AuthError(exc.reason, str(exc)) from None
            return f"MUNGE {cred}"
        assert self._key is not None
        uid, ts = os.geteuid(), int(time.time())
        return f"HMAC uid={uid},ts={ts},sig={_hmac_sig(self._key, uid, ts, digest)}"


class Verifier:
    """Checks a request's ``Authorization`` header against its body: the server's side.

    Raises AuthError at construction when the configured mode cannot work (no libmunge nor
    unmunge, no key), so that the server refuses to start rather than refuse every sender.
    """

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.mode = settings.mode
        self._munge = Munge(settings.munge_socket) if settings.mode == "munge" else None
        self._key = _hmac_key(settings) if settings.mode == "hmac" else None

    def check(self) -> str:
        """Prove the mode works now (munged answers); the words for /healthz."""
        if self._munge is None:
            return "hmac"
        try:
            got = self._munge.decode(self._munge.encode(b"healthz", ttl_s=10))
        except MungeError as exc:
            raise AuthError("unavailable", f"munge does not work here: {exc}") from None
        if got.payload != b"healthz":
            raise AuthError("unavailable", "munge gave back another payload than it was given")
        return f"munge ({self._munge.via})"

    def verify(self, header: str | None, body: bytes) -> Sender:
        if not header:
            raise AuthError("missing", "no Authorization header: sign the body (MUNGE or HMAC)")
        scheme, _, value = header.strip().partition(" ")
        if scheme == "MUNGE" and self._munge is not None:
            return self._verify_munge(value.strip(), body)
        if scheme == "HMAC" and self._key is not None:
            return self._verify_hmac(header.strip(), body)
        raise AuthError("malformed", f"this server takes Authorization: {self.mode.upper()} ...")

    def _verify_munge(self, credential: str, body: bytes) -> Sender:
        assert self._munge is not None
        if not credential or len(credential) > 65536:
            raise AuthError("malformed", "the MUNGE credential is empty or too long")
        try:
            got = self._munge.decode(credential)
        except MungeError as exc:
            raise AuthError(exc.reason, str(exc)) from None
        if got.encoded_at is not None and time.time() - got.encoded_at > self.settings.max_age_s:
            raise AuthError("expired", f"the credential is older than auth.max_age_s "
                                       f"({self.settings.max_age_s:g} s)")
        if not hmac.compare_digest(got.payload, body_digest(body).encode("ascii")):
            raise AuthError("digest", "the credential signs another body than this one")
        return Sender(got.uid, got.gid, "munge")

    def _verify_hmac(self, header: str, body: bytes) -> Sender:
        assert self._key is not None
        match = _HMAC_HEADER.fullmatch(header)
        if not match:
            raise AuthError("malformed", "HMAC header is not 'HMAC uid=N,ts=N,sig=<64 hex>'")
        uid, ts, sig = int(match[1]), int(match[2]), match[3]
        if not hmac.compare_digest(sig, _hmac_sig(self._key, uid, ts, body_digest(body))):
            raise AuthError("digest", "the HMAC does not sign this body with this server's key")
        if abs(time.time() - ts) > self.settings.max_age_s:
            raise AuthError("expired", f"the HMAC's time is more than auth.max_age_s "
                                       f"({self.settings.max_age_s:g} s) from the server's")
        return Sender(uid, None, "hmac")
