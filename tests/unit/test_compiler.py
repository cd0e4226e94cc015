"""Compiler: whole-structure comparisons (golden file) and the layout's invariants."""

import json
import os
from pathlib import Path

import pytest

from connguard.compiler import COMPILERS, compile_host
from connguard.model import RULE_TYPES, load_state_file, parse_state
from connguard.nft import Applier, FakeExecutor

GOLDEN = Path(__file__).parent / "golden"


def full_batch(state) -> list[dict]:
    _, cmds = Applier(FakeExecutor()).plan(compile_host(state))
    return [c for c, _ in cmds]


def texts(chain) -> list[str]:
    return [json.dumps(r.expr) for r in chain.rules]


def test_every_rule_type_has_a_compiler_and_back():
    assert set(COMPILERS) == set(RULE_TYPES.values())


def test_example_matches_golden():
    batch = full_batch(load_state_file("examples/state.yaml"))
    path = GOLDEN / "example_state.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(json.dumps(batch, indent=1, sort_keys=True) + "\n")
    assert batch == json.loads(path.read_text())


def test_compile_is_deterministic():
    state = load_state_file("examples/state.yaml")
    assert compile_host(state) == compile_host(state)
    assert full_batch(state) == full_batch(state)


def state(rules, enforcement="enforce", ports=("tapa",), **extra):
    return parse_state({
        "policies": [{"name": "p", "enforcement": enforcement, "rules": rules}],
        "ports": [{"interface_name": p, "fixed_ips": [f"10.0.0.{i + 1}", f"fd00::{i + 1}"], "policy": "p"}
                  for i, p in enumerate(ports)],
        **extra,
    })


RATE_REMOTE = {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20}
RATE_PORT = {"type": "connection_rate_limit", "direction": "ingress", "scope": "port", "max_cps": 500}


def test_dispatch_is_by_verdict_map_not_per_port_rules():
    rs = compile_host(state([RATE_REMOTE, RATE_PORT], ports=[f"tap{i}" for i in range(50)]))
    forward = rs.chain("forward")
    assert len(forward.rules) == 5  # independent of the number of ports
    assert len(rs.set("to_vm").elements) == len(rs.set("from_vm").elements) == 50
    # no per-port chains or sets: every chain and set name is port-free
    assert not [n for n in [c.name for c in rs.chains] + [s.name for s in rs.sets] if "tap" in n]
    # per-port state is created by the packet path in sets keyed by the port alone
    aggregates = [s for s in rs.sets if s.name.startswith("a") and s.role == "per_port"]
    assert len(aggregates) == 1 and aggregates[0].type == ("ifname",) and aggregates[0].long_lived


def test_bans_come_before_established_accept():
    rs = compile_host(state([RATE_REMOTE]))
    origins = [r.origin for r in rs.chain("forward").rules]
    assert origins.index("bans") < origins.index("established")
    dispatch = rs.chain("forward").rules[0].expr[0]["vmap"]["data"]["set"]
    assert dispatch == [["ipv4", {"jump": {"target": "bans4"}}], ["ipv6", {"jump": {"target": "bans6"}}]]
    for v in (4, 6):
        chain = rs.chain(f"bans{v}")
        assert [r.origin for r in chain.rules] == [f"ban oifname ipv{v}", f"ban iifname ipv{v}",
                                                   f"host ban oifname ipv{v}", f"host ban iifname ipv{v}"]
        # a ban hit goes to ban_hit, which drops all but refused connections (test_punishment.py)
        assert all(r.expr[-1] == {"jump": {"target": "ban_hit"}} for r in chain.rules)
    assert rs.chain("ban_hit").rules[-1].expr == ({"counter": "banned"}, {"drop": None})


def test_per_remote_limiter_sits_above_port_aggregate_with_canary():
    rs = compile_host(state([RATE_PORT, RATE_REMOTE]))  # order in the policy does not matter
    chain = next(c for c in rs.chains if c.name.startswith("in_"))
    origins = [r.origin for r in chain.rules]
    assert "allowlist" not in origins  # no entries, no lookups
    remote = [i for i, o in enumerate(origins) if "rule 1" in o]
    aggregate = [i for i, o in enumerate(origins) if "rule 0" in o]
    assert max(remote) < min(aggregate)
    assert sum("set-full" in o for o in origins) == 2  # one canary per family
    canary = json.dumps(chain.rules[origins.index("policy p rule 1 connection_rate_limit ingress set-full")].expr)
    assert '"!="' in canary and '"set_full"' in canary


def test_ipv6_remotes_are_accounted_per_64():
    chain = next(c for c in compile_host(state([RATE_REMOTE])).chains if c.name.startswith("in_"))
    v6 = [t for t in texts(chain) if '"ip6"' in t and "saddr" in t and '"add"' in t]
    assert v6 and all("ffff:ffff:ffff:ffff::" in t for t in v6)


def test_monitor_mode_never_drops_or_bans():
    rules = [RATE_REMOTE, RATE_PORT,
             {"type": "connection_limit", "max_connections": 5},
             {"type": "syn_flood", "port_range_min": 80, "max_syn_rate": 10},
             {"type": "brute_force", "profile": "ssh"}]
    rs = compile_host(state(rules, enforcement="monitor"))
    for c in rs.chains:
        if c.name.startswith(("in_", "out_")):
            for t in texts(c):
                assert '"drop"' not in t and '"reject"' not in t and "synproxy" not in t
                assert "@ban" not in t
            for r in c.rules:
                # every would-be refusal remembers the offender, except SYN budgets (spoofed sources)
                # (a brute-force "pending" mark refuses nothing: the count comes at the handshake)
                if r.origin != "allowlist" and "set-full" not in r.origin and "syn_flood" not in r.origin \
                        and not r.origin.endswith((" pending", " admitted")):
                    assert "@offenders" in json.dumps(r.expr), r.origin
    assert not rs.set("synproxy4").elements


def test_enforce_brute_force_bans_for_ban_seconds():
    rs = compile_host(state([{"type": "brute_force", "profile": "ssh", "max_attempts": 6, "window": 60,
                              "ban_seconds": 600}]))
    chain = next(c for c in rs.chains if c.name.startswith("in_"))
    bf = [r for r in chain.rules if r.origin.endswith("brute_force ingress")]
    assert len(bf) == 2  # IPv4 and IPv6
    v4 = bf[0].expr
    meter = next(e for e in v4 if "set" in e and e["set"]["set"].startswith("@b"))
    # a fixed window: added once (the timeout is never refreshed), 6 tokens that do not refill
    # within the element's lifetime of one window
    assert meter["set"]["op"] == "add" and meter["set"]["elem"]["elem"]["timeout"] == 60
    assert meter["set"]["stmt"] == [{"limit": {"rate": 1, "per": "minute", "burst": 6, "burst_unit": "packets",
                                               "inv": True}}]
    # over the limit: jump to the rule's punishment chain, where the ban (in the escalation
    # chain it jumps to) and the drop are separate rules (a full ban set must not skip the drop)
    target = v4[-1]["jump"]["target"]
    punish = rs.chain(target)
    assert [list(r.expr[-1]) for r in punish.rules] == [["jump"], ["reject"], ["drop"]]
    escalate = rs.chain(punish.rules[0].expr[-1]["jump"]["target"])
    ban = escalate.rules[-2].expr[0]["set"]  # the first offence (no memory matched), above its canary
    assert ban["set"] == "@ban4" and ban["elem"]["elem"]["timeout"] == 600


def test_overlapping_host_bans_are_merged_and_port_bans_use_the_kernel_key():
    st = parse_state({"ports": [{"interface_name": "tapa"}], "bans": [
        {"ip_address": "10.0.0.0/8", "seconds": 60}, {"ip_address": "10.1.0.0/16", "seconds": 600},
        {"ip_address": "192.0.2.1"}, {"ip_address": "2001:db8:1:2::9", "interface_name": "tapa", "seconds": 5}]})
    seeds = {(name, json.dumps(e.key), e.timeout) for name, e in compile_host(st).seeds}
    assert seeds == {("hostban4", json.dumps({"prefix": {"addr": "10.0.0.0", "len": 8}}), 600),
                     ("hostban4", json.dumps("192.0.2.1"), None),
                     ("ban6", json.dumps({"concat": ["tapa", "2001:db8:1:2::"]}), 5)}


def test_allowlist_is_collapsed_and_exempts_first():
    rs = compile_host(state([RATE_REMOTE], allowlist=[{"remote_ip_prefix": "192.0.2.0/25"},
                                                      {"remote_ip_prefix": "192.0.2.128/25"}]))
    assert [e.key for e in rs.set("allow4").elements] == [{"prefix": {"addr": "192.0.2.0", "len": 24}}]
    for c in rs.chains:
        if c.name.startswith(("remote_in_", "remote_out_")):
            # first in every per-remote chain, and only for the family that has entries
            assert c.rules[0].origin == "allowlist" and '"@allow4"' in json.dumps(c.rules[0].expr)
            assert sum(r.origin == "allowlist" for r in c.rules) == 1
    assert rs.chain("remote_" + policy_chain(rs).name)


CONN_REMOTE = {"type": "connection_limit", "direction": "ingress", "scope": "remote_ip", "max_connections": 10}
CONN_PORT = {"type": "connection_limit", "direction": "ingress", "scope": "port", "max_connections": 300}
SYN = {"type": "syn_flood", "port_range_min": 80, "max_syn_rate": 100}
BF = {"type": "brute_force", "profile": "ssh"}
EVERY_KIND = [CONN_PORT, RATE_PORT, SYN, CONN_REMOTE, BF, RATE_REMOTE]


def policy_chain(rs, prefix="in_"):
    return next(c for c in rs.chains if c.name.startswith(prefix))


def kinds(chain) -> list[str]:
    """The rule kind and scope of each rule, from its origin ("policy p rule 3 connection_limit ingress")."""
    out = []
    for r in chain.rules:
        words = r.origin.split()
        out.append(r.origin if words[0] != "policy" else f"{words[4]}/{EVERY_KIND[int(words[3])].get('scope', '')}")
    return out


def test_allowlist_skips_only_the_per_remote_stages():
    rs = compile_host(state(EVERY_KIND, allowlist=[{"remote_ip_prefix": "192.0.2.0/24"}]))
    main = policy_chain(rs)
    remote = rs.chain("remote_" + main.name)
    main_kinds = kinds(main)
    # the SYN budget and the per-port aggregates and caps (and synproxy) stay in the policy chain,
    # which has no allowlist lookup: allowlisted sources pass through them like any other
    assert main_kinds.index("syn_flood/") < main_kinds.index("per-remote stages") < main_kinds.index("connection_rate_limit/port")
    assert main_kinds.index("connection_rate_limit/port") < main_kinds.index("connection_limit/port")
    assert not any("@allow" in json.dumps(r.expr) for r in main.rules)
    assert {"brute_force/", "connection_rate_limit/remote_ip", "connection_limit/remote_ip"} <= set(kinds(remote))
    # every per-remote rule, and nothing else, lives behind the allowlist's return
    assert set(kinds(remote)) == {"allowlist", "brute_force/", "connection_rate_limit/remote_ip",
                                  "connection_limit/remote_ip"}
    assert kinds(remote)[0] == "allowlist" and json.dumps(remote.rules[0].expr).count("@allow4") == 1
    assert not any(k.endswith("/remote_ip") or k == "brute_force/" for k in main_kinds)


def test_without_allowlist_the_same_order_inline_and_no_lookup():
    rs = compile_host(state(EVERY_KIND))
    main = policy_chain(rs)
    assert not [c.name for c in rs.chains if c.name.startswith("remote_")]
    order = [k for i, k in enumerate(kinds(main)) if i == 0 or kinds(main)[i - 1] != k]
    assert order == ["syn_flood/", "brute_force/", "connection_rate_limit/remote_ip", "connection_limit/remote_ip",
                     "connection_rate_limit/port", "connection_limit/port", "syn_flood/"], order
    assert not any("@allow" in json.dumps(r.expr) for c in rs.chains for r in c.rules)


def test_allowlisted_syns_are_proxied_and_neighbour_vms_syns_tracked():
    rs = compile_host(state([SYN], allowlist=[{"remote_ip_prefix": "192.0.2.0/24"}, {"remote_ip_prefix": "2001:db8::/48"}]))
    raw = texts(rs.chain("raw_pre"))
    assert len(raw) == 2 and not any("@allow" in t for t in raw)
    for t in raw:
        # a SYN from one of the host's ports (a neighbour VM) stays tracked for its egress limits
        assert '{"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "@ports"}}' in t
        assert t.index("@ports") < t.index("notrack")


def test_syn_budget_counts_every_syn_and_drops_the_odd_ones():
    rs = compile_host(state([SYN]))
    rules = [r for r in policy_chain(rs).rules if "syn_flood" in r.origin]
    budget = [r for r in rules if any("set" in e and e["set"]["set"].startswith("@s") for e in r.expr)]
    assert len(budget) == 2  # IPv4, IPv6
    any_syn = {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, "syn"]},
                         "right": "syn"}}
    for r in budget:
        assert any_syn in r.expr and not [e for e in r.expr if "ct" in json.dumps(e.get("match", {}).get("left", {}))]
    odd = [i for i, r in enumerate(rules) if r.origin.endswith("not a plain SYN")]
    proxy = [i for i, r in enumerate(rules) if '"synproxy"' in json.dumps(r.expr)]
    assert len(odd) == 2 and max(rules.index(b) for b in budget) < max(odd) < min(proxy)
    assert all(rules[i].expr[-1] == {"drop": None} and any_syn in rules[i].expr for i in odd)
    monitor = compile_host(state([SYN], enforcement="monitor"))
    assert not [r for r in policy_chain(monitor).rules if r.origin.endswith("not a plain SYN")]


def test_synproxy_services_per_port_address():
    rs = compile_host(state([{"type": "syn_flood", "port_range_min": 80, "port_range_max": 443, "max_syn_rate": 100}],
                            ports=["tapa", "tapb"]))
    assert [e.key for e in rs.set("synproxy4").elements] == [
        {"concat": ["10.0.0.1", {"range": [80, 443]}]}, {"concat": ["10.0.0.2", {"range": [80, 443]}]}]
    assert len(rs.set("synproxy6").elements) == 2


def test_rate_change_keeps_per_remote_buckets_but_restarts_the_aggregate():
    a = compile_host(state([RATE_REMOTE, RATE_PORT]))
    b = compile_host(state([{**RATE_REMOTE, "max_cps": 40}, {**RATE_PORT, "max_cps": 900}]))
    sets_a = {s.name for s in a.sets if s.long_lived}
    sets_b = {s.name for s in b.sets if s.long_lived}
    changed = sets_a ^ sets_b
    # only the aggregate (named after its numbers) is new; per-remote buckets, hits, bans stay
    assert len(changed) == 2 and all(n.startswith("a") for n in changed)


def test_connection_limit_any_shares_one_set_across_directions():
    rs = compile_host(state([{"type": "connection_limit", "direction": "any", "max_connections": 7}]))
    uses = set()
    for c in rs.chains:
        for t in texts(c):
            if '"ct count"' in t:
                uses.add((c.name[:3], json.loads(t)[1 if c.name.startswith("out") else 1] and t.split('"set": "@')[1].split('"')[0]))
    assert {u[0] for u in uses} == {"in_", "out"} and len({u[1] for u in uses}) == 1


def test_ports_without_policy_are_not_dispatched():
    st = parse_state({"policies": [{"name": "p"}], "ports": [{"interface_name": "tapa"}]})
    rs = compile_host(st)
    assert rs.set("to_vm").elements == () and [e.key for e in rs.set("ports").elements] == ["tapa"]


@pytest.mark.parametrize("window,expected", [(60, (10, "minute")), (30, (20, "minute")), (1, (10, "second")),
                                             (7, (864000, "week"))])
def test_window_to_rate(window, expected):
    from connguard.compiler.fragments import per_unit
    assert per_unit(10, window) == expected


def test_overlapping_synproxy_ranges_are_merged():
    # found by the property test: an interval set refuses overlapping elements
    rs = compile_host(state([
        {"type": "syn_flood", "port_range_min": 1, "port_range_max": 1, "max_syn_rate": 1},
        {"type": "syn_flood", "port_range_min": 1, "port_range_max": 2, "max_syn_rate": 1},
        {"type": "syn_flood", "port_range_min": 3, "port_range_max": 9, "max_syn_rate": 1},
        {"type": "syn_flood", "port_range_min": 20, "port_range_max": 30, "max_syn_rate": 1}]))
    assert [e.key for e in rs.set("synproxy4").elements] == [
        {"concat": ["10.0.0.1", {"range": [1, 9]}]}, {"concat": ["10.0.0.1", {"range": [20, 30]}]}]
