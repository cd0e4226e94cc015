"""Base chains, dispatch maps and the host-wide sets: bans, allowlist, synproxy services.

Dispatch is by verdict map on the interface name, in both directions (O(1) in the number of
ports; one linear rule per port cost 36-80% of throughput, DESIGN.md "Dataplane"). Bans are
dropped before ``ct state established,related accept``, so a ban also cuts established flows;
between the two, connections a brute-force rule waits on go to the ``handshake`` chain.
"""

from __future__ import annotations

import ipaddress
import socket

from connguard.compiler import fragments as f
from connguard.compiler.common import (
    ALLOW,
    BAN,
    CT_BITS,
    CT_PENDING,
    CT_PENDING_BITS,
    CT_REFUSED,
    HOST_BAN,
    OFFENDERS,
    SYNPROXY,
)
from connguard.compiler.context import BAN_SET_SIZE, OFFENDER_TIMEOUT, PORT_SET_SIZE, REMOTE_SET_SIZE
from connguard.compiler.ruleset import Chain, Element, Hook, NftSet, Rule
from connguard.model.objects import AllowlistEntry, Ban
from connguard.model.state import normalise_remote
from connguard.names import (  # noqa: F401  (BANNED, FROM_VM, PORTS, TO_VM re-exported)
    BAN_HIT,
    BANNED,
    FORWARD,
    FROM_BR,
    FROM_VM,
    META_FROM_PORT,
    HANDSHAKE,
    HOST_IN,
    HOST_OUT,
    PORTS,
    RAW_PRE,
    TO_BR,
    TO_VM,
    bans_chain,
)


RAW_PRIORITY = -300
FILTER_PRIORITY = -10  # before the usual filter chains, so bans win over their accepts

ADDR = {4: "ipv4_addr", 6: "ipv6_addr"}


def _ban_chain(v: int) -> Chain:
    """Every forwarded packet passes here (bans must cut established flows too), so one chain
    per family, entered by a single nfproto dispatch, keeps it to four lookups."""
    rules = []
    for port, side in (("oifname", "saddr"), ("iifname", "daddr")):
        rules.append(Rule((f.in_set(f.concat(f.meta(port), f.remote_key(v, side)), BAN[v]), f.jump(BAN_HIT)),
                          f"ban {port} ipv{v}"))
    for port, side in (("oifname", "saddr"), ("iifname", "daddr")):
        rules.append(Rule((f.in_set(f.meta(port), PORTS), f.in_set(f.addr(v, side), HOST_BAN[v]), f.jump(BAN_HIT)),
                          f"host ban {port} ipv{v}"))
    return Chain(bans_chain(v), tuple(rules))


def _ban_hit_chain() -> Chain:
    """A banned packet. A connection a brute-force rule refused (the banning one included) goes
    on to the handshake chain, which lets only its resets and replies through: the VM's
    retransmission must meet the client's reset, or the VM's half-open socket and the
    established conntrack entry outlive the ban. Everything else is dropped, untracked and
    invalid packets included: their ``ct mark`` does not evaluate, so the ``return`` rule does
    not match them (a banned source's SYN to a proxied service gets no cookie). Reached only
    on a ban's lookup hit: other packets pay nothing for the mark test."""
    return Chain(BAN_HIT, (
        Rule((f.ct_mark_any(CT_REFUSED), f.ret()), "refused connection: to the handshake chain"),
        Rule((f.counter(BANNED), f.drop()), "banned"),
    ))


def _bridged_dispatch() -> list[Rule]:
    """Bridged ports are keyed by their bridge, which the inet hooks see as both the input and
    the output interface; the bridge-family chain (nft/bridge.py) tells the direction by a
    meta mark bit set when the packet entered the bridge from the port's tap (a VM cannot
    forge the port it arrives on). Emitted only when the host has bridged ports: a routed-only
    host pays nothing."""
    from_port = f.match({"&": [f.meta("mark"), META_FROM_PORT]}, 0, "!=")
    to_port = f.match({"&": [f.meta("mark"), META_FROM_PORT]}, 0, "==")
    return [Rule((from_port, f.vmap(f.meta("iifname"), FROM_BR)), "dispatch from bridged VM"),
            Rule((to_port, f.vmap(f.meta("oifname"), TO_BR)), "dispatch to bridged VM")]


def _handshake_chain(bridged: bool = False) -> Chain:
    """Packets of connections a brute-force rule marked pending (or refused). Until the source
    has proven its address they go back to the fast path; the first packet after the proof is
    dispatched to the port's policy chains, whose brute-force rules meter it (they match only
    ``ct state established`` with their pending bit, which only this chain can bring there),
    and the pending bits are cleared: one count per connection. Only TCP connections are marked
    (the model refuses udp and sctp brute-force rules); the proof is ``assured``: the
    handshake's ACK accepted by conntrack, or behind synproxy, set when synproxy completes the
    handshake with the VM. A refused connection (over a budget, or banned: the ban chain lets
    it through to here) loses everything its source sends except resets: the VM's SYN-ACK
    retransmissions (or whatever it sends next, if it is established) still reach the client,
    whose reset then closes the VM's socket and the conntrack entry (which would otherwise stay
    established for days)."""
    refused = f.ct_mark_any(CT_REFUSED)
    original = f.ct_direction("original")
    return Chain(HANDSHAKE, (
        Rule((refused, original, f.l4proto("tcp"), f.tcp_flags_lack("rst"), f.drop()), "refused connection"),
        Rule((refused, f.ret()), "refused connection: resets and replies"),
        Rule((f.ct_direction("reply"), f.ret()), "reply"),
        Rule((f.ct_status_lacks("assured"), f.ret()), "not yet proven"),
        Rule((f.vmap(f.meta("iifname"), FROM_VM),), "count from VM"),
        Rule((f.vmap(f.meta("oifname"), TO_VM),), "count to VM"),
        *(_bridged_dispatch() if bridged else ()),
        # with bridged ports a packet can cross the forward hook twice (routed by the host, then
        # bridged to the tap: the hybrid layout); only the pass that reached a port counts
        *((Rule((f.in_set(f.meta("iifname"), PORTS, negate=True), f.in_set(f.meta("oifname"), PORTS, negate=True),
                 f.ret()), "not at a port yet"),) if bridged else ()),
        Rule((f.ct_mark_clear(CT_PENDING_BITS),), "counted"),
    ))


def _host_out_chain() -> Chain:
    """Behind synproxy the forward chain never sees a new connection: the SYN towards the VM is
    the host's own, sent once the client's cookie checked out. Mark it pending here so that the
    handshake chain counts the connection (once, like any other; allowlisted sources return in
    the policy chain before any count)."""
    return Chain(HOST_OUT, tuple(
        Rule((f.nfproto(v), f.l4proto("tcp"), f.tcp_flags_syn_only(),
              f.in_set(f.concat(f.addr(v, "daddr"), f.payload("tcp", "dport")), SYNPROXY[v]),
              f.ct_state("new"), f.ct_mark_or(CT_PENDING["ingress"])), f"synproxy pending ipv{v}")
        for v in (4, 6)), Hook("output", FILTER_PRIORITY))


def base_chains(bridged: bool = False) -> list[Chain]:
    established = Rule((f.ct_state("established", "related"), f.accept()), "established")
    # the fast path pays one ct mark load for this: only connections a brute-force rule is
    # waiting on (pending) or turned away (refused) carry these bits
    handshake = Rule((f.ct_mark_any(CT_BITS), f.jump(HANDSHAKE)), "handshake")
    raw = Chain(RAW_PRE, tuple(_notrack_rule(v) for v in (4, 6)), Hook("prerouting", RAW_PRIORITY))
    by_family = {"vmap": {"key": f.meta("nfproto"), "data": {"set": [["ipv4", f.jump(bans_chain(4))],
                                                                      ["ipv6", f.jump(bans_chain(6))]]}}}
    forward = Chain(FORWARD, tuple([
        Rule((by_family,), "bans"),
        handshake,
        established,
        Rule((f.vmap(f.meta("iifname"), FROM_VM),), "dispatch from VM"),
        Rule((f.vmap(f.meta("oifname"), TO_VM),), "dispatch to VM"),
        *(_bridged_dispatch() if bridged else ()),
    ]), Hook("forward", FILTER_PRIORITY))
    # VM -> host services (DHCP, DNS, metadata) traverse input, not forward.
    host_in = Chain(HOST_IN, (handshake, established, Rule((f.vmap(f.meta("iifname"), FROM_VM),), "dispatch from VM")),
                    Hook("input", FILTER_PRIORITY))
    return [raw, forward, host_in, _handshake_chain(bridged), _host_out_chain(), _ban_chain(4), _ban_chain(6),
            _ban_hit_chain()]


def _notrack_rule(v: int) -> Rule:
    """Plain SYNs to a proxied service skip conntrack, so synproxy answers them and a spoofed
    flood creates no entry. Allowlisted sources are proxied too: the allowlist exempts from
    per-source limits, not from flood protection (a real client does not notice synproxy).
    SYNs that come from one of this host's ports (a neighbour VM) stay tracked, so the sender's
    egress rate limits and ``ct count`` caps see the connection (they match ``ct state new``,
    and a cap needs a conntrack entry); the receiver then treats it as an unproxied client.
    Only plain SYNs: a SYN+ACK may answer the VM's own connection and must find its entry;
    SYN+FIN and SYN+RST are flagged invalid by conntrack without an entry and are counted by
    the SYN budget and dropped in the policy chain (syn_flood.py)."""
    return Rule((f.nfproto(v), f.l4proto("tcp"), f.tcp_flags_syn_only(),
                 f.in_set(f.concat(f.addr(v, "daddr"), f.payload("tcp", "dport")), SYNPROXY[v]),
                 f.in_set(f.meta("iifname"), PORTS, negate=True),
                 f.notrack()),
                f"synproxy notrack ipv{v}")


def _collapse(prefixes: list[str], version: int) -> list[str]:
    nets = [ipaddress.ip_network(p) for p in prefixes if ipaddress.ip_network(p).version == version]
    return [str(n) for n in ipaddress.collapse_addresses(nets)]  # type: ignore[arg-type]


def _merge_ranges(services: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Per address, merge overlapping or adjacent port ranges: an interval set refuses
    overlapping elements (two syn_flood rules may cover the same ports)."""
    merged: list[tuple[str, int, int]] = []
    for ip, lo, hi in sorted(set(services), key=lambda t: (ipaddress.ip_address(t[0]), t[1], t[2])):
        if merged and merged[-1][0] == ip and lo <= merged[-1][2] + 1:
            merged[-1] = (ip, merged[-1][1], max(hi, merged[-1][2]))
        else:
            merged.append((ip, lo, hi))
    return merged


def host_sets(*, allowlist: tuple[AllowlistEntry, ...], ports: list[str],
              synproxy: dict[int, list[tuple[str, int, int]]],
              to_vm: dict[str, str], from_vm: dict[str, str],
              to_br: dict[str, str] | None = None, from_br: dict[str, str] | None = None) -> list[NftSet]:
    sets: list[NftSet] = []
    for v in (4, 6):
        remote = ("ifname", ADDR[v])
        sets.append(NftSet(BAN[v], remote, flags=("timeout",), size=BAN_SET_SIZE))
        sets.append(NftSet(HOST_BAN[v], (ADDR[v],), flags=("interval", "timeout"), size=BAN_SET_SIZE))
        # who was refused (enforce) or would be (monitor), per port, with how often
        sets.append(NftSet(OFFENDERS[v], remote, flags=("timeout",), size=REMOTE_SET_SIZE,
                           timeout=OFFENDER_TIMEOUT, counter=True))
        allowed = _collapse([e.remote_ip_prefix for e in allowlist], v)
        sets.append(NftSet(ALLOW[v], (ADDR[v],), flags=("interval",),
                           elements=tuple(Element(f.prefix(p)) for p in allowed)))
        proxied = _merge_ranges(synproxy.get(v, []))
        sets.append(NftSet(SYNPROXY[v], (ADDR[v], "inet_service"), flags=("interval",), elements=tuple(
            Element(f.concat(ip, lo if lo == hi else {"range": [lo, hi]})) for ip, lo, hi in proxied)))
    sets.append(NftSet(PORTS, ("ifname",), size=PORT_SET_SIZE, elements=tuple(Element(p) for p in sorted(ports))))
    maps = [(TO_VM, to_vm), (FROM_VM, from_vm)]
    if to_br or from_br:  # only hosts with bridged ports have these maps
        maps += [(TO_BR, to_br or {}), (FROM_BR, from_br or {})]
    for name, targets in maps:
        verdicts = {chain: f.jump(chain) for chain in set(targets.values())}  # shared, never mutated
        sets.append(NftSet(name, ("ifname",), map="verdict", size=PORT_SET_SIZE, elements=tuple(
            Element(port, verdicts[chain]) for port, chain in sorted(targets.items()))))
    return sets


def ban_key(ban: Ban) -> tuple[str | None, str]:
    """(interface, remote) as the kernel's ban sets and ``observe`` spell them."""
    addr, _, plen = ban.ip_address.partition("/")  # the model spells it as a network: a.b.c.d/n
    if ":" not in addr and plen in ("", "32"):  # the common case, without ipaddress's cost
        return ban.interface_name, addr
    net = ipaddress.ip_network(ban.ip_address)
    if ban.interface_name is not None:
        return ban.interface_name, normalise_remote(str(net.network_address))
    return None, str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _span(ip: str) -> tuple[int, int, int]:
    """(family, first, last address) of a prefix as integers."""
    addr, _, plen = ip.partition("/")
    v = 6 if ":" in addr else 4
    bits = 32 if v == 4 else 128
    first = int.from_bytes(socket.inet_pton(socket.AF_INET if v == 4 else socket.AF_INET6, addr), "big")
    n = bits if plen == "" else int(plen)
    return v, first, first + (1 << (bits - n)) - 1


def collapse_bans(bans: tuple[Ban, ...]) -> list[tuple[tuple[str | None, str], int | None]]:
    """State-file bans as the kernel can hold them: ``(ban_key, seconds)``, one per key (the
    longer lifetime of duplicates). Host-wide prefixes go into an interval set, which refuses
    overlaps: a prefix inside another one is left out (the wider ban already covers it; the
    longer lifetime is kept). O(n log n): 100,000 bans are a sort and one sweep."""
    port_bans: dict[tuple, int | None] = {}
    host: dict[int, list[tuple[int, int, str, int | None]]] = {4: [], 6: []}
    for ban in bans:
        key = ban_key(ban)
        if ban.interface_name is not None:
            port_bans[key] = _longer(port_bans.get(key, 0), ban.seconds)
        else:
            v, first, last = _span(ban.ip_address)
            host[v].append((first, last, key[1], ban.seconds))
    out: list[tuple[tuple[str | None, str], int | None]] = sorted(port_bans.items(), key=lambda kv: kv[0])
    for v, spans in host.items():
        # by start address, the wider prefix first: prefixes nest or are disjoint, so a prefix
        # inside any kept one is inside the last one kept (compared as integers: ipaddress
        # took seconds for 100,000 bans)
        kept: list[list] = []  # [first, last, remote, seconds]
        for first, last, remote, seconds in sorted(spans, key=lambda t: (t[0], -t[1])):
            if kept and first <= kept[-1][1]:
                kept[-1][3] = _longer(kept[-1][3], seconds)
            else:
                kept.append([first, last, remote, seconds])
        out += [((None, remote), sec) for _, _, remote, sec in kept]
    return out


def ban_elements(bans: tuple[Ban, ...]) -> dict[str, list[Element]]:
    """State-file bans (``collapse_bans``) as elements of the long-lived ban sets, for
    ``connguard apply`` (the agent places them itself: nft/bans.py)."""
    out: dict[str, list[Element]] = {}
    for (ifname, remote), seconds in collapse_bans(bans):
        v = 6 if ":" in remote else 4
        if ifname is not None:
            out.setdefault(BAN[v], []).append(Element(f.concat(ifname, remote), timeout=seconds))
        else:
            out.setdefault(HOST_BAN[v], []).append(Element(f.prefix(remote), timeout=seconds))
    return out


def _longer(a: int | None, b: int | None) -> int | None:
    """The longer of two ban lifetimes; None (no expiry) is the longest."""
    return None if a is None or b is None else max(a, b)
