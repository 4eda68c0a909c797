"""etc/turingwatch.toml.example, the site config of README's "Deploying at a site", is valid:
as it is, and with every commented-out setting switched on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from watcher.config import describe, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "turingwatch.toml.example"
SETTING_LINE = re.compile(r"^# ?(\w+) = (.+)$")


def commented_settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, line without its '# ') of each commented-out setting."""
    found, section = [], None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section and (match := SETTING_LINE.match(line)):
            found.append((section, match.group(1), line.removeprefix("#").strip()))
    return found


def test_the_example_loads(tmp_path):
    config = load_config(EXAMPLE, environ={})
    assert config.store.path.startswith("/var/lib/turingwatch/")
    assert config.server.url and config.server.publish_dir == "/var/lib/turingwatch/published"


def test_every_key_is_a_setting_and_every_daemon_section_is_there():
    text = EXAMPLE.read_text(encoding="utf-8")
    settings = {(i.section, i.key) for i in describe()}
    data = tomllib.loads(text)
    given = {(s, k) for s, keys in data.items() for k in keys}
    commented = {(s, k) for s, k, _ in commented_settings(text)}
    assert not (given | commented) - settings, "not settings (docs/settings.md)"
    assert set(data) == {i.section for i in describe()}


def test_with_every_commented_setting_switched_on_it_still_loads(tmp_path):
    """The commented examples are valid values too (a key set above stays as it is)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    lines = text.splitlines()
    switched = 0
    for section, key, setting in commented_settings(text):
        if key in data[section]:
            continue  # an alternative to a value set (auth.mode)
        where = lines.index(f"[{section}]") + 1
        lines.insert(where, setting)
        data[section][key] = True  # one alternative per key
        switched += 1
    assert switched >= 10
    everything = tmp_path / "turingwatch.toml"
    everything.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(everything, environ={})
    assert config.auth.hmac_key_file == "${CREDENTIALS_DIRECTORY}/secret_hmac-key"
    assert config.mail.password_file.startswith("${CREDENTIALS_DIRECTORY}/")
