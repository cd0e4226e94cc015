"""Applier planning and failure handling against a recording fake executor."""

import pytest

from connguard.compiler import compile_host
from connguard.exceptions import ApplyError
from connguard.model import parse_state
from connguard.nft import Applier, FakeExecutor
from connguard.nft import netlink as nl

RULES = [
    {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20},
    {"type": "connection_rate_limit", "direction": "ingress", "scope": "port", "max_cps": 500},
    {"type": "brute_force", "profile": "ssh"},
]


def make(ports, rules=RULES, **extra):
    return compile_host(parse_state({
        "policies": [{"name": "p", "rules": rules}],
        "ports": [{"interface_name": p, "fixed_ips": [f"10.0.{i // 250}.{i % 250 + 1}"], "policy": "p"}
                  for i, p in enumerate(ports)], **extra}))


def commands(ex):
    return ex.batches[-1]["nftables"]


def verbs(cmds):
    return [(verb, kind) for c in cmds for verb, body in c.items() for kind in body]


def test_full_then_noop_then_small_delta():
    ex = FakeExecutor()
    ap = Applier(ex)
    ports = [f"tap{i}" for i in range(200)]
    assert ap.apply(make(ports)).mode == "full"
    assert ap.apply(make(ports)).mode == "noop"
    assert len(ex.batches) == 1
    res = ap.apply(make(ports + ["tapnew"]))
    assert res.mode == "delta"
    cmds = commands(ex)
    # one port more: its two dispatch elements and its place in the ports set, nothing flushed
    assert not any("flush" in c for c in cmds)
    assert verbs(cmds) == [("add", "table")] + [("add", "element")] * 3, cmds
    assert {c["add"]["element"]["name"] for c in cmds[1:]} == {"from_vm", "to_vm", "ports"}


def test_long_lived_sets_are_never_flushed_or_redeclared():
    ex = FakeExecutor()
    ap = Applier(ex)
    rs = make(["tapa"])
    ap.apply(rs)
    ex.listing = {"nftables": [{"table": {"family": "inet", "name": "connguard"}}] + [
        {"set": {"name": s.name, "type": list(s.type) if len(s.type) > 1 else s.type[0], "flags": list(s.flags)}}
        for s in rs.sets if s.map is None] + [
        {"map": {"name": s.name, "type": s.type[0], "map": s.map}} for s in rs.sets if s.map] + [
        {"chain": {"name": c.name}} for c in rs.chains]}
    # chains, rules and named objects are read over netlink (no set elements)
    ex.load_kernel(rs)
    ex.dumps[nl.GETOBJ].append(nl.parse(nl.attr(nl.OBJ_TABLE, "connguard") + nl.attr(nl.OBJ_NAME, "a_stale_object")
                                        + nl.attr(nl.OBJ_TYPE, (4).to_bytes(4, "big"))))
    ap.invalidate()
    ap.apply(make(["tapa"], rules=RULES[:2] + [{**RULES[2], "max_attempts": 3}]))
    cmds = commands(ex)
    long_lived = {s.name for s in rs.sets if s.long_lived}
    for c in cmds:
        for verb, body in c.items():
            for kind, obj in body.items():
                if kind in ("set", "map") and obj.get("name") in long_lived:
                    assert verb not in ("flush", "delete", "add"), c
    assert ("flush", "chain") in verbs(cmds)
    assert ("delete", "limit") in verbs(cmds)  # named objects of an older layout are removed


def test_removed_port_and_policy_are_cleaned_in_order():
    ex = FakeExecutor()
    ap = Applier(ex)
    ap.apply(make(["tapa", "tapb"]))
    ap.apply(make(["tapa"]))
    cmds = commands(ex)
    # tapb leaves its dispatch maps and is forgotten in the policy's per-port state
    forgotten = {c["delete"]["element"]["name"] for c in cmds
                 if "delete" in c and c["delete"]["element"]["elem"] == ["tapb"]}
    per_port = {s.name for s in make(["tapa"]).sets if s.role == "per_port"}
    assert forgotten == {"to_vm", "from_vm", "ports"} | per_port
    st = compile_host(parse_state({}))
    ap.apply(st)
    v = verbs(commands(ex))
    assert ("delete", "chain") in v
    # references go before what they reference: rules/elements first, then chains, then sets
    assert v.index(("flush", "chain")) < v.index(("delete", "chain")) < v.index(("delete", "set"))


def test_rejected_batch_names_the_rule_and_keeps_bookkeeping():
    ex = FakeExecutor()
    ap = Applier(ex)
    good = make(["tapa"])
    ap.apply(good)
    bad = make(["tapa"], rules=RULES[:2] + [{**RULES[2], "max_attempts": 4}])

    def has_bad_rule(payload):
        return any("rule" in c.get("add", {}) and "brute_force" in c["add"]["rule"]["comment"]
                   for c in payload["nftables"])

    ex.fail_when(has_bad_rule, "Error: Could not process rule: Operation not supported")
    with pytest.raises(ApplyError) as info:
        ap.apply(bad)
    assert "policy p rule 2 brute_force ingress" in str(info.value)
    assert "Operation not supported" in str(info.value)
    assert ap.applied == good  # unchanged: the next apply retries the same delta
    assert len(ex.batches) == 1


def test_synproxy_sets_conntrack_loose_off():
    ex = FakeExecutor()
    Applier(ex).apply(make(["tapa"], rules=[{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": 10}]))
    assert ex.sysctls == {"net.netfilter.nf_conntrack_tcp_loose": "0"}
