"""Commands that add or remove ban elements in the long-lived ban sets, and give back the
brute-force offender memory."""

from __future__ import annotations

import ipaddress

from connguard.compiler import fragments as f
from connguard.names import BAN, FAMILY, HOST_BAN, TABLE


def _target(ip: str, ifname: str | None):
    if ":" not in ip and (ip.endswith("/32") or "/" not in ip):  # one IPv4 address: no ipaddress
        addr = ip.partition("/")[0]
        return (HOST_BAN[4], addr) if ifname is None else (BAN[4], f.concat(ifname, addr))
    net = ipaddress.ip_network(ip)
    if ifname is None:
        return HOST_BAN[net.version], f.prefix(str(net))
    return BAN[net.version], f.concat(ifname, str(net.network_address))


def ban_set(ip: str, ifname: str | None) -> str:
    """The kernel set a ban of ``ip`` on ``ifname`` (None: host-wide) lives in."""
    return (BAN if ifname is not None else HOST_BAN)[6 if ":" in ip else 4]


def add_ban(ip: str, ifname: str | None, seconds: int | None) -> dict:
    return add_bans([(ip, ifname, seconds)])[0]


def add_bans(bans) -> list[dict]:
    """One command per ban set with every element in one list: loading 100,000 bans this way
    took half the time of one command per ban (bench/dataplane_bench.py)."""
    by_set: dict[str, list] = {}
    for ip, ifname, seconds in bans:
        name, key = _target(ip, ifname)
        by_set.setdefault(name, []).append(key if seconds is None else {"elem": {"val": key, "timeout": int(seconds)}})
    return [{"add": {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elems}}}
            for name, elems in sorted(by_set.items())]


def delete_ban(ip: str, ifname: str | None) -> dict:
    name, key = _target(ip, ifname)
    return {"delete": {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": [key]}}}


def add_memory(entries) -> list[dict]:
    """Give offender memory (``banbook.Memory``) back to the brute-force step sets, one command
    per set. Adding an element that is there keeps it as it is."""
    by_set: dict[str, list] = {}
    for m in entries:
        key = f.concat(m.interface_name, str(ipaddress.ip_network(m.ip_address).network_address))
        by_set.setdefault(m.set_name, []).append({"elem": {"val": key, "timeout": int(m.seconds)}})
    return [{"add": {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elems}}}
            for name, elems in sorted(by_set.items())]
