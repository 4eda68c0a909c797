"""Building the web site for a test: a Config whose [web] section is given, a private session
key in tmp_path, and the Flask app over it (webserver.create_app)."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

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
