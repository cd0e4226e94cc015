"""connguard.names: every kernel object name the compiler emits is built there (a compiled
ruleset's names are exactly what the names module gives for its rules), and its parsers invert
its builders."""

import pytest

from connguard import names
from connguard.compiler import compile_host
from connguard.compiler.context import RuleContext
from connguard.compiler.compile import policy_id
from connguard.model import parse_state
from connguard.model.state import MAX_PORTS

RULES = [
    {"type": "brute_force", "profile": "ssh", "max_attempts": 2, "window": 60, "ban_seconds": 1,
     "ban_multiplier": 2, "max_ban_seconds": 4},
    {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20},
    {"type": "connection_rate_limit", "direction": "ingress", "scope": "port", "max_cps": 500, "max_burst_cps": 600},
    {"type": "connection_limit", "direction": "ingress", "scope": "remote_ip", "max_connections": 20},
    {"type": "connection_limit", "direction": "egress", "scope": "port", "max_connections": 300},
    {"type": "syn_flood", "port_range_min": 80, "port_range_max": 80, "max_syn_rate": 100},
]


def test_compiled_names_are_the_names_modules():
    state = parse_state({"policies": [{"name": "p", "rules": RULES}],
                         "ports": [{"interface_name": "tapa", "fixed_ips": ["10.0.0.5"], "policy": "p"}],
                         "allowlist": [{"remote_ip_prefix": "192.0.2.0/24"}]})
    rs = compile_host(state)
    policy = state.policies[0]
    rid = [RuleContext(policy, i, False, ()).rid for i in range(len(RULES))]
    per_rule = {name(r) for r in rid for name in (names.hit_set, names.admitted_set, names.bypass_set)}
    per_rule |= {names.bf_budget_set(rid[0]), names.bf_prefix_set(rid[0])}
    per_rule |= {names.bf_meter_set(rid[0], v) for v in (4, 6)}
    per_rule |= {names.tier_set(rid[0], v, step) for v in (4, 6) for step in (1, 2, 3)}  # 1, 2, 4 s
    per_rule |= {names.rate_remote_set(rid[1], v) for v in (4, 6)}
    per_rule |= {names.rate_aggregate_set(rid[2], 500, 600)}
    per_rule |= {names.conncount_set(rid[3], 20, v) for v in (4, 6)} | {names.conncount_set(rid[4], 300)}
    per_rule |= {names.syn_budget_set(rid[5], 100)}
    host = {names.PORTS, names.TO_VM, names.FROM_VM, *names.BAN.values(), *names.HOST_BAN.values(),
            *names.OFFENDERS.values(), *names.ALLOW.values(), *names.SYNPROXY.values()}
    got = {s.name for s in rs.sets}
    assert got == per_rule | host, f"not from names: {sorted(got - per_rule - host)}; missing: {sorted(per_rule | host - got)}"

    pid = policy_id(policy)
    bf = {names.punish_chain(rid[0], v) for v in (4, 6)} | {names.escalate_chain(rid[0], v) for v in (4, 6)}
    policy_chains = {names.policy_chain(d, pid) for d in ("ingress", "egress")}
    base = {names.FORWARD, names.HOST_IN, names.HOST_OUT, names.RAW_PRE, names.HANDSHAKE, names.BAN_HIT,
            names.bans_chain(4), names.bans_chain(6),
            *(names.refuse_chain(d, kind) for d in ("ingress", "egress") for kind in ("drop", "reset"))}
    remote = {names.remote_chain(names.policy_chain("ingress", pid))}  # the allowlist has entries
    chains = {c.name for c in rs.chains}
    assert chains == bf | policy_chains | base | remote, f"chains not from names: {sorted(chains - bf - policy_chains - base - remote)}"
    assert rs.counters == names.COUNTERS
    roles = {s.name: s.role for s in rs.sets}
    assert roles[names.bf_meter_set(rid[0], 4)] == names.ROLE_BF_METER
    assert roles[names.bf_prefix_set(rid[0])] == names.ROLE_BF_PREFIX
    assert roles[names.tier_set(rid[0], 6, 2)] == names.ROLE_BF_TIER
    assert roles[names.conncount_set(rid[4], 300)] == names.ROLE_PER_PORT


@pytest.mark.parametrize("rid,v,step", [("0123456789abcdef", 4, 1), ("0123456789abcde6", 6, 23), ("R", 4, 2)])
def test_parse_tier_inverts_tier_set(rid, v, step):
    assert names.parse_tier(names.tier_set(rid, v, step)) == (rid, v, step)


@pytest.mark.parametrize("name", ["ban4", "hostban6", "h0123456789abcdef", "t_1", "tabc5_1", "tabc4_", "x0124"])
def test_parse_tier_refuses_other_names(name):
    assert names.parse_tier(name) is None, name


def test_same_tier_family():
    assert names.same_tier_family(names.tier_set("ab", 4, 1), names.tier_set("ab", 4, 3))
    assert not names.same_tier_family(names.tier_set("ab", 4, 1), names.tier_set("ab", 6, 1))
    assert not names.same_tier_family(names.tier_set("ab", 4, 1), names.tier_set("ac", 4, 1))
    assert not names.same_tier_family("ban4", names.tier_set("ab", 4, 1))


def test_ct_bits_are_the_documented_ones_and_disjoint():
    assert (names.CT_PENDING["ingress"], names.CT_PENDING["egress"], names.CT_REFUSED) == (0x01000000, 0x02000000, 0x04000000)
    assert names.CT_BITS == 0x07000000


def test_per_port_sets_cannot_fill_up():
    # the model's bound is the names module's, and a per-port set holds twice that
    assert MAX_PORTS == names.MAX_PORTS and names.PORT_SET_SIZE == 2 * MAX_PORTS, (MAX_PORTS, names.PORT_SET_SIZE)
