#!/usr/bin/env bash
# Install what connguard and its tests need on Debian 12: kernel tools, the lab's traffic
# tools, PostgreSQL (API tests), and the Python package with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (apt, network namespaces, nftables)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
need=(nftables iproute2 conntrack hping3 openssh-server openssh-client postgresql procps)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q -e '.[test]'
