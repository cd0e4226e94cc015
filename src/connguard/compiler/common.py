"""Fragments shared by the rule compilers: direction-aware matches, the verdict of a rule in
enforce and monitor mode, and the "new connection" predicates."""

from __future__ import annotations

from connguard.compiler import fragments as f
from connguard.compiler.context import RuleContext
from connguard.compiler.ruleset import Json
from connguard.model.rules import MatchFields

# Shared long-lived sets (names are part of the on-kernel contract; see agent/DESIGN.md).
BAN = {4: "ban4", 6: "ban6"}               # ifname . remote: port and remote may not talk
HOST_BAN = {4: "hostban4", 6: "hostban6"}  # prefix: banned from every protected port
OFFENDERS = {4: "offenders4", 6: "offenders6"}
ALLOW = {4: "allow4", 6: "allow6"}
SYNPROXY = {4: "synproxy4", 6: "synproxy6"}
SET_FULL = "set_full"
# packets that placed a ban (every ban rule counts here): the agent reads this one counter each
# pass instead of the ban sets, and reads those only when it moved (agent/banwatch.py)
BANS_PLACED = "bans_placed"

# ct mark bits owned by connguard (masked: every other bit of the mark is left alone). A
# brute-force rule marks a new connection to its service "pending" in its direction; the
# forward and input chains send packets of marked connections to the ``handshake`` chain, which
# meters the connection once its source has proven its address and then clears the pending
# bits. "refused" is set on a connection a brute-force rule turned away (ban, per-port budget,
# /48 meter): the handshake chain drops what its source still sends, except resets.
CT_PENDING = {"ingress": 1 << 24, "egress": 1 << 25}
CT_REFUSED = 1 << 26
CT_PENDING_BITS = CT_PENDING["ingress"] | CT_PENDING["egress"]
CT_BITS = CT_PENDING_BITS | CT_REFUSED


def port_key(direction: str) -> Json:
    """The protected port's interface: traffic towards the VM leaves by it, from the VM arrives."""
    return f.meta("oifname" if direction == "ingress" else "iifname")


def remote_side(direction: str) -> str:
    return "saddr" if direction == "ingress" else "daddr"


def remote_key(direction: str, version: int) -> Json:
    return f.remote_key(version, remote_side(direction))


def match_exprs(rule: MatchFields, direction: str, version: int | None) -> list[Json]:
    """The security-group style match of a rule, seen from the VM."""
    out: list[Json] = []
    if version is not None:
        out.append(f.nfproto(version))
    if rule.port_range_min is not None:
        out += f.port_match(rule.protocol, rule.port_range_min, rule.port_range_max)  # type: ignore[arg-type]
    elif rule.protocol is not None:
        out.append(f.l4proto(rule.protocol))
    if rule.remote_ip_prefix is not None:
        out.append(f.match(f.addr(version or 4, remote_side(direction)), f.prefix(rule.remote_ip_prefix)))
    return out


def new_connection_variants(ctx: RuleContext, direction: str, version: int | None, protocol: str | None,
                            ports: tuple[int, int] | None = None) -> list[tuple[list[Json], bool]]:
    """Predicates for "this packet starts a connection", each with whether it is the synproxy
    ACK stage. For services behind synproxy the SYN is untracked and the connection appears at
    the handshake's ACK (ct state invalid), so a second variant counts it there (DESIGN.md,
    "Synproxy"); refusing there means a reset, since the client already thinks it is connected.
    ``ports`` is the rule's service range: the ACK variant is only needed where it overlaps a
    proxied range."""
    variants: list[tuple[list[Json], bool]] = [([f.ct_state("new")], False)]
    if direction != "ingress" or protocol not in (None, "tcp"):
        return variants
    if not any(ports is None or (ports[0] <= hi and lo <= ports[1]) for lo, hi in ctx.synproxy):
        return variants
    for v in ((version,) if version else (4, 6)):
        variants.append(([
            f.ct_state("invalid"),
            f.nfproto(v),
            f.l4proto("tcp"),
            f.tcp_flags_ack_only(),
            f.in_set(f.concat(f.addr(v, "daddr"), f.payload("tcp", "dport")), SYNPROXY[v]),
        ], True))
    return variants


def refuse(ctx: RuleContext, protocol: str | None, *, gentle: bool, ack_stage: bool = False) -> list[tuple[list[Json], list[Json]]]:
    """How a rule ends, as (extra matches placed before the statements, verdict). Enforce: TCP
    is reset when ``gentle`` (a connection cap: the client should give up at once) or at the
    synproxy ACK stage, else dropped (a rate limit: the client's retry lands in a later
    second). Monitor: no verdict."""
    if ctx.monitor:
        return [([], [])]
    if ack_stage:
        return [([], [f.reject_tcp_reset()])]
    if not gentle:
        return [([], [f.drop()])]
    if protocol == "tcp":
        return [([], [f.reject_tcp_reset()])]
    if protocol is None:
        return [([f.l4proto("tcp")], [f.reject_tcp_reset()]), ([f.l4proto("tcp", "!=")], [f.drop()])]
    return [([], [f.drop()])]


def rule_ports(rule) -> tuple[int, int] | None:
    return None if rule.port_range_min is None else (rule.port_range_min, rule.port_range_max)


def versions_for(ctx: RuleContext, rule, *, keyed: bool) -> list[int | None]:
    """Rules keyed by a remote address, rules restricted to one family and all monitor-mode
    rules (which record the offender's address) are compiled once per IP version."""
    fams = rule.families()
    if keyed or ctx.monitor or len(fams) == 1:
        return list(fams)
    return [None]


def offender(ctx: RuleContext, direction: str, version: int | None) -> list[Json]:
    """In monitor mode, remember who would have been refused (per port and remote)."""
    if not ctx.monitor or version is None:
        return []
    return [f.dynset("update", OFFENDERS[version], f.concat(port_key(direction), remote_key(direction, version)),
                     timeout=None)]


def hits(name: str, direction: str) -> Json:
    """Count a refusal (or, in monitor mode, a would-be refusal) per port for this rule."""
    return f.dynset("update", name, port_key(direction))
