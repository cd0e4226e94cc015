"""connection_rate_limit: new connections per second, per port (aggregate) or per remote.

Per-remote buckets live in a dynamic set keyed ``ifname . remote`` (IPv6 per /64) that is never
flushed by an apply. When the set is full the kernel skips the rest of the rule and the packet
passes (fail-open); the canary rule right below counts those bypasses in ``set_full``, and a
port-scope rule in the same policy bounds the damage. Aggregates live in a set keyed by the
port alone, which cannot fill up (context.per_port_set): they fail closed.
"""

from __future__ import annotations

from connguard.compiler import fragments as f
from connguard.compiler.common import (
    admitted,
    admitted_name,
    bypass_name,
    bypassed,
    hit_name,
    hits,
    match_exprs,
    new_connection_variants,
    offender,
    port_key,
    refuse,
    remote_key,
    rule_ports,
    versions_for,
)
from connguard.compiler.context import (
    PORT_SET_SIZE,
    RATE_SET_TIMEOUT,
    REMOTE_SET_SIZE,
    Contribution,
    per_port_set,
    RuleContext,
    Stage,
)
from connguard.compiler.ruleset import NftSet, Rule
from connguard.model.rules import ConnectionRateLimitRule
from connguard.names import ROLE_PER_PORT, rate_aggregate_set, rate_remote_set
from connguard.names import hit_set as hit_set_name

ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}


def counter_sets(rid: str) -> list[NftSet]:
    """The rule's per-port counters: refused (``h``), admitted (``n``), set-full bypasses (``u``)."""
    return [NftSet(name(rid), ("ifname",), size=PORT_SET_SIZE, counter=True, role=ROLE_PER_PORT)
            for name in (hit_name, admitted_name, bypass_name)]


def compile_rate_limit(ctx: RuleContext) -> Contribution:
    rule: ConnectionRateLimitRule = ctx.rule
    d = rule.direction
    out = Contribution(sets=counter_sets(ctx.rid))
    hit = hits(hit_set_name(ctx.rid), d)
    origin = ctx.origin(d)
    bucket = f.limit(rule.max_cps, "second", rule.max_burst_cps)  # type: ignore[arg-type]

    if rule.scope == "remote_ip":
        for v in versions_for(ctx, rule, keyed=True):
            name = rate_remote_set(ctx.rid, v)
            out.sets.append(NftSet(name, ("ifname", ADDR_TYPE[v]), flags=("timeout",), size=REMOTE_SET_SIZE))
            key = f.concat(port_key(d), remote_key(d, v))
            for pred, ack in new_connection_variants(ctx, d, v, rule.protocol, rule_ports(rule)):
                base = pred + match_exprs(rule, d, v)
                for pre, verdict in refuse(ctx, rule.protocol, gentle=False, ack_stage=ack, direction=d):
                    stmts = [f.dynset("add", name, key, bucket, timeout=RATE_SET_TIMEOUT), hit]
                    out.add(d, Stage.RATE_PER_REMOTE,
                            Rule(tuple(base + pre + stmts + offender(ctx, d, v) + verdict), origin))
                out.add(d, Stage.RATE_PER_REMOTE,
                        Rule(tuple(base + [f.in_set(key, name, negate=True), *bypassed(ctx, d)]), origin + " set-full"))
                out.add(d, Stage.RATE_PER_REMOTE, Rule(tuple(base + [admitted(ctx, d)]), origin + " admitted"))
        return out

    # The name carries the numbers: a changed rate starts fresh buckets at the new rate rather
    # than keeping the old rate in every existing element.
    aggregate = per_port_set(rate_aggregate_set(ctx.rid, rule.max_cps, rule.max_burst_cps))
    out.sets.append(aggregate)
    for v in versions_for(ctx, rule, keyed=False):
        for pred, ack in new_connection_variants(ctx, d, v, rule.protocol, rule_ports(rule)):
            base = pred + match_exprs(rule, d, v)
            for pre, verdict in refuse(ctx, rule.protocol, gentle=False, ack_stage=ack, direction=d):
                stmts = [f.dynset("add", aggregate.name, port_key(d), bucket), hit]
                out.add(d, Stage.RATE_PER_PORT,
                        Rule(tuple(base + pre + stmts + offender(ctx, d, v) + verdict), origin))
            out.add(d, Stage.RATE_PER_PORT, Rule(tuple(base + [admitted(ctx, d)]), origin + " admitted"))
    return out
