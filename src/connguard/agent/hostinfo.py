"""What the reporter reads from the host besides nftables: the interfaces matching the
pattern (with their VMs' addresses) and the namespace's conntrack usage.

A VM's addresses are the tap's *permanent* neighbour entries (the ones the host's management
sets, as Neutron's static ARP/ND entries): a learned entry is what the VM claims, and a VM
claiming its neighbour's address must not make that address its port's.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Iface:
    name: str
    addresses: tuple[str, ...]
    state: str  # UP | DOWN | UNKNOWN


def _ip(netns: str | None, *args: str) -> list:
    argv = ["ip", "-j", *(["-n", netns] if netns else []), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    return json.loads(out) if out.strip() else []


def interfaces(netns: str | None, pattern: str) -> dict[str, Iface]:
    links = [l for l in _ip(netns, "link", "show") if fnmatch.fnmatchcase(l.get("ifname", ""), pattern)]
    if not links:
        return {}
    addrs: dict[str, list[str]] = {}
    for n in _ip(netns, "neigh", "show"):
        dev, dst = n.get("dev"), n.get("dst")
        if dev is None or dst is None or "PERMANENT" not in (n.get("state") or []):
            continue
        try:
            ip = ipaddress.ip_address(dst)
        except ValueError:
            continue
        if ip.is_link_local or ip.is_multicast:
            continue
        addrs.setdefault(dev, []).append(str(ip))
    out = {}
    for link in links:
        name = link["ifname"].split("@")[0]
        flags = link.get("flags") or []
        state = link.get("operstate") or "UNKNOWN"
        state = state if state in ("UP", "DOWN") else ("UP" if "UP" in flags else "UNKNOWN")
        out[name] = Iface(name, tuple(sorted(set(addrs.get(name, []))))[:16], state)
    return out


def conntrack(netns: str | None) -> tuple[int, int] | None:
    """(count, max) of the namespace's conntrack table; None when it cannot be read."""
    paths = ["/proc/sys/net/netfilter/nf_conntrack_count", "/proc/sys/net/netfilter/nf_conntrack_max"]
    argv = (["ip", "netns", "exec", netns] if netns else []) + ["cat", *paths]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
