#!/usr/bin/env bash
# The test command (README; .ci/run calls it): on a fresh Debian 12 machine, as root.
# Installs everything, starts a fresh local Slurm cluster, runs every test (Slurm ones included:
# TURINGWATCH_TEST_REQUIRE_SLURM=1 makes an unreachable cluster a failure, not a skip), the
# C tests and ruff, stops the cluster. Exits non-zero when anything failed.
# Arguments, if any, go to pytest (`scripts/test.sh -m slurm`).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
export TURINGWATCH_TEST_REQUIRE_SLURM=1

DEBIAN_PACKAGES=(
    slurm-wlm slurmdbd slurm-client munge mariadb-server    # the local test cluster
    chromium                                                # browser tests (Playwright)
    libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 valgrind libpython3.11-testsuite  # intercepter tests
    build-essential pkg-config ninja-build                  # C builds
    python3 python3-venv python3-dev                        # the venv's base: /usr/bin/python3
    openssl                                                 # a TLS certificate for the server test
    systemd                                                 # systemd-analyze: the units' checks (verify, security)
)
BUILD_TOOLS=(meson ninja)   # for the C tests; pyproject has the rest

section() { printf '\n=== [%4d s] %s\n' "$SECONDS" "$*"; }
failed=()

section "Debian packages"
# No systemd here: keep package scripts from starting system munge/MariaDB through init.d.
made_policy=false
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=true
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${DEBIAN_PACKAGES[@]}" >/dev/null
if $made_policy; then rm -f /usr/sbin/policy-rc.d; fi

section "Python venv"
# From Debian's python: the Slurm test user's jobs run this interpreter.
/usr/bin/python3 -m venv .venv
.venv/bin/pip install -q ".[test]" "${BUILD_TOOLS[@]}"

section "Slurm cluster"
trap 'section "stopping the Slurm cluster"; scripts/slurm-cluster.sh stop || true' EXIT
# From a clean state: job ids, accounting records and node state left by an earlier run (or
# a cluster still running from one) must not leak into tests that count jobs. ~10 s more.
scripts/slurm-cluster.sh stop --purge
scripts/slurm-cluster.sh start
# Jobs of the non-root test user run .venv/bin/python on this tree: let them reach it (a clone
# under /root is not). This machine is thrown away after the run.
dir=$REPO
while [[ $dir != / ]]; do
    if [[ $(stat -c %A "$dir") != *[xt] ]]; then
        echo "granting others search permission on $dir (for the Slurm test user)"
        chmod o+x "$dir"
    fi
    dir=$(dirname "$dir")
done

section "pytest"
rc=0
# The slowest tests are named in the log, so that CI time stays visible as the suite grows.
# The suite takes about 22 min on the 2-core machine; the limit catches a hang, not a slow run.
timeout 28m .venv/bin/python -m pytest --durations=20 "$@" || rc=$?
case $rc in
0) ;;
5) echo "pytest collected no tests" ;;   # a tree without tests is not a failing one
*) failed+=("pytest (exit $rc)") ;;
esac

section "C tests (meson)"
rm -rf build
PATH=$REPO/.venv/bin:$PATH
{ meson setup build && meson test -C build --print-errorlogs; } || failed+=("meson test")

section "ruff"
.venv/bin/ruff check . || failed+=("ruff")

section "done"
if ((${#failed[@]})); then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all passed"
