"""One POST of spool lines to the server's ingest API, with the standard library only.

The sender runs on compute nodes inside users' jobs, so it needs nothing beyond Python:
``http.client`` (not ``urllib.request``, which would follow redirects and take a proxy from the
job's environment; the server is the site's own, reached directly). Every socket operation has
the timeout ``server.send_timeout_s``; HTTPS checks the server's certificate against
``server.tls_ca_file`` or the system's CAs.

What a caller gets: a :class:`Reply` for every answer the server gave (any status), or a
:class:`SendError` when there was no answer (refused, timed out, DNS, TLS, the connection cut).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from watcher.config import ServerSettings, expand_path
from watcher.errors import TuringwatchError

SAMPLES_PATH = "/api/v1/samples"
CONTENT_TYPE = "application/x-ndjson"
SPOOL_BYTES_HEADER = "X-Turingwatch-Spool-Bytes"
# An answer is a few words of JSON; more is not read (a wrong server must not fill memory).
_MAX_REPLY_BYTES = 64 * 1024


class SendError(TuringwatchError):
    """No answer from the server: a connection refused, a timeout, a name that does not
    resolve, a certificate refused. The lines stay in the spool for the next try."""


class BadServerURL(SendError):
    """``server.url`` is not an http(s) URL with a host."""


@dataclass(frozen=True)
class Reply:
    status: int
    data: dict[str, Any] | None       # the JSON object answered, if it was one
    text: str                         # the answer as text (for a warning), shortened
    retry_after_s: float | None = None

    @property
    def error(self) -> str:
        """The server's reason (its ``error``), else what it said."""
        if self.data is not None and isinstance(self.data.get("error"), str):
            return self.data["error"]
        return self.text.strip()[:200] or f"HTTP {self.status}"


class Client:
    """Posts batches to ``{server.url}/api/v1/samples``.

    Raises:
        BadServerURL: at construction, when ``server.url`` cannot be one.
    """

    def __init__(self, server: ServerSettings) -> None:
        self.url = server.url.strip()
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadServerURL(f"server.url {self.url!r} is not an http:// or https:// URL with a host")
        try:
            self._port = parts.port
        except ValueError:
            raise BadServerURL(f"server.url {self.url!r} has an invalid port") from None
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._path = parts.path.rstrip("/") + SAMPLES_PATH
        self.timeout_s = server.send_timeout_s
        self._ca_file = str(expand_path(server.tls_ca_file)) if server.tls_ca_file else None
        self._context: ssl.SSLContext | None = None

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + SAMPLES_PATH

    def _connection(self) -> http.client.HTTPConnection:
        if not self._https:
            return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        if self._context is None:
            try:
                self._context = ssl.create_default_context(cafile=self._ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise SendError(f"server.tls_ca_file {self._ca_file}: {exc}") from None
        return http.client.HTTPSConnection(
            self._host, self._port, timeout=self.timeout_s, context=self._context
        )

    def post_samples(self, body: bytes, *, authorization: str, spool_bytes: int) -> Reply:
        """Post one batch; the server's answer, whatever its status.

        Raises:
            SendError: no answer (see the class).
        """
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Authorization": authorization,
            SPOOL_BYTES_HEADER: str(max(0, spool_bytes)),
            "Connection": "close",
        }
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read(_MAX_REPLY_BYTES)
            retry_after = _retry_after(response.getheader("Retry-After"))
            status = response.status
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # OSError covers refused, unreachable, timeouts, DNS (socket.gaierror) and TLS.
            raise SendError(f"{self.endpoint}: {_why(exc)}") from None
        finally:
            conn.close()
        text = raw.decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return Reply(status, data if isinstance(data, dict) else None, text[:500], retry_after)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (an HTTP date is not worth parsing here: back-off covers it)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the server's name ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
