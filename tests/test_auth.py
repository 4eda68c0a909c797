"""Signing and verifying request bodies: the HMAC mode here, munge against the cluster's munged
(libmunge through ctypes, and the munge/unmunge commands, which must agree)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from watcher.auth import AuthError, Signer, Verifier
from watcher.auth.munge import Munge, MungeError
from watcher.config import AuthSettings

SOCKET = "/tmp/turingwatch-slurm/munge/socket"


@pytest.fixture
def hmac_settings(tmp_path) -> AuthSettings:
    key = tmp_path / "key"
    key.write_text("s3cret-" * 8)
    key.chmod(0o600)
    return AuthSettings(mode="hmac", hmac_key_file=str(key))


def test_hmac_signs_the_body_and_the_sender(hmac_settings):
    body = b'{"k":"session"}\n'
    header = Signer(hmac_settings).authorization(body)
    sender = Verifier(hmac_settings).verify(header, body)
    assert (sender.uid, sender.via) == (os.geteuid(), "hmac")
    reasons = {}
    for what, (h, b) in {
        "another body": (header, body + b"x"),
        "another uid": (header.replace(f"uid={os.geteuid()},", "uid=4242,"), body),
        "no header": (None, body),
        "garbage": ("HMAC nope", body),
        "munge to an hmac server": ("MUNGE xyz", body),
    }.items():
        with pytest.raises(AuthError) as err:
            Verifier(hmac_settings).verify(h, b)
        reasons[what] = err.value.reason
    assert reasons == {"another body": "digest", "another uid": "digest", "no header": "missing",
                       "garbage": "malformed", "munge to an hmac server": "malformed"}


def test_an_old_hmac_is_expired(hmac_settings, monkeypatch):
    body = b"x\n"
    header = Signer(hmac_settings).authorization(body)
    monkeypatch.setattr(time, "time", lambda: 10.0**10)   # the server clock, years later
    with pytest.raises(AuthError) as err:
        Verifier(hmac_settings).verify(header, body)
    assert err.value.reason == "expired"


def test_a_key_others_can_read_or_no_key_is_refused(hmac_settings, tmp_path):
    Path(hmac_settings.hmac_key_file).chmod(0o644)
    with pytest.raises(Exception, match="can be read by every user"):
        Verifier(hmac_settings)
    with pytest.raises(AuthError, match="names no key"):
        Verifier(replace(hmac_settings, hmac_key_file=""))


def test_munge_without_munged_says_unavailable(tmp_path):
    settings = AuthSettings(mode="munge", munge_socket=str(tmp_path / "none"))
    with pytest.raises(AuthError) as err:
        Verifier(settings).check()
    assert err.value.reason == "unavailable"


@pytest.mark.slurm
@pytest.mark.parametrize("library", ["auto", None], ids=["libmunge", "commands"])
def test_munge_both_ways(library):
    if not Path(SOCKET).exists():
        pytest.skip("no munged from scripts/slurm-cluster.sh")
    munge = Munge(SOCKET, library=library)
    if library == "auto" and munge.via != "libmunge":
        pytest.skip("no libmunge.so.2 here")
    cred = munge.encode(b"payload")
    got = munge.decode(cred)
    assert (got.payload, got.uid, got.gid) == (b"payload", os.geteuid(), os.getegid())
    assert abs(got.encoded_at - time.time()) < 60
    with pytest.raises(MungeError) as err:
        munge.decode(cred)
    assert err.value.reason == "replayed"
    tampered = cred[:20] + ("A" if cred[20] != "A" else "B") + cred[21:]
    with pytest.raises(MungeError) as err:
        munge.decode(tampered)
    assert err.value.reason == "invalid"
    short = munge.encode(b"p", ttl_s=1)
    time.sleep(2.2)
    with pytest.raises(MungeError) as err:
        munge.decode(short)
    assert err.value.reason == "expired"
    # The other way decodes what this one encoded.
    other = Munge(SOCKET, library=None if library else "auto")
    assert other.decode(munge.encode(b"both")).payload == b"both"
