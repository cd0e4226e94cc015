"""Read-only facts about a network namespace that an apply reports: which interfaces exist,
and the value of a namespace-wide sysctl. Nothing here writes."""

from __future__ import annotations

import json
import subprocess

# Namespace-wide sysctls the applier may set, and why (stated once, when one changes).
SYSCTLS = {
    "net.netfilter.nf_conntrack_tcp_loose": (
        "synproxy needs a handshake's ACK to reach it as 'invalid'; with 0, conntrack in the whole "
        "namespace no longer adopts TCP connections it did not see start (e.g. after a conntrack flush)"),
    # set only when a port is bridged (nft/bridge.py); per namespace on this kernel
    "net.bridge.bridge-nf-call-iptables": (
        "bridged ports: IPv4 frames crossing any bridge of the namespace now pass the inet hooks and conntrack"),
    "net.bridge.bridge-nf-call-ip6tables": (
        "bridged ports: IPv6 frames crossing any bridge of the namespace now pass the inet hooks and conntrack"),
}


def _in(netns: str | None, argv: list[str]) -> list[str]:
    return (["ip", "netns", "exec", netns] if netns else []) + argv


def interfaces(netns: str | None) -> set[str] | None:
    """Interface names in the namespace, or None when they cannot be read."""
    try:
        out = subprocess.run(_in(netns, ["ip", "-j", "link", "show"]), capture_output=True, text=True, timeout=10)
        return {link["ifname"] for link in json.loads(out.stdout)} if out.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def sysctl(netns: str | None, key: str) -> str | None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        out = subprocess.run(_in(netns, ["cat", path]), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def no_interface(ifname: str, netns: str | None) -> str:
    where = f" in netns {netns}" if netns else ""
    return f"there is no interface {ifname}{where} yet; its rules are in place and protect it as soon as it appears"


def missing_ports(netns: str | None, ports: list[str]) -> list[str] | None:
    have = interfaces(netns)
    return None if have is None else [p for p in ports if p not in have]
