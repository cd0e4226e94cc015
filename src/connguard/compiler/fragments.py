"""Small helpers that build libnftables JSON expressions and statements.

Every value passed in has been validated by the model; these helpers only arrange it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

Json = Any

V6_MASK64 = "ffff:ffff:ffff:ffff::"
V6_MASK48 = "ffff:ffff:ffff::"
CT_MARK_BITS = 0xFFFFFFFF


def meta(key: str) -> Json:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def match(left: Json, right: Json, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def ct_state(*states: str) -> Json:
    right: Json = list(states) if len(states) > 1 else states[0]
    return match({"ct": {"key": "state"}}, right, "in")


def nfproto(version: int) -> Json:
    return match(meta("nfproto"), "ipv4" if version == 4 else "ipv6")


def l4proto(proto: str, op: str = "==") -> Json:
    return match(meta("l4proto"), proto, op)


def port_match(proto: str, port_min: int, port_max: int) -> list[Json]:
    right: Json = port_min if port_min == port_max else {"range": [port_min, port_max]}
    return [l4proto(proto), match(payload("th", "dport"), right)]


def tcp_flags_syn_only() -> Json:
    # tcp flags & (fin|syn|rst|ack) == syn
    return match({"&": [payload("tcp", "flags"), ["fin", "syn", "rst", "ack"]]}, "syn")


def tcp_flags_lack(flag: str) -> Json:
    return match({"&": [payload("tcp", "flags"), flag]}, 0)


def tcp_flags_ack_only() -> Json:
    return match({"&": [payload("tcp", "flags"), ["fin", "syn", "rst", "ack"]]}, "ack")


def addr(version: int, which: str) -> Json:
    """The remote/own address; IPv6 remotes are accounted per /64."""
    return payload("ip" if version == 4 else "ip6", which)


def remote_key(version: int, which: str) -> Json:
    if version == 4:
        return addr(4, which)
    return {"&": [addr(6, which), V6_MASK64]}


def remote_key48(which: str) -> Json:
    """An IPv6 remote's /48 (the usual size of one site's allocation)."""
    return {"&": [addr(6, which), V6_MASK48]}


def ct(key: str) -> Json:
    return {"ct": {"key": key}}


def ct_mark_any(bits: int) -> Json:
    """ct mark & bits != 0: one ct load, whatever else the mark carries."""
    return match({"&": [ct("mark"), bits]}, 0, "!=")


def ct_mark_or(bits: int) -> Json:
    """Set ``bits`` in the ct mark, keeping every other bit (other users of ct mark)."""
    return {"mangle": {"key": ct("mark"), "value": {"|": [ct("mark"), bits]}}}


def ct_mark_clear(bits: int) -> Json:
    return {"mangle": {"key": ct("mark"), "value": {"&": [ct("mark"), CT_MARK_BITS & ~bits]}}}


def ct_status_lacks(flag: str) -> Json:
    """ct status & flag == 0 (``assured``, ``seen-reply``)."""
    return match({"&": [ct("status"), flag]}, 0)


def ct_direction(direction: str) -> Json:
    return match(ct("direction"), direction)


def prefix(value: str) -> Json:
    net = ipaddress.ip_network(value)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def concat(*parts: Json) -> Json:
    return {"concat": list(parts)}


def in_set(left: Json, name: str, negate: bool = False) -> Json:
    return match(left, f"@{name}", "!=" if negate else "==")


def limit(rate: int, per: str, burst: int) -> Json:
    return {"limit": {"rate": rate, "per": per, "burst": burst, "burst_unit": "packets", "inv": True}}


def dynset(op: str, name: str, key: Json, *stmts: Json, timeout: int | None = None) -> Json:
    elem: Json = key
    if timeout is not None:
        elem = {"elem": {"val": key, "timeout": timeout}}
    out: dict = {"op": op, "elem": elem, "set": f"@{name}"}
    if stmts:
        out["stmt"] = list(stmts)
    return {"set": out}


def ct_count(over: int) -> Json:
    return {"ct count": {"val": over, "inv": True}}


def counter(name: str | None = None) -> Json:
    return {"counter": name}


def drop() -> Json:
    return {"drop": None}


def accept() -> Json:
    return {"accept": None}


def ret() -> Json:
    return {"return": None}


def jump(chain: str) -> Json:
    return {"jump": {"target": chain}}


def reject_tcp_reset() -> Json:
    return {"reject": {"type": "tcp reset"}}


def notrack() -> Json:
    return {"notrack": None}


def synproxy(mss: int, wscale: int) -> Json:
    return {"synproxy": {"mss": mss, "wscale": wscale, "flags": ["timestamp", "sack-perm"]}}


def vmap(key: Json, map_name: str) -> Json:
    return {"vmap": {"key": key, "data": f"@{map_name}"}}


def per_unit(count: int, seconds: int) -> tuple[int, str]:
    """Express ``count`` per ``seconds`` as an integer nft rate, exactly when possible."""
    units = (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400), ("week", 604800))
    for name, length in units:
        if (count * length) % seconds == 0:
            return count * length // seconds, name
    return max(1, round(count * 604800 / seconds)), "week"
