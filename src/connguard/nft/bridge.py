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


def drift(executor, taps: tuple[str, ...]) -> list[str]:  # noqa: ANN001 - an Executor
    """What differs between the kernel's bridge table and the one ``commands(taps)`` makes
    (read with nft: the table has one chain of two rules and one small set)."""
    from connguard.nft.executor import NftFailure

    try:
        items = executor.query("list", "table", BRIDGE_FAMILY, TABLE).get("nftables", [])
    except NftFailure:
        return [f"table {BRIDGE_FAMILY} {TABLE} is missing"]
    rules = [i["rule"] for i in items if "rule" in i and i["rule"].get("chain") == BRIDGE_CHAIN]
    hooked = [i["chain"] for i in items if "chain" in i and i["chain"].get("name") == BRIDGE_CHAIN]
    elems = next((i["set"].get("elem", []) for i in items if "set" in i and i["set"].get("name") == BRIDGE_TAPS), None)
    problems = []
    if not hooked or hooked[0].get("hook") != "prerouting" or hooked[0].get("prio") != PRIORITY:
        problems.append(f"chain {BRIDGE_FAMILY} {TABLE} {BRIDGE_CHAIN} is missing or re-hooked")
    if [r.get("comment") for r in rules] != ["entered from another port", "entered from a protected tap"]:
        problems.append(f"chain {BRIDGE_FAMILY} {TABLE} {BRIDGE_CHAIN} has other rules than applied")
    if elems is None or sorted(elems) != sorted(taps):
        problems.append(f"set {BRIDGE_FAMILY} {TABLE} {BRIDGE_TAPS} holds other taps than applied")
    return problems
