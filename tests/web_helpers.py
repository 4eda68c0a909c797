"""Building the web site for a test: a Config whose [web] section is given, a private session
key in tmp_path, and the Flask app over it (webserver.create_app); and a real OpenID Connect
provider (oidc-provider-mock) in its own process on a free loopback port."""

from __future__ import annotations

import dataclasses
import os
import secrets
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
from flask import Flask

from watcher.config import Config, WebSettings
from webserver import create_app


def secret_file(tmp_path: Path, name: str = "session-key", text: str | None = None) -> Path:
    """A private file holding a secret (read_secret refuses one others can read)."""
    path = tmp_path / name
    path.write_text(text if text is not None else secrets.token_urlsafe(32) + "\n")
    path.chmod(0o600)
    return path


def web_config(tmp_path: Path, **web: Any) -> Config:
    """The default Config with [web] settings ``web`` and a session key in ``tmp_path``."""
    web.setdefault("secret_key_file", str(secret_file(tmp_path)))
    config = Config()
    return dataclasses.replace(config, web=WebSettings(**web))


def header_app(tmp_path: Path, **web: Any) -> Flask:
    """The app logging in by X-Remote-User (from loopback, the test client's address)."""
    web.setdefault("trusted_header", "X-Remote-User")
    app = create_app(web_config(tmp_path, **web))
    app.config["TESTING"] = True
    return app


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
