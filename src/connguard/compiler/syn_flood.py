"""syn_flood: an aggregate SYN budget per port and, on routed ports, synproxy.

With synproxy the SYN is not tracked (raw prerouting marks it notrack, see dispatch.py), the
host answers with a SYN cookie and only a client that completes the handshake reaches the VM:
a spoofed flood creates no conntrack entry. The budget is keyed by the port alone (it
cannot fill up), so a flood with random sources cannot get around it. Monitor mode counts what the
budget would drop and does not proxy.

The budget counts every packet with SYN set that reaches the policy chain, whatever its other
flags and its conntrack state (new, untracked, or invalid: conntrack flags SYN+FIN, SYN+RST and
a SYN+ACK without an entry as invalid; replies to the VM's own connections are established and
accepted before dispatch). Within the budget, only a plain SYN goes on: SYN+FIN, SYN+RST and
SYN+ACK never open a connection to the VM, and answering them (synproxy answers any SYN with a
cookie) would make the host a reflector, so they are dropped before synproxy and the VM.
"""

from __future__ import annotations

from connguard.compiler import fragments as f
from connguard.compiler.common import SYNPROXY, admitted, hits, refuse
from connguard.compiler.context import Contribution, RuleContext, Stage, per_port_set
from connguard.compiler.rate_limit import counter_sets
from connguard.compiler.ruleset import Rule
from connguard.model.rules import SynFloodRule
from connguard.names import hit_set as hit_set_name
from connguard.names import syn_budget_set

_FLAGS = f.payload("tcp", "flags")


def syn_set() -> f.Json:
    """tcp flags & syn == syn: any SYN, whatever else is set."""
    return f.match({"&": [_FLAGS, "syn"]}, "syn")


def not_plain_syn() -> f.Json:
    """tcp flags & (fin|syn|rst|ack) != syn (with syn_set: SYN+FIN, SYN+RST, SYN+ACK...)."""
    return f.match({"&": [_FLAGS, ["fin", "syn", "rst", "ack"]]}, "syn", "!=")


def compile_syn_flood(ctx: RuleContext) -> Contribution:
    rule: SynFloodRule = ctx.rule
    out = Contribution(sets=counter_sets(ctx.rid))
    budget = per_port_set(syn_budget_set(ctx.rid, rule.max_syn_rate))
    out.sets.append(budget)
    tokens = f.limit(rule.max_syn_rate, "second", rule.max_syn_rate)
    proxy = rule.synproxy and not ctx.monitor
    origin = ctx.origin("ingress")
    hit = hits(hit_set_name(ctx.rid), "ingress")
    for v in rule.families():
        service = [f.nfproto(v)] + f.port_match("tcp", rule.port_range_min, rule.port_range_max)  # type: ignore[arg-type]
        proxied = f.in_set(f.concat(f.addr(v, "daddr"), f.payload("tcp", "dport")), SYNPROXY[v])
        # no ct state: untracked (notracked for synproxy), new (everything else to the port:
        # ports without fixed_ips, secondary addresses, SYNs from a neighbour VM) and invalid
        # (the odd flag combinations) all count
        for pre, verdict in refuse(ctx, "tcp", gentle=False):
            stmts = [f.dynset("add", budget.name, f.meta("oifname"), tokens), hit]
            out.add("ingress", Stage.SYN_BUDGET, Rule(tuple(service + [syn_set()] + pre + stmts + verdict), origin))
        if not ctx.monitor:
            # not in ``hits``: that counts the budget's refusals, the figure an operator sizes it by
            out.add("ingress", Stage.SYN_BUDGET, Rule(tuple(service + [syn_set(), not_plain_syn(), f.drop()]),
                                                      origin + " not a plain SYN"))
        # SYNs within the budget (enforce: plain ones only, the others were dropped above)
        out.add("ingress", Stage.SYN_BUDGET, Rule(tuple(service + [syn_set(), admitted(ctx, "ingress")]),
                                                  origin + " admitted"))
        if proxy:
            out.synproxy_services.append((v, rule.port_range_min, rule.port_range_max))  # type: ignore[arg-type]
            out.add("ingress", Stage.SYNPROXY, Rule(
                tuple([f.ct_state("invalid", "untracked")] + service + [proxied, f.synproxy(rule.mss, rule.wscale)]),
                origin))
            out.add("ingress", Stage.INVALID, Rule(
                tuple([f.ct_state("invalid", "untracked")] + service + [proxied, f.drop()]), origin + " invalid"))
    return out
