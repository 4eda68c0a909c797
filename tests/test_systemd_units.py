"""The units in systemd/: they parse cleanly (systemd-analyze verify), each is sandboxed as
systemd/README.md says, and systemd's own exposure score of each stays under its bound.

systemd-analyze works on unit files without a running systemd. ``--offline`` (security) needs
systemd 252, Debian 12's; scripts/test.sh installs the package. Without systemd-analyze the
tests are skipped, except in CI, where it must be there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from watcher.cli import COMMANDS

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
SERVICES = sorted(UNITS.glob("*.service"))
TIMERS = sorted(UNITS.glob("*.timer"))

# systemd's exposure score (0 safe .. 10 exposed) each unit may reach. Unprivileged units score
# 1.2-1.4 with systemd 252; scrape runs as root with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH
# and sees every process and device (2.6). The bounds leave room for a later systemd that
# scores more options, not for a unit that loses its sandbox.
EXPOSURE_BOUND = {"turingwatch-scrape.service": 3.0}
DEFAULT_BOUND = 2.0

# Commands the units run that are being written: drop each from here once watcher/cli.py has it.
PENDING_COMMANDS: set[str] = set()

# What every service sets (systemd/README.md, "Sandbox").
SANDBOX = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallArchitectures": "native",
    "Environment": "TURINGWATCH_CONFIG=/etc/turingwatch/turingwatch.toml",
}
SCRAPE_CAPABILITIES = {"CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values, in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: scripts/test.sh installs the systemd package")
        pytest.skip("systemd-analyze is not installed (Debian: the systemd package)")
    return found


def systemd_version(tool: str) -> int:
    first = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.match(r"systemd (\d+)", first).group(1))


def verify(tool: str, paths: list[Path]) -> list[str]:
    """systemd-analyze verify's complaints: every line it prints is one (it exits 0 on many)."""
    done = subprocess.run(
        [tool, "verify", "--man=no", *map(str, paths)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode and not lines:
        lines = [f"exit status {done.returncode}"]
    return lines


def test_the_units_are_there():
    names = {p.name for p in SERVICES}
    for unit in ("server", "scrape", "distributor", "web", "import", "analyze", "mail"):
        assert f"turingwatch-{unit}.service" in names
    for timer in TIMERS:
        assert (UNITS / f"{timer.stem}.service").exists(), f"{timer.name} has no service"


def test_systemd_analyze_verify_finds_nothing():
    tool = systemd_analyze()
    complaints = verify(tool, [*SERVICES, *TIMERS])
    assert not complaints, "\n".join(complaints)


def test_verify_complaints_are_caught(tmp_path):
    """The check above has teeth: an unknown key (exit 0, one line) and a missing binary fail it."""
    tool = systemd_analyze()
    text = (UNITS / "turingwatch-web.service").read_text(encoding="utf-8")
    bad = tmp_path / "turingwatch-web.service"
    bad.write_text(text.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomeDir=yes"))
    assert any("ProtectHomeDir" in line for line in verify(tool, [bad]))
    bad.write_text(text.replace("/usr/bin/env turingwatch", "/nonexistent/turingwatch"))
    assert any("/nonexistent/turingwatch" in line for line in verify(tool, [bad]))


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.stem)
def test_every_service_is_sandboxed(path):
    service = parse_unit(path)["Service"]
    for key, value in SANDBOX.items():
        assert value in service.get(key, []), f"{path.name}: {key}={value} missing"
    assert any(v.startswith("@system-service") for v in service["SystemCallFilter"])
    caps = set(" ".join(service["CapabilityBoundingSet"]).split())
    if path.stem == "turingwatch-scrape":
        assert service["User"] == ["root"]
        assert caps == SCRAPE_CAPABILITIES
    else:
        assert service["User"] == ["turingwatch"], f"{path.name} must not run as root"
        assert caps == set(), f"{path.name} keeps capabilities {caps}"
        assert service.get("ProtectProc") == ["invisible"]
        assert service.get("PrivateDevices") == ["yes"]
    # Writes only in its own state directory (and a site's drop-in ReadWritePaths=).
    assert "ReadWritePaths" not in service
    if path.stem != "turingwatch-web":
        assert len(service["StateDirectory"]) == 1
    for command in service["ExecStart"] + service.get("ExecStartPre", []):
        words = command.split()
        assert words[:2] == ["/usr/bin/env", "turingwatch"], command
        assert words[2] in COMMANDS.keys() | PENDING_COMMANDS, command


def test_the_store_has_one_writer():
    """With the server, the timers that open the store are stopped; mail reads bundles."""
    server = parse_unit(UNITS / "turingwatch-server.service")
    conflicts = set(" ".join(server["Unit"]["Conflicts"]).split())
    assert conflicts == {"turingwatch-import.timer", "turingwatch-analyze.timer"}
    mail = parse_unit(UNITS / "turingwatch-mail.service")["Service"]
    assert not any("--reanalyze" in c for c in mail["ExecStart"])
    web = parse_unit(UNITS / "turingwatch-web.service")["Service"]
    assert web["TemporaryFileSystem"] == ["/var/lib/turingwatch:ro"]
    assert web["BindReadOnlyPaths"] == ["/var/lib/turingwatch/published"]


def test_secrets_come_as_credentials():
    for name in ("server", "scrape", "mail"):
        service = parse_unit(UNITS / f"turingwatch-{name}.service")["Service"]
        assert service["LoadCredential"] == ["secret:/etc/turingwatch/credentials"], name
    # The web site gets its own secrets alone, from a directory of its own.
    web = parse_unit(UNITS / "turingwatch-web.service")["Service"]
    assert web["LoadCredential"] == ["web:/etc/turingwatch/web-credentials"]


def test_stopping_the_distributor_lets_it_cancel_its_jobs():
    service = parse_unit(UNITS / "turingwatch-distributor.service")["Service"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["KillMode"] == ["mixed"]
    # Several scancels of slurm.command_timeout_s (30 s) each.
    assert int(service["TimeoutStopSec"][0]) >= 90


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.stem)
def test_exposure_score(path):
    tool = systemd_analyze()
    if systemd_version(tool) < 252:
        pytest.skip("systemd-analyze security --offline needs systemd 252")
    done = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    score, bound = float(found.group(1)), EXPOSURE_BOUND.get(path.name, DEFAULT_BOUND)
    assert score <= bound, f"{path.name}: exposure {score} > {bound}\n{done.stdout}"
