"""A real OpenID Connect provider for the web site's login tests: oidc-provider-mock in its own
process on a free loopback port, with its API for clients and users."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Provider:
    url: str

    @property
    def discovery(self) -> str:
        return self.url + "/.well-known/openid-configuration"

    def client(self, redirect_uri: str = "http://localhost/auth/callback") -> tuple[str, str]:
        """A client registered for the site's callback alone: (client id, secret)."""
        got = requests.post(f"{self.url}/oauth2/clients", timeout=5, json={"redirect_uris": [redirect_uri]})
        got.raise_for_status()
        return got.json()["client_id"], got.json()["client_secret"]

    def user(self, sub: str, **claims: Any) -> str:
        """Give the provider's user ``sub`` these claims (the mock's own API)."""
        requests.put(f"{self.url}/users/{sub}", json=claims, timeout=5).raise_for_status()
        return sub


@contextmanager
def running_provider(workdir: Path) -> Iterator[Provider]:
    """oidc-provider-mock on a free port, nonces required, until the block ends."""
    port = free_port()
    log = workdir / "provider.log"
    env = {**os.environ, "AUTHLIB_INSECURE_TRANSPORT": "1"}  # the provider itself on plain http
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port),
             "--require-nonce", "true"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    found = Provider(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(found.discovery, timeout=1).raise_for_status()
                break
            except requests.RequestException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"oidc-provider-mock did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield found
    finally:
        proc.terminate()
        proc.wait(10)
