"""Fragments shared by the rule compilers: direction-aware matches, the verdict of a rule in
enforce and monitor mode, and the "new connection" predicates."""

from __future__ import annotations

from connguard.compiler import fragments as f
from connguard.compiler.context import RuleContext
from connguard.compiler.ruleset import Chain, Json, Rule
# the per-rule names the compilers use (connguard.names builds them)
from connguard.names import admitted_set as admitted_name  # noqa: F401
from connguard.names import bypass_set as bypass_name  # noqa: F401
from connguard.names import hit_set as hit_name  # noqa: F401
from connguard.names import refuse_chain  # noqa: F401
from connguard.model.rules import MatchFields

# Shared long-lived sets and connguard's ct mark bits: their names and values are part of the
# on-kernel contract and live in connguard.names (agent/DESIGN.md); re-exported for the compilers.
from connguard.names import (  # noqa: E402,F401
    ALLOW,
    BAN,
    BANS_PLACED,
    CT_BITS,
    CT_PENDING,
    CT_PENDING_BITS,
    CT_REFUSED,
    HOST_BAN,
    OFFENDERS,
    SET_FULL,
    SYNPROXY,
)


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




def refuse_chains() -> list[Chain]:
    """Where enforce-mode refusals end: the offender (port . remote) is recorded, with a
    counter, in ``offenders4/6``, then the packet is dropped or reset. The record is a rule of
    its own: when the offender set is full the kernel skips the rest of *that* rule only, and
    the refusal below still happens (a full set must never turn a refusal into a pass)."""
    out = []
    for d in ("ingress", "egress"):
        record = tuple(Rule((f.nfproto(v), f.dynset("update", OFFENDERS[v], f.concat(port_key(d), remote_key(d, v)))),
                            f"offender ipv{v}") for v in (4, 6))
        out.append(Chain(refuse_chain(d, "drop"), record + (Rule((f.drop(),), "refuse"),)))
        out.append(Chain(refuse_chain(d, "reset"), record + (Rule((f.l4proto("tcp"), f.reject_tcp_reset()), "refuse"),
                                                              Rule((f.drop(),), "refuse"))))
    return out


def refuse(ctx: RuleContext, protocol: str | None, *, gentle: bool, ack_stage: bool = False,
           direction: str | None = None) -> list[tuple[list[Json], list[Json]]]:
    """How a rule ends, as (extra matches placed before the statements, verdict). Enforce: TCP
    is reset when ``gentle`` (a connection cap: the client should give up at once) or at the
    synproxy ACK stage, else dropped (a rate limit: the client's retry lands in a later
    second); with ``direction`` through the refuse chains, which record the offender first.
    Monitor: no verdict."""
    if ctx.monitor:
        return [([], [])]

    def end(kind: str) -> list[Json]:
        if direction is not None:
            return [f.jump(refuse_chain(direction, kind))]
        return [f.reject_tcp_reset()] if kind == "reset" else [f.drop()]

    if ack_stage:
        return [([], end("reset"))]
    if not gentle:
        return [([], end("drop"))]
    if protocol == "tcp":
        return [([], end("reset"))]
    if protocol is None:
        return [([f.l4proto("tcp")], end("reset")), ([f.l4proto("tcp", "!=")], end("drop"))]
    return [([], end("drop"))]


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


# Per-port, per-rule counter sets (one element per port, a counter on each; keyed by the
# interface alone, so they cannot fill and an update never fails): what the agent reports as
# monotonic totals. Their names derive from the rule's id, never from its numbers, so a changed
# rate keeps the counts. (connguard.names: hit_set, admitted_set, bypass_set.)


def hits(name: str, direction: str) -> Json:
    """Count a refusal (or, in monitor mode, a would-be refusal) per port for this rule."""
    return f.dynset("update", name, port_key(direction))


def admitted(ctx: RuleContext, direction: str) -> Json:
    """Count a connection this rule let through, per port."""
    return f.dynset("update", admitted_name(ctx.rid), port_key(direction))


def bypassed(ctx: RuleContext, direction: str) -> list[Json]:
    """A set-full canary's statements: the host-wide counter and the rule's per-port count."""
    return [f.counter(SET_FULL), f.dynset("update", bypass_name(ctx.rid), port_key(direction))]
