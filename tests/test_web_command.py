"""``turingwatch web``: it serves real HTTP requests on web.listen, logs where, stops on SIGTERM,
and refuses (one line, exit 1) configurations it must not serve with."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.oidc_helpers import free_port
from tests.web_helpers import secret_file, web_config
from webserver import check_serving, listens_on_loopback

REPO = Path(__file__).resolve().parent.parent


def config_file(tmp_path: Path, web: str, *, publish: Path | None = None) -> Path:
    if publish is None:
        publish = tmp_path / "published"
        publish.mkdir(exist_ok=True)
    path = tmp_path / "turingwatch.toml"
    path.write_text(f'[server]\npublish_dir = "{publish}"\n\n[web]\n{web}\n')
    return path


def env_for(config: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TURINGWATCH_CONFIG": str(config)}
    for name in ("JOURNAL_STREAM", "INVOCATION_ID"):
        env.pop(name, None)
    return env


def test_it_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    key = secret_file(tmp_path)
    config = config_file(tmp_path, f'listen = "127.0.0.1:{port}"\nsecret_key_file = "{key}"\n'
                                   'trusted_header = "X-Remote-User"\nadmin_users = ["root"]\nthreads = 2')
    proc = subprocess.Popen([sys.executable, "-m", "watcher", "-v", "web"], env=env_for(config),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                got = requests.get(f"http://127.0.0.1:{port}/api/v1/whoami",
                                   headers={"X-Remote-User": "root"}, timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "turingwatch web did not answer in 30 s"
                time.sleep(0.2)
        assert got.status_code == 200 and got.json() == {"name": "root", "admin": True}
        assert "frame-ancestors 'none'" in got.headers["Content-Security-Policy"]
        assert got.headers["Server"] == "turingwatch"
        anonymous = requests.get(f"http://127.0.0.1:{port}/api/v1/whoami", timeout=2)
        assert anonymous.status_code == 401
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert f"web site on http://127.0.0.1:{port} (login by the X-Remote-User header, 2 threads)" in stderr
    assert "SIGTERM: stopping" in stderr and "web site stopped" in stderr


@pytest.mark.parametrize(("web", "says"), [
    ('trusted_header = "X-Remote-User"', "web.secret_key_file is not set"),
    ('secret_key_file = "{key}"', "no login method"),
    ('secret_key_file = "{key}"\noidc_discovery_url = "https://idp.example/.well-known/openid-configuration"',
     "OpenID Connect is half configured: web.client_id is not set"),
    ('secret_key_file = "{key}"\ntrusted_header = "X-Remote-User"\nlisten = "0.0.0.0:8741"',
     "anyone who reaches that address could name any user"),
    ('secret_key_file = "{key}"\ntrusted_header = "X-Remote-User"\nlisten = "[::]:8741"',
     "anyone who reaches that address could name any user"),
    ('secret_key_file = "{key}"\ntrusted_header = "X-Remote-User"\ntrusted_proxies = ["proxy.example"]',
     "web.trusted_proxies: 'proxy.example' is not an address or network"),
    ('secret_key_file = "{open_key}"\ntrusted_header = "X-Remote-User"', "can be read by every user"),
    ('secret_key_file = "{key}"\nclient_id = "site"\nclient_secret_file = "{tmp}/missing"\n'
     'oidc_discovery_url = "https://idp.example/.well-known/openid-configuration"',
     "web.client_secret_file: {tmp}/missing does not exist"),
])
def test_it_refuses_configs_it_must_not_serve_with(tmp_path: Path, web: str, says: str) -> None:
    key = secret_file(tmp_path)
    open_key = secret_file(tmp_path, "open-key")
    open_key.chmod(0o644)
    fill = {"key": key, "open_key": open_key, "tmp": tmp_path}
    config = config_file(tmp_path, web.format(**fill))
    got = subprocess.run([sys.executable, "-m", "watcher", "web"], env=env_for(config),
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 1, got.stderr
    (line,) = got.stderr.splitlines()
    assert line.startswith("turingwatch web: ") and says.format(**fill) in line


def test_a_trusted_header_on_an_open_address_is_fine_with_a_named_proxy(tmp_path: Path) -> None:
    published = tmp_path / "published"
    published.mkdir()
    config = web_config(tmp_path, trusted_header="X-Remote-User", listen="0.0.0.0:8741",
                        trusted_proxies=["10.0.0.2"])
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, publish_dir=str(published)))
    check_serving(config)  # no refusal
    assert listens_on_loopback("127.0.0.1:1 [::1]:2 localhost:3")
    assert not listens_on_loopback("127.0.0.1:1 10.0.0.1:2") and not listens_on_loopback(":8741")


def test_an_unreadable_publish_dir_is_refused(tmp_path: Path) -> None:
    key = secret_file(tmp_path)
    config = config_file(tmp_path, f'secret_key_file = "{key}"\ntrusted_header = "X-Remote-User"',
                         publish=tmp_path / "never-published")
    got = subprocess.run([sys.executable, "-m", "watcher", "web"], env=env_for(config),
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 1
    assert "server.publish_dir" in got.stderr and "is not a directory this user can read" in got.stderr


def test_the_wsgi_entry_is_the_checked_app(tmp_path: Path) -> None:
    """`gunicorn webserver.wsgi:app` gets the app over $TURINGWATCH_CONFIG, checked the same way."""
    probe = ("import webserver.wsgi as w; c = w.app.test_client(); "
             "r = c.get('/api/v1/whoami', headers={'X-Remote-User': 'alice'}); print(r.status_code, r.json['name'])")
    key = secret_file(tmp_path)
    good = config_file(tmp_path, f'secret_key_file = "{key}"\ntrusted_header = "X-Remote-User"')
    served = subprocess.run([sys.executable, "-c", probe], env=env_for(good), capture_output=True, text=True, timeout=60)
    assert served.stdout.strip() == "200 alice", served.stderr
    bad = config_file(tmp_path, f'secret_key_file = "{key}"')
    refused = subprocess.run([sys.executable, "-c", probe], env=env_for(bad), capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "ServingRefused: no login method" in refused.stderr
