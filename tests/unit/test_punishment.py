"""The brute-force punishment chain: escalation steps in the kernel, their order, the memory
sets, and the ban and the drop in separate rules."""

import json

import pytest

from connguard.compiler import compile_host
from connguard.compiler.common import CT_REFUSED
from connguard.compiler.punishment import tier_set
from connguard.model import parse_state
from connguard.model.rules import MAX_BAN_TIERS, BruteForceRule

BF = {"type": "brute_force", "profile": "ssh", "max_attempts": 2, "window": 60,
      "ban_seconds": 1, "ban_multiplier": 2, "max_ban_seconds": 16}


def compiled(*rules):
    return compile_host(parse_state({"policies": [{"name": "p", "rules": list(rules)}],
                                     "ports": [{"interface_name": "tapa", "policy": "p"}]}))


def sets_of(expr, op):
    return [e["set"]["set"].lstrip("@") for e in expr if "set" in e and e["set"]["op"] == op]


def ban_timeout(expr):
    [ban] = [e["set"] for e in expr if "set" in e and e["set"]["set"] == "@ban4"]
    assert ban["op"] == "add"
    return ban["elem"]["elem"]["timeout"]


def chains(rs, v=4):
    """The rule's IPv``v`` meter rule, its punishment chain and its escalation chain."""
    inbound = next(c for c in rs.chains if c.name.startswith("in_"))
    meter_rule = next(r for r in inbound.rules if r.expr[-1].get("jump", {}).get("target", "").endswith(str(v)))
    punish = rs.chain(meter_rule.expr[-1]["jump"]["target"])
    escalate = rs.chain(punish.rules[0].expr[-1]["jump"]["target"])
    return meter_rule, punish, escalate


def test_steps_from_the_top_each_returning_and_moving_the_memory():
    rs = compiled(BF)
    meter_rule, punish, escalate = chains(rs)
    rid = punish.name[1:-1]
    mem = [tier_set(rid, 4, k) for k in range(1, 6)]
    assert [s.name for s in rs.sets if s.role == "bf_tier" and s.name.startswith(f"t{rid}4")] == mem
    meter = next(s.name for s in rs.sets if s.role == "bf_meter" and s.name.endswith("4"))
    rows = []
    for r in escalate.rules[::2]:  # every step is followed by its set-full canary
        looked_up = [e["match"]["right"].lstrip("@") for e in r.expr if "match" in e]
        rows.append((looked_up, ban_timeout(r.expr), sets_of(r.expr, "update"), sets_of(r.expr, "delete"),
                     "return" in r.expr[-1]))
    assert rows == [
        ([mem[4]], 16, [mem[4]], [meter], True),               # at the top: the last step repeats
        ([mem[3]], 16, [mem[4]], [meter, mem[3]], True),
        ([mem[2]], 8, [mem[3]], [meter, mem[2]], True),
        ([mem[1]], 4, [mem[2]], [meter, mem[1]], True),
        ([mem[0]], 2, [mem[1]], [meter, mem[0]], True),
        ([], 1, [mem[0]], [meter], False),                     # a first offence
    ]
    # each step is remembered until a day after the ban it gave ends
    for r, seconds in zip(escalate.rules[::2], (16, 16, 8, 4, 2, 1)):
        [upd] = [e["set"] for e in r.expr if "set" in e and e["set"]["op"] == "update"]
        assert upd["elem"]["elem"]["timeout"] == seconds + 86_400
    # the memory of the next step is written before the current one is deleted (a full
    # memory set holds the remote at its step)
    for r in escalate.rules[2:-2:2]:
        ops = [e["set"]["op"] for e in r.expr if "set" in e]
        assert ops == ["add", "delete", "update", "delete"], ops


def test_a_full_ban_or_memory_set_is_counted_and_stops_there():
    """A step rule whose ban or memory write fails is skipped from there on (no return): the
    canary under it has the same lookup, so it runs exactly then, counts and returns before a
    lower step could run; the first step's canary checks the memory was written."""
    _, punish, escalate = chains(compiled(BF))
    steps, canaries = escalate.rules[::2], escalate.rules[1::2]
    assert len(steps) == len(canaries) == 6
    for step, canary in zip(steps[:-1], canaries[:-1]):
        assert canary.expr[0] == step.expr[0] and canary.origin.endswith("set-full")
        # counted host-wide and per port for the rule (the per-port set cannot fill)
        assert canary.expr[1] == {"counter": "set_full"} and canary.expr[-1] == {"return": None}
        assert canary.expr[2]["set"]["op"] == "update" and canary.expr[2]["set"]["set"].startswith("@u"), canary.expr
    first = steps[-1]
    [upd] = [e["set"] for e in first.expr if "set" in e and e["set"]["op"] == "update"]
    assert canaries[-1].expr[0]["match"] == {"op": "!=", "left": upd["elem"]["elem"]["val"], "right": upd["set"]}


def test_ban_and_drop_are_separate_rules_and_an_existing_ban_skips_escalation():
    _, punish, escalate = chains(compiled(BF))
    guard = punish.rules[0].expr
    assert guard[0]["match"]["op"] == "!=" and guard[0]["match"]["right"] == "@ban4"
    assert [list(r.expr[-1]) for r in punish.rules] == [["jump"], ["reject"], ["drop"]]
    assert len(punish.rules[2].expr) == 1, "the drop is unconditional"
    assert not any("drop" in e or "reject" in e for r in escalate.rules for e in r.expr)
    # the packet over the meter completed its handshake (ct state established): the reset must
    # not depend on conntrack's state, or the client hangs until its own timeout
    assert punish.rules[1].expr == ({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                                    {"reject": {"type": "tcp reset"}}), punish.rules[1].expr


def test_a_ban_lets_refused_connections_through_to_the_handshake_chain():
    """The ban chain skips connections a brute-force rule refused (the handshake chain then
    drops all but their resets and replies): the VM's SYN-ACK retransmission must meet the
    client's reset, or the VM's half-open socket outlives the ban."""
    rs = compiled(BF)
    for v in (4, 6):
        for r in rs.chain(f"bans{v}").rules:
            assert r.expr[-1] == {"jump": {"target": "ban_hit"}} and "ct" not in json.dumps(r.expr), r.origin
    # the refused test is positive (ct mark & refused != 0 return): an untracked or invalid
    # packet, whose ct mark does not evaluate, falls through to the drop
    refused, drop = rs.chain("ban_hit").rules
    assert refused.expr == ({"match": {"op": "!=", "left": {"&": [{"ct": {"key": "mark"}}, CT_REFUSED]}, "right": 0}},
                            {"return": None})
    assert drop.expr == ({"counter": "banned"}, {"drop": None})


def test_ipv6_steps_are_keyed_per_64():
    _, punish, escalate = chains(compiled(BF), v=6)
    text = json.dumps([r.expr for r in escalate.rules])
    assert "@ban6" in text and "ffff:ffff:ffff:ffff::" in text and "@ban4" not in text


def test_two_rules_on_one_port_have_their_own_memory_and_lengths():
    other = {**BF, "profile": "custom", "protocol": "tcp", "port_range_min": 2222,
             "ban_seconds": 3, "ban_multiplier": 3, "max_ban_seconds": 27}
    rs = compiled(BF, other)
    inbound = next(c for c in rs.chains if c.name.startswith("in_"))
    targets = sorted({r.expr[-1]["jump"]["target"] for r in inbound.rules if r.expr[-1].get("jump")})
    escalations = [rs.chain(rs.chain(t).rules[0].expr[-1]["jump"]["target"]) for t in targets if t.endswith("4")]
    lengths = sorted([ban_timeout(r.expr) for r in e.rules[::2]] for e in escalations)
    assert lengths == [[16, 16, 8, 4, 2, 1], [27, 27, 9, 3]]
    memories = [{s for r in e.rules[::2] for s in sets_of(r.expr, "update")} for e in escalations]
    assert not memories[0] & memories[1]


def test_a_rule_that_cannot_escalate_has_no_memory():
    rs = compiled({**BF, "ban_multiplier": 1})
    assert not [s for s in rs.sets if s.role == "bf_tier"]
    inbound = next(c for c in rs.chains if c.name.startswith("in_"))
    punish = rs.chain(next(r for r in inbound.rules if r.expr[-1].get("jump", {}).get("target", "").startswith("x"))
                      .expr[-1]["jump"]["target"])
    assert ban_timeout(punish.rules[0].expr) == 1 and sets_of(punish.rules[0].expr, "delete")
    assert [list(r.expr[-1]) for r in punish.rules] == [["set"], ["set"], ["reject"], ["drop"]]
    assert punish.rules[1].expr[-2] == {"counter": "set_full"}, punish.rules[1].expr
    assert punish.rules[1].expr[0]["match"]["op"] == "!=", "counts a ban the full ban set refused"


def test_monitor_mode_has_no_memory():
    rs = compile_host(parse_state({"policies": [{"name": "p", "enforcement": "monitor", "rules": [BF]}],
                                   "ports": [{"interface_name": "tapa", "policy": "p"}]}))
    assert not [s for s in rs.sets if s.role == "bf_tier"]


def test_steps_are_bounded():
    # 1 s to 30 days at multiplier 2: 23 steps, accepted
    r = BruteForceRule(profile="ssh", ban_seconds=1, ban_multiplier=2, max_ban_seconds=30 * 86_400)
    assert len(r.ban_tiers()) == 23 <= MAX_BAN_TIERS
    assert [r.ban_for(k) for k in range(1, 30)] == list(r.ban_tiers()) + [r.ban_tiers()[-1]] * 6
    # a multiplier close to 1 would need thousands of steps: refused, naming the fields
    with pytest.raises(ValueError, match="ban_multiplier 1.01 takes more than 24 escalation steps"):
        BruteForceRule(profile="ssh", ban_seconds=60, ban_multiplier=1.01, max_ban_seconds=86_400)
    assert len(BruteForceRule(profile="ssh", ban_seconds=600).ban_tiers()) == 9  # the defaults
