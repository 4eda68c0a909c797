"""munge credentials through the system's libmunge (ctypes), else the munge/unmunge commands.

A credential carries a payload, the uid and gid of the process that encoded it, and the time it
was encoded; munged refuses to decode one that expired (its TTL) or that it decoded before (a
replay). Both ways give the same :class:`Decoded` and the same :class:`MungeError` codes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache

from watcher.errors import TuringwatchError

# munge.h: munge_opt_t and munge_err_t (stable since munge 0.5).
_OPT_TTL, _OPT_ENCODE_TIME, _OPT_SOCKET = 4, 6, 8
EXPIRED, REWOUND, REPLAYED = 15, 16, 17
SOCKET = 6
# What each refusal means to a caller that answers a request.
REASONS = {EXPIRED: "expired", REWOUND: "expired", REPLAYED: "replayed", SOCKET: "unavailable"}
# unmunge exits with the error number and, for some, says nothing.
_NAMES = {EXPIRED: "Expired credential", REWOUND: "Rewound credential, future ctime",
          REPLAYED: "Replayed credential", 14: "Invalid credential", 8: "Invalid credential format"}


class MungeError(TuringwatchError):
    """munge refused: ``code`` is munge's error number, ``reason`` what it means here."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"munge: {message}")
        self.code = code
        self.reason = REASONS.get(code, "invalid")


@dataclass(frozen=True)
class Decoded:
    payload: bytes
    uid: int
    gid: int
    encoded_at: int | None = None   # seconds since the epoch, as munged saw it


class Munge:
    """Encode and decode through munged at ``socket`` ("": munge's own default)."""

    def __init__(self, socket: str = "", *, library: str | None = "auto") -> None:
        self.socket = socket
        self._lib = _library() if library == "auto" else (_load(library) if library else None)

    @property
    def via(self) -> str:
        return "libmunge" if self._lib is not None else "munge/unmunge"

    def encode(self, payload: bytes, ttl_s: int = 0) -> str:
        if self._lib is None:
            return self._run(["munge", "--no-input" if not payload else "--input=-", *self._ttl(ttl_s)],
                             payload).decode().strip()
        lib, ctx = self._lib, self._context()
        try:
            if ttl_s:
                lib.munge_ctx_set(ctx, _OPT_TTL, ctypes.c_int(ttl_s))
            cred = ctypes.c_char_p()
            err = lib.munge_encode(ctypes.byref(cred), ctx, payload, len(payload))
            if err:
                raise MungeError(err, _message(lib, ctx, err))
            try:
                return ctypes.string_at(cred).decode("ascii")
            finally:
                _free(cred)
        finally:
            lib.munge_ctx_destroy(ctx)

    def decode(self, credential: str) -> Decoded:
        if not credential.isascii() or "\0" in credential:
            raise MungeError(8, "not a munge credential")
        if self._lib is None:
            return self._unmunge(credential)
        lib, ctx = self._lib, self._context()
        buf, length = ctypes.c_void_p(), ctypes.c_int()
        uid, gid = ctypes.c_uint32(), ctypes.c_uint32()
        try:
            err = lib.munge_decode(credential.encode("ascii"), ctx, ctypes.byref(buf),
                                   ctypes.byref(length), ctypes.byref(uid), ctypes.byref(gid))
            payload = ctypes.string_at(buf, length.value) if buf.value else b""
            _free(buf)
            if err:
                raise MungeError(err, _message(lib, ctx, err))
            when = ctypes.c_long()
            got = lib.munge_ctx_get(ctx, _OPT_ENCODE_TIME, ctypes.byref(when))
            return Decoded(payload, uid.value, gid.value, when.value if not got else None)
        finally:
            lib.munge_ctx_destroy(ctx)

    # -- libmunge -------------------------------------------------------------------------
    def _context(self) -> ctypes.c_void_p:
        # Wrapped: munge_ctx_set and munge_ctx_get are variadic, so they have no argtypes, and
        # ctypes would pass a bare int as a 32-bit C int, truncating a pointer from a thread's
        # malloc arena (above 4 GiB): a segfault in any thread but the main one.
        ctx = ctypes.c_void_p(self._lib.munge_ctx_create())
        if not ctx:
            raise MungeError(5, "cannot create a munge context")
        if self.socket:
            self._lib.munge_ctx_set(ctx, _OPT_SOCKET, self.socket.encode())
        return ctx

    # -- the commands ---------------------------------------------------------------------
    def _ttl(self, ttl_s: int) -> list[str]:
        return [f"--ttl={ttl_s}"] if ttl_s else []

    def _socket(self) -> list[str]:
        return [f"--socket={self.socket}"] if self.socket else []

    def _run(self, argv: list[str], stdin: bytes) -> bytes:
        try:
            done = subprocess.run([*argv, *self._socket()], input=stdin, capture_output=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MungeError(SOCKET, f"{argv[0]}: {exc}") from None
        if done.returncode:
            said = done.stderr.decode(errors="replace").strip()
            raise MungeError(done.returncode, said or _NAMES.get(done.returncode, f"error {done.returncode}"))
        return done.stdout

    def _unmunge(self, credential: str) -> Decoded:
        # The payload on stdout, the metadata ("KEY: value" lines) in a file of its own.
        with tempfile.NamedTemporaryFile("r") as meta:
            payload = self._run(["unmunge", "--numeric", "--keys=UID,GID,ENCODE_TIME",
                                 f"--metadata={meta.name}", "--output=-"], credential.encode())
            fields = dict(line.split(":", 1) for line in meta.read().splitlines() if ":" in line)
        values = {k.strip(): v.strip() for k, v in fields.items()}
        try:
            return Decoded(payload, int(values["UID"]), int(values["GID"]),
                           int(values["ENCODE_TIME"]) if values.get("ENCODE_TIME", "").isdigit()
                           else None)
        except (KeyError, ValueError):
            raise MungeError(1, f"unmunge printed no uid and gid: {values}") from None


@cache
def _library() -> ctypes.CDLL | None:
    return _load(ctypes.util.find_library("munge") or "libmunge.so.2")


def _load(name: str) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.munge_ctx_create.restype = ctypes.c_void_p
    lib.munge_ctx_destroy.argtypes = [ctypes.c_void_p]
    lib.munge_ctx_strerror.restype = ctypes.c_char_p
    lib.munge_ctx_strerror.argtypes = [ctypes.c_void_p]
    lib.munge_strerror.restype = ctypes.c_char_p
    lib.munge_encode.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p,
                                 ctypes.c_char_p, ctypes.c_int]
    lib.munge_decode.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_uint32),
                                 ctypes.POINTER(ctypes.c_uint32)]
    return lib


def _message(lib: ctypes.CDLL, ctx: ctypes.c_void_p, err: int) -> str:
    text = lib.munge_ctx_strerror(ctx) or lib.munge_strerror(err)
    return text.decode(errors="replace") if text else f"error {err}"


def _free(pointer: ctypes.c_void_p | ctypes.c_char_p) -> None:
    if pointer.value:
        ctypes.CDLL(None).free(ctypes.cast(pointer, ctypes.c_void_p))
