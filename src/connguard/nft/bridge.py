"""The bridge-family table that tells the inet table which packets come from a bridged port.

With br_netfilter the inet hooks see a bridged packet's bridge as both its input and its output
interface; only the bridge family sees the bridge *port* (the tap). So ``bridge connguard``
holds one chain at bridge prerouting, before br_netfilter's own hook (priority 0, where conntrack
and the inet prerouting chains run): a packet that enters a bridge from a protected tap gets
``META_FROM_PORT`` in its meta mark, any other packet entering a bridge loses it (the mark
survives a veth pair, so without the clear a VM's packet would still look "from a VM" in the
next bridge). The inet forward chain then dispatches on (bridge, bit) (compiler/dispatch.py).

The table is tiny and owned whole: every apply that involves bridged ports re-sends all of it in
the same batch as the inet table (flush and refill: atomic with the rest).
"""

from __future__ import annotations

from connguard.names import BRIDGE_CHAIN, BRIDGE_FAMILY, BRIDGE_TAPS, META_FROM_PORT, TABLE
from connguard.nft.render import Cmd

T = {"family": BRIDGE_FAMILY, "table": TABLE}
PRIORITY = -300  # before br_netfilter (0): the mark must be set before the inet hooks run
SYSCTLS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")

_MARK = {"meta": {"key": "mark"}}


def commands(taps: tuple[str, ...]) -> list[Cmd]:
    """The whole bridge table for ``taps``; with no taps, its removal (add first: deleting an
    absent table would fail the batch)."""
    table: Cmd = ({"add": {"table": {"family": BRIDGE_FAMILY, "name": TABLE}}}, "bridge table")
    if not taps:
        return [table, ({"delete": {"table": {"family": BRIDGE_FAMILY, "name": TABLE}}}, "bridge table")]
    clear = {"match": {"op": "!=", "left": {"&": [_MARK, META_FROM_PORT]}, "right": 0}}
    return [
        table,
        ({"add": {"set": {**T, "name": BRIDGE_TAPS, "type": "ifname"}}}, "bridge taps"),
        ({"flush": {"set": {**T, "name": BRIDGE_TAPS}}}, "bridge taps"),
        ({"add": {"element": {**T, "name": BRIDGE_TAPS, "elem": sorted(taps)}}}, "bridge taps"),
        ({"add": {"chain": {**T, "name": BRIDGE_CHAIN, "type": "filter", "hook": "prerouting",
                            "prio": PRIORITY, "policy": "accept"}}}, "bridge chain"),
        ({"flush": {"chain": {**T, "name": BRIDGE_CHAIN}}}, "bridge chain"),
        ({"add": {"rule": {**T, "chain": BRIDGE_CHAIN, "comment": "entered from another port", "expr": [
            clear, {"mangle": {"key": _MARK, "value": {"&": [_MARK, 0xFFFFFFFF & ~META_FROM_PORT]}}}]}}},
         "bridge chain"),
        ({"add": {"rule": {**T, "chain": BRIDGE_CHAIN, "comment": "entered from a protected tap", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": f"@{BRIDGE_TAPS}"}},
            {"mangle": {"key": _MARK, "value": {"|": [_MARK, META_FROM_PORT]}}}]}}}, "bridge chain"),
    ]
