#!/usr/bin/env bash
# Run a command as root: as it is when already root (a minimal host often has no sudo), else
# through sudo. connguard's virtual environment (scripts/setup.sh: $CONNGUARD_PREFIX, default
# /opt/connguard) comes first on PATH, so `connguard`, `python3` and `pytest` are the ones
# setup.sh installed there, whatever else is on PATH. HOME is sudo's (root's), so `connguard
# up` writes its CLI config where later sudo commands read it.
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "usage: bash scripts/root.sh COMMAND [ARG...]" >&2
  exit 2
fi
venv="${CONNGUARD_PREFIX:-/opt/connguard}/bin"
if [ -x "$venv/python3" ]; then
  PATH="$venv:$PATH"
fi
if [ "$(id -u)" -eq 0 ]; then
  export PATH
  exec "$@"
fi
if command -v sudo >/dev/null 2>&1; then
  exec sudo env "PATH=$PATH" "$@"
fi
echo "root.sh: '$1' needs root (nftables, network namespaces) and sudo is not installed: run it as root (su -)" >&2
exit 1
