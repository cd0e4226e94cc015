#!/usr/bin/env bash
# Install what connguard and its tests need on Debian 12: kernel tools, the lab's traffic
# tools, PostgreSQL (API tests), and the Python package with its test extras. Idempotent.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  # a sudo user runs the README's commands verbatim; a root shell needs no sudo at all
  if command -v sudo >/dev/null 2>&1; then
    exec sudo env "PATH=$PATH" bash "$0" "$@"
  fi
  echo "setup.sh: needs root (apt, network namespaces, nftables) and sudo is not installed: run it as root (su -)" >&2
  exit 1
fi
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# python3-nftables: libnftables in-process for the agent (connguard.nft.libnft; the nft tool is the fallback)
need=(nftables python3-nftables iproute2 conntrack hping3 openssh-server openssh-client postgresql procps systemd)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q -e '.[test]'
