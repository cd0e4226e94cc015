"""brute_force: ban a remote after ``max_attempts`` login attempts to a service within
``window`` seconds.

An attempt is a connection whose source has proven its address, counted once (docs/dataplane.md,
"Brute force"): a new connection to the service is marked pending in its ct mark
(``CT_PENDING``), and the ``handshake`` chain (dispatch.py) sends its first packet after the
proof back through the policy chain, where the rules below meter it. For TCP the proof is the
client's ACK that conntrack accepts (``ct status assured``: set on SYN_RECV -> ESTABLISHED,
never by a SYN retransmission or a blind spoofer), behind synproxy the first client packet after
synproxy accepted the cookie. Services are TCP only (the model refuses udp and sctp): a UDP
"proof" (a packet after the VM answered) is one a spoofer can send blindly, and a ban it
triggered could be aimed at anyone.

The meter is a fixed window: ``add`` (which never refreshes the timeout) creates the element
``port . remote`` with a lifetime of ``window`` and a bucket of ``max_attempts`` tokens that
refills at one per minute, hour or day (the smallest unit not shorter than the window), i.e.
not within the window. So exactly
``max_attempts`` attempts pass in the ``window`` seconds from a source's first attempt, the next
one jumps to the punishment chain, and a window starts afresh at the first attempt after one
ends: at most 2 * max_attempts in any ``window`` seconds around a boundary, at most
``max_attempts`` per window on average, however the attempts are paced.

Behind the per-source meter, two aggregates keep sources that rotate from multiplying the
allowance; exceeding them refuses the attempt (TCP reset) without banning anyone:
- per port (keyed by the interface alone, cannot fill): ``PORT_BUDGET_FACTOR * max_attempts``
  attempts per window from all non-allowlisted sources together;
- per IPv6 /48: ``PREFIX48_FACTOR * max_attempts`` per window (one site's allocation holds
  65,536 /64s).
A remote over its meter jumps to the punishment chain (punishment.py): it is banned for its
next escalation step, remembered in the rule's offender memory, and its meter is cleared, all
in the kernel, and the connection is reset.
"""

from __future__ import annotations

from connguard.compiler import fragments as f
from connguard.compiler.common import (
    CT_PENDING,
    CT_REFUSED,
    admitted,
    bypassed,
    hits,
    offender,
    port_key,
    refuse_chain,
    remote_key,
    remote_side,
)
from connguard.compiler.context import BAN_SET_SIZE, Contribution, RuleContext, Stage, per_port_set
from connguard.compiler.punishment import punishment
from connguard.compiler.rate_limit import ADDR_TYPE, counter_sets
from connguard.compiler.ruleset import NftSet, Rule
from connguard.model.rules import BruteForceRule
from connguard.names import ROLE_BF_METER, ROLE_BF_PREFIX, bf_budget_set, bf_meter_set, bf_prefix_set
from connguard.names import hit_set as hit_set_name

PORT_BUDGET_FACTOR = 10   # attempts per window to one port from all sources, in max_attempts
PREFIX48_FACTOR = 4       # attempts per window from one IPv6 /48, in max_attempts


_UNITS = (("minute", 60), ("hour", 3600), ("day", 86400))


def window_meter(count: int, window: int) -> dict:
    """``count`` tokens refilled at one per unit of at least ``window`` seconds, so no token comes
    back within the window: with ``add`` and an element timeout of one window, a fixed-window
    counter. The kernel keeps the bucket in nanoseconds, refuses burst * unit >= 2**64 ns and
    compares it as a signed 64-bit value, so counts are clamped to 2**62 ns worth (53,375 for a
    day-long window, over a million for an hour)."""
    unit, seconds = next((u, s) for u, s in _UNITS if s >= window)
    return f.limit(1, unit, min(count, 2**62 // (seconds * 10**9)))


def compile_brute_force(ctx: RuleContext) -> Contribution:
    rule: BruteForceRule = ctx.rule
    d = rule.direction
    out = Contribution(sets=counter_sets(ctx.rid))
    origin = ctx.origin(d)
    hit = hits(hit_set_name(ctx.rid), d)
    pending = CT_PENDING[d]
    per_port = PORT_BUDGET_FACTOR * rule.max_attempts
    # a stable name, like the meter's: a changed max_attempts applies from each port's next window
    budget = per_port_set(bf_budget_set(ctx.rid), timeout=True)
    out.sets.append(budget)
    for v in rule.families():
        name = bf_meter_set(ctx.rid, v)
        out.sets.append(NftSet(name, ("ifname", ADDR_TYPE[v]), flags=("timeout",), size=BAN_SET_SIZE,
                               role=ROLE_BF_METER))
        key = f.concat(port_key(d), remote_key(d, v))
        prefix_meter = None
        if v == 6:
            prefix_meter = NftSet(bf_prefix_set(ctx.rid), ("ifname", ADDR_TYPE[6]), flags=("timeout",), size=BAN_SET_SIZE,
                                  role=ROLE_BF_PREFIX)
            out.sets.append(prefix_meter)
        punish = punishment(ctx, d, v, key, resets=((name, key),))
        for svc in rule.services():
            service = [f.nfproto(v)] + f.port_match(svc.protocol, svc.port_min, svc.port_max)
            if rule.remote_ip_prefix is not None:
                service.append(f.match(f.addr(v, remote_side(d)), f.prefix(rule.remote_ip_prefix)))
            # a new connection only becomes pending: it proves nothing yet. Only a real start
            # (a SYN): a connection conntrack picks up mid-stream (one older than the ruleset, or
            # a bare ACK with tcp_loose=1) is never counted
            out.add(d, Stage.BRUTE_FORCE, Rule(tuple([f.ct_state("new")] + service + [f.tcp_flags_syn_only(),
                                                                                     f.ct_mark_or(pending)]),
                                               origin + " pending"))
            # reached only from the handshake chain: established, pending, proven
            proven = [f.ct_state("established"), f.ct_mark_any(pending)] + service
            refuse = _refuse(ctx, d, v)
            out.add(d, Stage.BRUTE_FORCE, Rule(tuple(proven + [
                f.dynset("add", budget.name, port_key(d), window_meter(per_port, rule.window), timeout=rule.window), hit]
                + refuse), origin + " port budget"))
            if prefix_meter is not None:
                key48 = f.concat(port_key(d), f.remote_key48(remote_side(d)))
                out.add(d, Stage.BRUTE_FORCE, Rule(tuple(proven + [
                    f.dynset("add", prefix_meter.name, key48, window_meter(PREFIX48_FACTOR * rule.max_attempts, rule.window),
                             timeout=rule.window), hit] + refuse), origin + " /48"))
                out.add(d, Stage.BRUTE_FORCE, Rule(tuple(proven + [
                    f.in_set(key48, prefix_meter.name, negate=True), *bypassed(ctx, d)]), origin + " /48 set-full"))
            stmts = [f.dynset("add", name, key, window_meter(rule.max_attempts, rule.window), timeout=rule.window), hit]
            verdict = offender(ctx, d, v) if ctx.monitor else [f.ct_mark_or(CT_REFUSED), f.jump(punish.name)]
            out.add(d, Stage.BRUTE_FORCE, Rule(tuple(proven + stmts + verdict), origin))
            # a full meter fails open (no ban; the budgets above still hold): count it
            out.add(d, Stage.BRUTE_FORCE, Rule(tuple(proven + [f.in_set(key, name, negate=True), *bypassed(ctx, d)]),
                                               origin + " set-full"))
            out.add(d, Stage.BRUTE_FORCE, Rule(tuple(proven + [admitted(ctx, d)]), origin + " admitted"))
        if not ctx.monitor:
            out.chains += punish.chains
            out.sets += punish.sets
    return out


def _refuse(ctx: RuleContext, d: str, v: int) -> list:
    """Over a budget: no ban, but this connection is refused (and marked, so that the handshake
    chain drops what else the source sends on it) with a reset: the client believes it is
    connected. The refuse chain records the offender first."""
    if ctx.monitor:
        return offender(ctx, d, v)
    return [f.ct_mark_or(CT_REFUSED), f.jump(refuse_chain(d, "reset"))]

