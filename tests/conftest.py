"""Fixtures shared by all test files. Area-specific fixtures live in their own test files.

Tests marked ``slurm`` use the real local cluster of ``scripts/slurm-cluster.sh``; they are
skipped when it cannot be reached, unless TURINGWATCH_TEST_REQUIRE_SLURM=1 (as in CI) turns
that into a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.slurm_helpers import REQUIRE_ENV, ClusterUnavailable, SlurmCluster, connect, shell_line

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@dataclass(frozen=True)
class TuringwatchCommand:
    """How to run turingwatch from this source tree, also inside a Slurm job."""

    argv: list[str]
    env: dict[str, str]

    def shell(self, *args: str) -> str:
        """One shell line running ``turingwatch args...``, for job scripts."""
        return shell_line([*self.argv, *args], self.env)


@pytest.fixture(scope="session")
def turingwatch_command(repo_root: Path) -> TuringwatchCommand:
    # The venv's python (made from /usr/bin/python3), not an installed entry point: the tests
    # exercise the tree as it is, and other users' jobs can run that interpreter.
    return TuringwatchCommand([sys.executable, "-m", "watcher"], {"PYTHONPATH": str(repo_root)})


@pytest.fixture(scope="session")
def slurm_cluster(repo_root: Path) -> SlurmCluster:
    """The running local cluster (started if needed): client env, test user, scratch dirs."""
    try:
        return connect(repo_root)
    except ClusterUnavailable as exc:
        _unavailable(f"no local Slurm cluster: {exc}")


def _unavailable(reason: str) -> NoReturn:
    """Skip a Slurm test, or fail it where the cluster is required (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def user_can_run_turingwatch(
    slurm_cluster: SlurmCluster, turingwatch_command: TuringwatchCommand
) -> None:
    """Skip unless the non-root test user can run turingwatch from this tree (a checkout
    under a private home dir, or a venv made from a pyenv Python under /root, cannot)."""
    if os.geteuid() != 0:
        _unavailable("running jobs as the test user needs root (runuser)")
    check = subprocess.run(
        [*slurm_cluster.as_user_prefix(), *turingwatch_command.argv, "--version"],
        env={**slurm_cluster.user_env(), **turingwatch_command.env},
        cwd="/", capture_output=True, text=True, timeout=60,
    )
    if check.returncode != 0:
        _unavailable(
            f"user {slurm_cluster.user} cannot run {turingwatch_command.argv[0]} with "
            f"PYTHONPATH={REPO_ROOT} (is the checkout and the venv's base python readable "
            f"by other users?): {check.stderr.strip()[-300:]}"
        )
