#!/usr/bin/env bash
# Install turingwatch into ./.venv and watch the demo job: the newcomer's first command.
#
#   scripts/quickstart.sh            # on a fresh Debian 12 machine (root, or sudo for apt)
#
# Needs no Slurm: the demo runs as a local job, stored in a local DuckDB file
# (turingwatch-local-*/turingwatch.duckdb), with its report card printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(build-essential)
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        python3 python3-dev "${need[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    # Debian's python (not a per-user pyenv build): Slurm jobs of other users can run it.
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check .
echo "installed: $(.venv/bin/turingwatch --version)"
exec .venv/bin/turingwatch run --interval 1 -- .venv/bin/python -m watcher.demo "$@"
