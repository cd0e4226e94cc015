"""connection_limit: concurrent connections (conntrack count) per port or per remote.

``direction: any`` compiles into both chains against the same set, so both directions share
the port's quota. The set keeps a conncount list per key; the kernel prunes closed connections.
Refusal is a TCP reset so clients fail fast instead of retrying a dropped SYN.

What the cap costs (kernel nf_conncount, measured by ``bench/dataplane_bench.py --perf``, see
docs/benchmarks.md): each new connection allocates a list node, and at most once per jiffy (or
after 64 additions) the addition walks the key's list, one conntrack lookup per live
connection, to drop the closed ones. The cost is therefore proportional to the port's *live*
connections, not to the rate: small for short-lived connections, large for a port holding
thousands. No other nftables expression counts concurrent connections (an anonymous ``ct
count`` uses the same list, per rule; there is no per-zone limit), and the count needs every
connection of the port in one list, so the rule stays as it is: last in the policy chain (the
rate limits above it drop first and cost less) and only on ``ct state new`` packets: a TCP
connection's SYN (a retransmitted SYN, or a one-way UDP flow, new on every packet, is looked
up in the list instead, which the kernel does by walking it).
The set's name carries ``max_connections``: each element copies the number of the rule that
created it, so a changed cap under the same name would never reach the ports already counted.
A changed cap therefore starts a fresh count: the connections open at the change are not
counted against the new cap (they were admitted under the old one).
A closed connection stays counted until the next walk: up to one jiffy (4 ms at HZ=250) of
back-to-back connections near the cap can be refused although fewer are open (fail-closed).
"""

from __future__ import annotations

from connguard.compiler import fragments as f
from connguard.compiler.common import admitted, bypassed, hits, match_exprs, new_connection_variants, offender, port_key, refuse, remote_key, rule_ports, versions_for
from connguard.compiler.context import REMOTE_SET_SIZE, Contribution, RuleContext, Stage, per_port_set
from connguard.compiler.rate_limit import ADDR_TYPE, counter_sets
from connguard.compiler.ruleset import NftSet, Rule
from connguard.model.rules import ConnectionLimitRule
from connguard.names import conncount_set
from connguard.names import hit_set as hit_set_name


def compile_conn_limit(ctx: RuleContext) -> Contribution:
    rule: ConnectionLimitRule = ctx.rule
    out = Contribution(sets=counter_sets(ctx.rid))
    directions = ("ingress", "egress") if rule.direction == "any" else (rule.direction,)
    per_remote = rule.scope == "remote_ip"
    stage = Stage.CONN_PER_REMOTE if per_remote else Stage.CONN_PER_PORT
    count = f.ct_count(rule.max_connections)
    base_name = conncount_set(ctx.rid, rule.max_connections)
    if not per_remote:
        out.sets.append(per_port_set(base_name))
    for v in versions_for(ctx, rule, keyed=per_remote):
        if per_remote:
            out.sets.append(NftSet(conncount_set(ctx.rid, rule.max_connections, v), ("ifname", ADDR_TYPE[v]), size=REMOTE_SET_SIZE))
        for d in directions:
            if per_remote:
                name, key = conncount_set(ctx.rid, rule.max_connections, v), f.concat(port_key(d), remote_key(d, v))
            else:
                name, key = base_name, port_key(d)
            for pred, ack in new_connection_variants(ctx, d, v, rule.protocol, rule_ports(rule)):
                base = pred + match_exprs(rule, d, v)
                for pre, verdict in refuse(ctx, rule.protocol, gentle=True, ack_stage=ack, direction=d):
                    stmts = [f.dynset("add", name, key, count), hits(hit_set_name(ctx.rid), d)]
                    out.add(d, stage, Rule(tuple(base + pre + stmts + offender(ctx, d, v) + verdict), ctx.origin(d)))
                if per_remote:
                    # a full per-remote count set fails open (the rule is skipped): count it
                    out.add(d, stage, Rule(tuple(base + [f.in_set(key, name, negate=True), *bypassed(ctx, d)]),
                                           ctx.origin(d) + " set-full"))
                out.add(d, stage, Rule(tuple(base + [admitted(ctx, d)]), ctx.origin(d) + " admitted"))
    return out
