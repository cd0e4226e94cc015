"""brute_force: ban a remote after ``max_attempts`` new connections to a login service within
``window`` seconds.

The meter is a per-(port, remote) bucket of ``max_attempts`` tokens refilled at
max_attempts/window, so exactly ``max_attempts`` connections pass and the next one is dropped
and jumps to the punishment chain (punishment.py): it puts ``port . remote`` into the shared
ban set, escalated by the rule's own offender memory in the kernel, and clears the meter.
"""

from __future__ import annotations

from connguard.compiler import fragments as f
from connguard.compiler.common import hits, new_connection_variants, offender, port_key, remote_key, remote_side
from connguard.compiler.context import BAN_SET_SIZE, Contribution, RuleContext, Stage
from connguard.compiler.punishment import punishment
from connguard.compiler.rate_limit import ADDR_TYPE, hit_set
from connguard.compiler.ruleset import NftSet, Rule
from connguard.model.rules import BruteForceRule


def compile_brute_force(ctx: RuleContext) -> Contribution:
    rule: BruteForceRule = ctx.rule
    d = rule.direction
    out = Contribution(sets=[hit_set(ctx.rid)])
    rate, per = f.per_unit(rule.max_attempts, rule.window)
    meter = f.limit(rate, per, rule.max_attempts)
    for v in rule.families():
        name = f"b{ctx.rid}{v}"
        out.sets.append(NftSet(name, ("ifname", ADDR_TYPE[v]), flags=("timeout",), size=BAN_SET_SIZE,
                               role="bf_meter"))
        key = f.concat(port_key(d), remote_key(d, v))
        punish = punishment(ctx, d, v, key, resets=((name, key),))
        for svc in rule.services():
            for pred, _ in new_connection_variants(ctx, d, v, svc.protocol, (svc.port_min, svc.port_max)):
                base = pred + [f.nfproto(v)] + f.port_match(svc.protocol, svc.port_min, svc.port_max)
                if rule.remote_ip_prefix is not None:
                    base.append(f.match(f.addr(v, remote_side(d)), f.prefix(rule.remote_ip_prefix)))
                stmts = [f.dynset("update", name, key, meter, timeout=rule.window), hits(f"h{ctx.rid}", d)]
                if ctx.monitor:
                    out.add(d, Stage.BRUTE_FORCE, Rule(tuple(base + stmts + offender(ctx, d, v)), ctx.origin(d)))
                else:
                    out.add(d, Stage.BRUTE_FORCE, Rule(tuple(base + stmts + [f.jump(punish.name)]), ctx.origin(d)))
        if not ctx.monitor:
            out.chains += punish.chains
            out.sets += punish.sets
    return out

