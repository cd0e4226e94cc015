"""punishment: what a brute-force rule does to a remote that went over its meter.

Escalation is decided in the kernel, per rule and family, by an offender memory of one set per
escalation step: ``t<rid><v>_<k>`` holds ``port . remote`` whose last ban was the rule's k-th
length, until a day (``OFFENCE_MEMORY``) after that ban ended. The next offence within that
time is banned for the (k+1)-th length and moves the remote to set k+1; the last step repeats.
The agent samples bans at most once a pass, far too coarse for an attacker that retries the moment
a ban expires (the kernel re-bans it within milliseconds: the agent saw one long ban, and six
bans in a row all had the base length); here there is no sampling to outrun.

Layout, for a rule with n > 1 steps (``ban_tiers``)::

    x<rid><v>:  key != @ban<v> jump e<rid><v>   # once per offence (concurrent packets: see below)
                meta l4proto tcp reject with tcp reset   # the handshake completed: the client thinks it is connected
                drop
    e<rid><v>:  key @t.._n     add @ban {key timeout L_n} delete @meter {key} update @t.._n {..} return
                key @t.._n     counter set_full return
                key @t.._{n-1} add @ban {key timeout L_n} delete @meter {key} update @t.._n {..} delete @t.._{n-1} {key} return
                key @t.._{n-1} counter set_full return
                ...
                key @t.._1     add @ban {key timeout L_2} ... update @t.._2 {..} delete @t.._1 {key} return
                key @t.._1     counter set_full return
                add @ban {key timeout L_1} delete @meter {key} update @t.._1 {..}
                key != @t.._1  counter set_full return

Every ``add @ban`` is followed by ``counter bans_placed``: the agent's cheap signal that the
kernel placed a ban (agent/banwatch.py). Ban and drop stay in separate rules: when the ban set
is full the kernel skips the rest of the rule that failed to add (memory, meter, ``return``); the canary below it counts that in
``set_full`` and returns, and the reset in ``x`` still refuses the packet: a full ban set costs
the ban and the escalation, never the refusal. The memory of the next step is written before the
current step's is deleted, so a full memory set (counted the same way) holds a remote at its
step rather than forgetting it. A remote is in at most one memory set (the steps are checked
from the top and each one returns). Clearing the meter on the ban means the remote starts a
fresh window when the ban ends; while banned its packets are dropped before the meter
(dispatch.py).

Two packets of one remote over the meter at the same instant on two CPUs could both escalate;
the ``!= @ban`` guard makes the second one only refuse unless it passed the guard before the
first one's ban was added (a window of a few instructions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from connguard.compiler import fragments as f
from connguard.compiler.common import BAN, BANS_PLACED, bypassed
from connguard.compiler.context import BAN_SET_SIZE, OFFENCE_MEMORY, RuleContext
from connguard.compiler.rate_limit import ADDR_TYPE
from connguard.compiler.ruleset import Chain, Json, NftSet, Rule
from connguard.names import ROLE_BF_TIER, escalate_chain, punish_chain, tier_set  # noqa: F401  (tier_set re-exported)


@dataclass
class Punishment:
    name: str                                   # the chain the meter jumps to
    chains: list[Chain] = field(default_factory=list)
    sets: list[NftSet] = field(default_factory=list)


def memory_timeout(seconds: int) -> int:
    """A step is remembered until ``OFFENCE_MEMORY`` after the ban it gave ended."""
    return seconds + OFFENCE_MEMORY


def punishment(ctx: RuleContext, d: str, v: int, key: Json, *, resets: tuple[tuple[str, Json], ...]) -> Punishment:
    """The punishment chain(s) of one rule and family. ``key`` is the ban's ``port . remote``;
    ``resets`` the (meter set, key) elements cleared on a ban."""
    origin = ctx.origin(d)
    tiers = ctx.rule.ban_tiers()
    name = punish_chain(ctx.rid, v)
    refuse = (
        # the packet that went over the meter completed the handshake (it is ct state
        # established): the client believes it is connected, so reset it at once rather than let
        # it wait for its own timeout. The VM's half-open socket is closed by the client's reset
        # to the VM's next retransmission (the connection is marked refused: dispatch.py lets
        # its resets and replies through the ban and the handshake chain)
        Rule((f.l4proto("tcp"), f.reject_tcp_reset()), origin + " reset"),
        Rule((f.drop(),), origin + " drop"),  # brute force is TCP only: nothing else comes here
    )

    def ban(seconds: int) -> list[Json]:
        # the counter right after the add: reached only when the ban went in (a full set stops
        # the rule there), so the agent's change signal never moves for a ban that was not placed
        return [f.dynset("add", BAN[v], key, timeout=seconds), f.counter(BANS_PLACED)] + \
            [f.dynset("delete", m, k) for m, k in resets]

    def canary(*match: Json) -> Rule:
        # reached only when the rule above matched and a set it writes was full
        return Rule((*match, *bypassed(ctx, d), f.ret()), origin + " set-full")

    if len(tiers) == 1:  # nothing to escalate to: no memory
        return Punishment(name, [Chain(name, (
            Rule(tuple(ban(tiers[0])), origin + " ban"),
            Rule((f.in_set(key, BAN[v], negate=True), *bypassed(ctx, d)), origin + " set-full"),
        ) + refuse)])

    n = len(tiers)
    mem = [tier_set(ctx.rid, v, k) for k in range(1, n + 1)]

    def remember(k: int) -> Json:
        return f.dynset("update", mem[k - 1], key, timeout=memory_timeout(tiers[k - 1]))

    def was(k: int) -> Json:
        return f.in_set(key, mem[k - 1])

    steps = [Rule((was(n), *ban(tiers[n - 1]), remember(n), f.ret()), f"{origin} ban step {n} again"), canary(was(n))]
    for k in range(n - 1, 0, -1):  # last offence at step k: ban at step k+1
        steps += [Rule((was(k), *ban(tiers[k]), remember(k + 1), f.dynset("delete", mem[k - 1], key), f.ret()),
                       f"{origin} ban step {k + 1}"),
                  canary(was(k))]
    steps += [Rule((*ban(tiers[0]), remember(1)), f"{origin} ban step 1"),
              canary(f.in_set(key, mem[0], negate=True))]
    escalate = Chain(escalate_chain(ctx.rid, v), tuple(steps))
    punish = Chain(name, (Rule((f.in_set(key, BAN[v], negate=True), f.jump(escalate.name)), origin + " ban"),) + refuse)
    sets = [NftSet(m, ("ifname", ADDR_TYPE[v]), flags=("timeout",), size=BAN_SET_SIZE, role=ROLE_BF_TIER) for m in mem]
    return Punishment(name, [punish, escalate], sets)
