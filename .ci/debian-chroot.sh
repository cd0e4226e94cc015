#!/usr/bin/env bash
# A fresh Debian, as a new operator has it: debootstrap a minimal SUITE into .ci-chroot/SUITE
# (gitignored), copy this tree in, and run the README's two commands verbatim inside it:
#   1. as root with no sudo installed: the test command (`bash scripts/setup.sh && bash
#      scripts/root.sh python3 -m pytest -q`), narrowed to tests/unit and tests/install by
#      PYTEST_ADDOPTS (the whole suite is .ci/run's); then, in a network namespace of its own,
#      `bash scripts/setup.sh && bash scripts/root.sh connguard up --lab` until its printed URL
#      answers and the lab's attacks got a source banned, then Ctrl-C (SIGINT to its process
#      group), and the lab must be gone;
#   2. as a user with sudo: the install command, `connguard apply --dry-run` through root.sh,
#      and the test command on tests/unit/test_extras.py.
# With `install` as second argument (e.g. trixie): only the install command, as root, and
# `connguard apply --dry-run` (the main job needs the first suite's checks only once).
# Runs as root; the chroot is a tmpfs, and everything it mounted is unmounted and the chroot
# removed, also on failure.
#
#   bash .ci/debian-chroot.sh [bookworm|trixie] [full|install]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
suite="${1:-bookworm}"
mode="${2:-full}"
root="$repo/.ci-chroot/$suite"
ns="cgci-$suite"  # the main job's network namespace
log="$repo/.ci-chroot/$suite.log"
start=$SECONDS
step() { echo "== [$suite $((SECONDS - start)) s] $*"; }

teardown() {
  # processes started inside the chroot (a lab's, an `up` that outlived a failure): by pid,
  # found by their root directory
  local p
  for p in /proc/[0-9]*; do
    if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ]; then kill -9 "${p#/proc/}" 2>/dev/null || true; fi
  done
  # unmount everything below the chroot, deepest first (netns binds under run/ included)
  local m
  for m in $(awk -v r="$root" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  if awk -v r="$root" 'index($5, r "/") == 1 {f=1} END {exit !f}' /proc/self/mountinfo; then
    echo "debian-chroot: mounts left under $root, not removing it" >&2
    return 1
  fi
  rm -rf --one-file-system "$root"
  if [ -e "/run/netns/$ns" ]; then ip netns del "$ns"; fi
}
finish() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$log" ]; then
    echo "---- last lines of $log"; tail -40 "$log"
  fi
  teardown || rc=1
  echo "== debian-chroot $suite ($mode): $((SECONDS - start)) s, exit $rc"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM
mkdir -p "$repo/.ci-chroot"
teardown  # what a killed earlier run left
: >"$log"

in_root() {  # a login-like clean environment: nothing of this machine's (no pyenv, no pip config)
  chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

step "debootstrap --variant=minbase $suite"
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
# the mirror this machine's apt uses (none named here: debootstrap's default otherwise)
mirror="${CONNGUARD_DEBIAN_MIRROR:-}"
[ -n "$mirror" ] || mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
# in memory (24 GiB machine, ~1 GiB used): faster than disk, and removed by one umount
mkdir -p "$root"
mount -t tmpfs -o size=6g,mode=755 tmpfs "$root"
debootstrap --variant=minbase "$suite" "$root" ${mirror:+"$mirror"} >>"$log" 2>&1
# a chroot must not start services from package scripts (PostgreSQL's postinst would)
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
echo "127.0.1.1 $(hostname)" >>"$root/etc/hosts"  # as the installer writes it: sudo resolves its host
# This machine's way to the package registries, as a site configures every new host: the CA
# bundle pip is told to trust here (PIP_CERT or pip.conf's cert: a TLS-inspecting network).
# Put in the chroot's /etc/pip.conf, which pip reads for root and, through sudo, for a user.
cert="${PIP_CERT:-$(python3 -m pip config list 2>/dev/null | sed -n "s/^global\.cert='\(.*\)'\$/\1/p" | head -1)}"
if [ -n "$cert" ] && [ -f "$cert" ]; then
  mkdir -p "$root/etc/connguard-ci"
  cp "$cert" "$root/etc/connguard-ci/ca.crt"
  printf '[global]\ncert = /etc/connguard-ci/ca.crt\n' >"$root/etc/pip.conf"
fi
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"  # its own /run: ip netns binds land here

copy_tree() {  # the tracked and untracked-but-not-ignored files of this tree, into $1
  mkdir -p "$root$1"
  git ls-files -co --exclude-standard -z | tar --null -T - --ignore-failed-read -cf - 2>/dev/null \
    | tar -C "$root$1" -xf -
}
copy_tree /root/connguard
mapfile -t cmds < <(grep -E '^bash scripts/setup.sh && ' README.md | sed -E 's/[[:space:]]+#.*$//')
if [ "${#cmds[@]}" -ne 2 ]; then
  echo "debian-chroot: expected the README's two commands, found ${#cmds[@]}: ${cmds[*]}" >&2
  exit 1
fi
echo "README commands: ${cmds[0]} | ${cmds[1]}"
if in_root sh -c 'command -v sudo' >/dev/null; then
  echo "debian-chroot: sudo is installed in the fresh $suite: the no-sudo case is not tested" >&2
  exit 1
fi

if [ "$mode" = install ]; then
  step "as root: ${cmds[0]%% && *}"
  in_root bash -c "cd /root/connguard && ${cmds[0]%% && *}" >>"$log" 2>&1
  dry=$(in_root bash -c "cd /root/connguard && connguard apply examples/state.yaml --dry-run")
  case "$dry" in *'"nftables"'*) ;; *) echo "debian-chroot: apply --dry-run printed no batch" >&2; exit 1 ;; esac
  step "installed: $(in_root connguard --version), $(in_root /opt/connguard/bin/python -V)"
  exit 0
fi

step "as root, no sudo: ${cmds[1]} (PYTEST_ADDOPTS='tests/unit tests/install')"
in_root bash -c "cd /root/connguard && export PYTEST_ADDOPTS='tests/unit tests/install' && ${cmds[1]}" 2>&1 \
  | tee -a "$log" | grep -vE '^(installing|creating|debconf)' | tail -4

# The main job in a network namespace of its own (loopback up): its API's 127.0.0.1:9696 is
# then free whatever this machine runs, and nothing it does reaches this machine's network.
# setup.sh, the first half, finds everything installed and needs no network.
step "as root, no sudo, in network namespace $ns: ${cmds[0]}"
ip netns add "$ns"
ip -n "$ns" link set lo up
# its own session, as a terminal's job: Ctrl-C is SIGINT to its whole process group
setsid ip netns exec "$ns" chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root TERM=dumb \
  LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  bash -c "cd /root/connguard && ${cmds[0]}" >"$log.up" 2>&1 &
up=$!
url=""
for _ in $(seq 1 240); do
  url=$(grep -oE 'connguard is up\. API: http://[^ ]+' "$log.up" | awk '{print $NF}' || true)
  [ -n "$url" ] && break
  kill -0 "$up" 2>/dev/null || { cat "$log.up" >>"$log"; echo "debian-chroot: '${cmds[0]}' exited before its URL" >&2; exit 1; }
  sleep 0.5
done
[ -n "$url" ] || { cat "$log.up" >>"$log"; echo "debian-chroot: no URL printed within 120 s" >&2; exit 1; }
step "up printed $url"
answered=$(ip netns exec "$ns" chroot "$root" /opt/connguard/bin/python -c \
  'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).status)' "$url")
[ "$answered" = 200 ] || { echo "debian-chroot: $url answered $answered" >&2; exit 1; }
banned=""
for _ in $(seq 1 45); do  # the lab attacks every 20 s; a ban shows within a minute (README)
  banned=$(ip netns exec "$ns" chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin \
    bash -c 'cd /root/connguard && bash scripts/root.sh connguard ban list -f value -c ip_address' 2>>"$log" || true)
  [ -n "$banned" ] && break
  sleep 2
done
[ -n "$banned" ] || { cat "$log.up" >>"$log"; echo "debian-chroot: no ban within 90 s of the URL" >&2; exit 1; }
step "$url answered 200; banned by the lab's attacks: $(echo $banned)"
kill -INT -- "-$up"
for _ in $(seq 1 40); do kill -0 "$up" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$up" 2>/dev/null; then echo "debian-chroot: up still running 20 s after SIGINT" >&2; exit 1; fi
rc=0; wait "$up" || rc=$?
cat "$log.up" >>"$log"
left=$(ls "$root/run/netns" 2>/dev/null || true)
[ "$rc" -eq 0 ] && [ -z "$left" ] || { echo "debian-chroot: up exited $rc after SIGINT, namespaces left: $left" >&2; exit 1; }
step "Ctrl-C: up exited 0, the lab's namespaces are gone"

step "as a sudo user: ${cmds[1]} tests/unit/test_extras.py, then apply --dry-run through root.sh"
in_root apt-get install -y -qq sudo >>"$log" 2>&1
in_root useradd -m -s /bin/bash cgop
echo 'cgop ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/cgop"
copy_tree /home/cgop/connguard
in_root chown -R cgop: /home/cgop/connguard
in_root su - cgop -c "cd ~/connguard && ${cmds[1]} tests/unit/test_extras.py" 2>&1 | tee -a "$log" | tail -2
dry=$(in_root su - cgop -c "cd ~/connguard && bash scripts/root.sh connguard apply examples/state.yaml --dry-run")
case "$dry" in *'"nftables"'*) ;; *) echo "debian-chroot: apply --dry-run as cgop printed no batch" >&2; exit 1 ;; esac
step "done"
