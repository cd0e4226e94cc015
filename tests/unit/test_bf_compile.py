"""Brute force compiles to handshake counting: the structure the kernel tests rely on."""

import json

from connguard.compiler import compile_host
from connguard.compiler.brute_force import PORT_BUDGET_FACTOR, PREFIX48_FACTOR
from connguard.compiler.common import CT_BITS, CT_PENDING, CT_REFUSED
from connguard.model import parse_state

SSH = {"type": "brute_force", "profile": "ssh", "max_attempts": 5, "window": 30, "ban_seconds": 60}


def state(rules, enforcement="enforce"):
    return parse_state({
        "policies": [{"name": "p", "enforcement": enforcement, "rules": rules}],
        "ports": [{"interface_name": "tapa", "fixed_ips": ["10.0.0.1", "fd00::1"], "policy": "p"}],
    })


def chain(rs, prefix):
    return next(c for c in rs.chains if c.name.startswith(prefix))


def dynsets(rule):
    return [e["set"] for e in rule.expr if "set" in e]


def test_fast_path_is_one_mark_test_before_established():
    rs = compile_host(state([SSH]))
    for name in ("forward", "host_in"):
        rules = rs.chain(name).rules
        origins = [r.origin for r in rules]
        assert origins.index("handshake") == origins.index("established") - 1
        hs = rules[origins.index("handshake")].expr
        assert hs == ({"match": {"op": "!=", "left": {"&": [{"ct": {"key": "mark"}}, CT_BITS]}, "right": 0}},
                      {"jump": {"target": "handshake"}})
    assert [r.origin for r in rs.chain("handshake").rules] == [
        "refused connection", "refused connection: resets and replies", "reply", "not yet proven", "count from VM",
        "count to VM", "counted"]
    # brute force is TCP only: the proof is conntrack's assured bit, nothing weaker (no seen-reply)
    text = json.dumps([r.expr for r in rs.chain("handshake").rules])
    assert "seen-reply" not in text and '"udp"' not in text
    assert rs.chain("handshake").rules[3].expr[0] == {
        "match": {"op": "==", "left": {"&": [{"ct": {"key": "status"}}, "assured"]}, "right": 0}}
    # clearing the pending bits keeps every other bit of the mark
    clear = rs.chain("handshake").rules[-1].expr[0]["mangle"]["value"]["&"][1]
    assert clear == 0xFFFFFFFF & ~(CT_PENDING["ingress"] | CT_PENDING["egress"])


def test_policy_chain_rules_all_start_with_a_ct_state_match():
    """The handshake chain dispatches established packets into the policy chains: a rule that
    did not test ct state first would act on every such packet."""
    rules = [SSH, {"type": "syn_flood", "port_range_min": 22, "max_syn_rate": 100},
             {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 5},
             {"type": "connection_limit", "direction": "any", "max_connections": 9},
             {**SSH, "direction": "egress", "profile": "custom", "protocol": "tcp", "port_range_min": 2222}]
    rs = compile_host(state(rules))
    syn_set = {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, "syn"]},
                         "right": "syn"}}
    for c in rs.chains:
        if c.name.startswith(("in_", "out_")):
            for r in c.rules:
                # the SYN budget sees every SYN whatever its state (a proven ACK carries none)
                if r.origin != "allowlist" and syn_set not in r.expr:
                    assert r.expr[0]["match"]["left"] == {"ct": {"key": "state"}}, r.origin


def test_meter_is_a_fixed_window_counted_only_on_proof():
    rs = compile_host(state([SSH, {"type": "syn_flood", "port_range_min": 22, "max_syn_rate": 100}]))
    rules = chain(rs, "in_").rules
    bf = [r for r in rules if "brute_force" in r.origin]
    # no rule at the synproxy ACK stage: the cookie is not checked there yet
    assert not any('"invalid"' in json.dumps(r.expr) for r in bf)
    pending = [r for r in bf if r.origin.endswith("pending")]
    assert len(pending) == 2
    for r in pending:
        text = json.dumps(r.expr)
        assert '"new"' in text and '"syn"' in text and "mangle" in text  # only a real SYN
    counted = [r for r in bf if not r.origin.endswith("pending")]
    for r in counted:
        assert r.expr[0]["match"]["right"] == "established"
        assert r.expr[1]["match"]["left"]["&"][1] == CT_PENDING["ingress"]
    meters = [r for r in counted if r.origin.endswith("brute_force ingress")]
    assert len(meters) == 2
    for v, meter in zip((4, 6), meters):
        [d] = [d for d in dynsets(meter) if d["set"].startswith("@b")]
        assert d["op"] == "add" and d["elem"]["elem"]["timeout"] == 30
        assert d["stmt"] == [{"limit": {"rate": 1, "per": "minute", "burst": 5, "burst_unit": "packets", "inv": True}}]
        after = counted[counted.index(meter) + 1]
        assert after.origin.endswith("set-full") and {"counter": "set_full"} in after.expr
        assert {"jump": {"target": f"x{d['set'][2:-1]}{v}"}} in meter.expr
        assert meter.expr.index({"mangle": {"key": {"ct": {"key": "mark"}},
                                            "value": {"|": [{"ct": {"key": "mark"}}, CT_REFUSED]}}}) \
            < len(meter.expr) - 1


def test_per_port_budget_and_48_meter():
    rs = compile_host(state([SSH]))
    [budget] = [s for s in rs.sets if s.name.startswith("q")]
    assert budget.type == ("ifname",) and budget.role == "per_port" and "timeout" in budget.flags
    [g] = [s for s in rs.sets if s.role == "bf_prefix"]
    assert g.name.startswith("g") and g.name.endswith("6") and g.type == ("ifname", "ipv6_addr")
    rules = chain(rs, "in_").rules
    for r in rules:
        for d in dynsets(r):
            if d["set"] == f"@{budget.name}":
                assert d["stmt"][0]["limit"]["burst"] == PORT_BUDGET_FACTOR * 5
                # reset through the refuse chain, which records the offender first
                assert r.expr[-1] == {"jump": {"target": "refuse_in_reset"}}
            if d["set"] == f"@{g.name}":
                assert d["stmt"][0]["limit"]["burst"] == PREFIX48_FACTOR * 5
                assert d["elem"]["elem"]["val"]["concat"][1] == {
                    "&": [{"payload": {"protocol": "ip6", "field": "saddr"}}, "ffff:ffff:ffff::"]}
    assert sum(r.origin.endswith("/48 set-full") for r in rules) == 1


def test_egress_uses_its_own_pending_bit_and_sip_counts_tcp_only():
    rs = compile_host(state([{**SSH, "direction": "egress", "profile": "sip"}]))
    rules = [r for r in chain(rs, "out_").rules if "brute_force" in r.origin]
    text = json.dumps([r.expr for r in rules])
    assert str(CT_PENDING["egress"]) in text and str(CT_PENDING["ingress"]) not in text
    assert '"udp"' not in text, "a udp service is counted: a spoofer could aim its ban at anyone"
    pending = [r for r in rules if r.origin.endswith("pending")]
    assert len(pending) == 2 and all('"syn"' in json.dumps(r.expr) and '"tcp"' in json.dumps(r.expr)
                                     for r in pending)
    assert {"range": [5060, 5061]} in [e["match"]["right"] for e in pending[0].expr if "match" in e]
    meter = next(r for r in rules if r.origin.endswith("egress"))
    key = next(d for d in dynsets(meter) if d["set"].startswith("@b"))["elem"]["elem"]["val"]["concat"]
    assert key[0] == {"meta": {"key": "iifname"}}


def test_synproxy_syn_from_the_host_is_marked_pending():
    rs = compile_host(state([SSH]))
    out = rs.chain("host_out")
    assert out.hook.hook == "output"
    for r, v in zip(out.rules, (4, 6)):
        text = json.dumps(r.expr)
        assert f'"@synproxy{v}"' in text and '"syn"' in text and str(CT_PENDING["ingress"]) in text


def test_monitor_never_refuses():
    rs = compile_host(state([SSH], enforcement="monitor"))
    text = json.dumps([r.expr for r in chain(rs, "in_").rules])
    assert str(CT_REFUSED) not in text and '"jump"' not in text and '"reject"' not in text


def test_window_meter_never_refills_within_the_window_and_fits_the_kernel():
    from connguard.compiler.brute_force import window_meter
    for window in (1, 60, 61, 3600, 3601, 86_400):
        lim = window_meter(5, window)["limit"]
        unit = {"minute": 60, "hour": 3600, "day": 86_400}[lim["per"]]
        assert lim["rate"] == 1 and unit >= window and lim["burst"] == 5
    # the kernel's bucket is burst * unit in 64-bit nanoseconds (found by the property test)
    lim = window_meter(1_000_000, 86_400)["limit"]
    assert lim["burst"] * 86_400 * 10**9 <= 2**62 and lim["burst"] > 50_000
