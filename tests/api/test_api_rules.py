"""The four rule sub-collections and rule-type discovery."""

from __future__ import annotations

import pytest
from apitest import error_type

from connguard.model.rules import RULE_TYPES

EXAMPLES = {
    "connection_rate_limit": {"direction": "ingress", "scope": "remote_ip", "max_cps": 20},
    "connection_limit": {"direction": "any", "max_connections": 2000},
    "syn_flood": {"port_range_min": 80, "port_range_max": 443, "max_syn_rate": 2000},
    "brute_force": {"profile": "ssh", "max_attempts": 6},
}
BAD = {
    "connection_rate_limit": ({"max_cps": 0}, "max_cps"),
    "connection_limit": ({"max_connections": 10, "direction": "sideways"}, "direction"),
    "syn_flood": ({"port_range_min": 80, "max_syn_rate": 10, "mss": 10}, "mss"),
    "brute_force": ({"profile": "ssh", "remote_ip_prefix": "10.0.0.1/8"}, "remote_ip_prefix"),
}


def test_examples_cover_every_rule_type():
    assert set(EXAMPLES) == set(RULE_TYPES) == set(BAD)


@pytest.mark.parametrize("rule_type", sorted(RULE_TYPES))
def test_rule_crud(actors, rule_type):
    a = actors.member_a
    pid = a.ok("POST", "qos/policies", {"policy": {"name": "p"}})["policy"]["id"]
    coll, one = f"qos/policies/{pid}/{rule_type}_rules", f"{rule_type}_rule"
    rule = a.ok("POST", coll, {one: EXAMPLES[rule_type]})[one]
    model = RULE_TYPES[rule_type].model_validate(EXAMPLES[rule_type]).model_dump(mode="json")
    assert {k: rule[k] for k in model} == model  # the API shows what the model means
    assert rule["qos_policy_id"] == pid and rule["type"] == rule_type
    status, data = a.post(coll, {one: EXAMPLES[rule_type]})
    assert status == 409 and error_type(data) == "QosRuleExists"
    body, field = BAD[rule_type]
    status, data = a.post(coll, {one: body})
    assert status == 400 and field in data["NeutronError"]["message"], data
    assert [r["id"] for r in a.ok("GET", coll)[f"{rule_type}_rules"]] == [rule["id"]]
    policy = a.ok("GET", f"qos/policies/{pid}")["policy"]
    assert [r["id"] for r in policy["rules"]] == [rule["id"]] and policy["revision_number"] == 2
    status, data = a.put(f"{coll}/{rule['id']}", {one: body})
    assert status == 400
    assert a.ok("GET", f"{coll}/{rule['id']}")[one] == rule
    status, data = a.put(f"{coll}/{rule['id']}", {one: {"bogus": 1}})
    assert status == 400 and "bogus" in data["NeutronError"]["message"]
    a.ok("DELETE", f"{coll}/{rule['id']}")
    status, data = a.get(f"{coll}/{rule['id']}")
    assert status == 404 and error_type(data) == "QosRuleNotFound"


def test_update_recomputes_defaults_and_checks_uniqueness(actors):
    a = actors.member_a
    pid = a.ok("POST", "qos/policies", {"policy": {"name": "p"}})["policy"]["id"]
    coll = f"qos/policies/{pid}/connection_rate_limit_rules"
    r1 = a.ok("POST", coll, {"connection_rate_limit_rule": {"max_cps": 10}})["connection_rate_limit_rule"]
    assert r1["max_burst_cps"] == 10 and r1["direction"] == "egress"
    r1 = a.ok("PUT", f"{coll}/{r1['id']}", {"connection_rate_limit_rule": {"max_cps": 50}})["connection_rate_limit_rule"]
    assert r1["max_burst_cps"] == 50 and r1["revision_number"] == 2
    r2 = a.ok("POST", coll, {"connection_rate_limit_rule": {"max_cps": 5, "direction": "ingress"}})
    rid2 = r2["connection_rate_limit_rule"]["id"]
    status, data = a.put(f"{coll}/{rid2}", {"connection_rate_limit_rule": {"direction": "egress"}})
    assert status == 409 and error_type(data) == "QosRuleExists"
    # Same rule for another protocol is a different match: allowed.
    a.ok("POST", coll, {"connection_rate_limit_rule": {"max_cps": 5, "protocol": "udp"}})
    status, _ = a.put(f"{coll}/{r1['id']}", {"connection_rate_limit_rule": {"max_cps": 1}},
                      If_Match="revision_number=1")
    assert status == 412


def test_rule_types_discovery(actors):
    r = actors.reader_a
    types = r.ok("GET", "qos/rule-types")["rule_types"]
    assert sorted(t["type"] for t in types) == sorted(RULE_TYPES)
    detail = r.ok("GET", "qos/rule-types/connection_rate_limit")["rule_type"]
    params = {p["parameter_name"]: p for p in detail["drivers"][0]["supported_parameters"]}
    assert params["max_cps"] == {"parameter_name": "max_cps", "parameter_type": "range",
                                 "parameter_values": {"start": 1, "end": 1_000_000}}
    assert params["direction"]["parameter_values"] == ["ingress", "egress"]
    assert params["scope"]["parameter_type"] == "choices"
    bf = r.ok("GET", "qos/rule-types/brute_force")["rule_type"]
    values = {p["parameter_name"]: p["parameter_values"] for p in bf["drivers"][0]["supported_parameters"]}
    assert "ssh" in values["profile"] and "custom" in values["profile"]
    status, data = r.get("qos/rule-types/bandwidth_limit")
    assert status == 404 and error_type(data) == "QosRuleTypeNotFound"


@pytest.mark.parametrize("body", [
    {"profile": "custom", "protocol": "udp", "port_range_min": 5060},
    {"profile": "sip", "protocol": "udp"},
])
def test_brute_force_over_udp_is_refused_with_the_reason(actors, body):
    """The API uses the model: a UDP brute-force rule answers 400 naming the field and why (a UDP
    source address is a claim anyone can make, so a ban on it can be aimed at anyone)."""
    a = actors.member_a
    pid = a.ok("POST", "qos/policies", {"policy": {"name": "p"}})["policy"]["id"]
    coll = f"qos/policies/{pid}/brute_force_rules"
    status, data = a.post(coll, {"brute_force_rule": body})
    message = data["NeutronError"]["message"]
    assert status == 400 and message.startswith("Invalid input for protocol:"), (status, data)
    assert "a udp source address is a claim anyone can make" in message and "connection_rate_limit" in message
    assert a.ok("GET", coll)["brute_force_rules"] == []
    # nor can an accepted sip rule (tcp/5060-5061) be turned into one
    rule = a.ok("POST", coll, {"brute_force_rule": {"profile": "sip"}})["brute_force_rule"]
    status, data = a.put(f"{coll}/{rule['id']}", {"brute_force_rule": {"protocol": "udp"}})
    assert status == 400 and "a udp source address" in data["NeutronError"]["message"], data
    assert a.ok("GET", f"{coll}/{rule['id']}")["brute_force_rule"] == rule
