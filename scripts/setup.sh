#!/usr/bin/env bash
# Install connguard on a Debian host (12 bookworm, 13 trixie): the kernel tools from apt, and
# connguard in its own virtual environment with `connguard` linked onto PATH. Idempotent.
#
#   bash scripts/setup.sh [--role agent|server|all] [--uninstall]
#
#   --role agent   core only (apply, agent, status, lab, the resource commands): nftables,
#                  iproute2, conntrack; neither the server stack nor PostgreSQL's driver
#   --role server  + the [server,postgresql] extras (connguard server, up, token --db)
#   --role all     (default) + [test], the lab's traffic tools and PostgreSQL: what the
#                  README's two commands and the tests need; installed editable, so the tests
#                  and `connguard` run this source tree (agent and server install a copy)
#   --uninstall    remove the virtual environment and the link (not /var/lib/connguard, not
#                  the apt packages)
#
# Environment: CONNGUARD_PREFIX (the virtual environment, default /opt/connguard),
# CONNGUARD_BIN_DIR (where the `connguard` link goes, default /usr/local/bin), CONNGUARD_PYTHON
# (the interpreter, >= 3.11, default python3; Debian's gets python3-venv from apt).
#
# Why a virtual environment: Debian's python3 is "externally managed" (PEP 668: pip refuses to
# install into it) and its python3-sqlalchemy/pydantic/fastapi are older than connguard needs.
set -euo pipefail
role=all
uninstall=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --role) role="${2:-}"; shift 2 || { echo "setup.sh: --role needs a value: agent, server or all" >&2; exit 2; } ;;
    --role=*) role="${1#--role=}"; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$role" in
  agent|server|all) ;;
  *) echo "setup.sh: --role must be agent, server or all, not '$role'" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  # a sudo user runs the README's commands verbatim; a root shell needs no sudo at all
  if command -v sudo >/dev/null 2>&1; then
    keep=("PATH=$PATH")
    for v in CONNGUARD_PREFIX CONNGUARD_BIN_DIR CONNGUARD_PYTHON; do
      [ -n "${!v:-}" ] && keep+=("$v=${!v}")
    done
    exec sudo env "${keep[@]}" bash "$0" --role "$role" $([ "$uninstall" = 1 ] && echo --uninstall)
  fi
  echo "setup.sh: needs root (apt, network namespaces, nftables) and sudo is not installed: run it as root (su -)" >&2
  exit 1
fi
cd "$(dirname "$0")/.."
src=$PWD
prefix="${CONNGUARD_PREFIX:-/opt/connguard}"
bindir="${CONNGUARD_BIN_DIR:-/usr/local/bin}"
link="$bindir/connguard"

if [ "$uninstall" = 1 ]; then
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$prefix/bin/connguard" ]; then rm -f "$link"; fi
  if [ -e "$prefix" ] && [ ! -f "$prefix/pyvenv.cfg" ]; then
    echo "setup.sh: $prefix is not a virtual environment: not removing it" >&2
    exit 1
  fi
  rm -rf "$prefix"
  echo "removed $prefix and $link (data in /var/lib/connguard and apt packages are left)"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# python3-nftables: libnftables in-process for the agent (connguard.nft.libnft; the nft tool is the fallback)
need=(nftables python3-nftables iproute2 conntrack procps)
if [ "$role" = all ]; then
  need+=(hping3 openssh-server openssh-client postgresql systemd)  # systemd: systemd-analyze verify in the tests
fi
python="${CONNGUARD_PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  [ "$python" = python3 ] || { echo "setup.sh: CONNGUARD_PYTHON=$python not found" >&2; exit 1; }
  need+=(python3 python3-venv)
else
  case "$(readlink -f "$(command -v "$python")")" in
    /usr/bin/*) need+=(python3-venv) ;;  # Debian's python3: venv and ensurepip are separate
  esac
fi
missing=()
for p in "${need[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup.sh: connguard needs Python >= 3.11; $python is $("$python" -V 2>&1)" >&2
  exit 1
fi
if [ -e "$prefix" ] && [ ! -f "$prefix/pyvenv.cfg" ] && [ -n "$(ls -A "$prefix")" ]; then
  echo "setup.sh: $prefix exists and is not a virtual environment: set CONNGUARD_PREFIX elsewhere" >&2
  exit 1
fi
# A venv whose interpreter is gone or of another version (Debian 12 -> 13 upgrade) is rebuilt.
want=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
have=$("$prefix/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "creating the virtual environment $prefix (Python $want)"
  "$python" -m venv --clear "$prefix"
fi
case "$role" in
  agent) target=("$src") ;;
  server) target=("$src[server,postgresql]") ;;
  all) target=(-e "$src[server,postgresql,test]") ;;
esac
# An editable install is current while the tree, the role and pyproject.toml (the
# dependencies) are the ones it was made from: then pip is not run again, so the README's
# commands, which start with this script, need neither the network nor pip's time twice.
stamp="role=$role src=$src pyproject=$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$role" = all ] && [ "$(cat "$prefix/.connguard-setup" 2>/dev/null)" = "$stamp" ] \
    && "$prefix/bin/python" -c 'import connguard' 2>/dev/null; then
  echo "connguard (role $role) in $prefix is up to date with $src"
else
  rm -f "$prefix/.connguard-setup"
  echo "installing connguard (role $role) into $prefix"
  "$prefix/bin/python" -m pip install -q --disable-pip-version-check "${target[@]}"
  [ "$role" != all ] || echo "$stamp" >"$prefix/.connguard-setup"
fi

mkdir -p "$bindir"
if [ -e "$link" ] && [ ! -L "$link" ]; then
  echo "setup.sh: replacing $link (a file, not a link) with a link to $prefix/bin/connguard" >&2
fi
ln -sfn "$prefix/bin/connguard" "$link"
echo "connguard $("$link" --version | awk '{print $NF}') installed: $link -> $prefix/bin/connguard (role $role)"
