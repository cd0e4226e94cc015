"""Input that looks valid but would protect nothing, or cost the agent minutes, is refused by
the API exactly as by the state file: an interface name with a trailing newline, and a policy
with more rules than a policy can need (issue 8, item 9)."""

from __future__ import annotations

import pytest

from connguard.model import parse_state
from connguard.model.objects import MAX_RULES_PER_POLICY


@pytest.mark.parametrize("name", ["tapvm0\n", "tapvm0\r\n", "\ntapvm0", "tap\nvm0"])
def test_interface_name_with_a_newline_is_refused_on_create_and_update(actors, name):
    a = actors.member_a
    status, data = a.post("ports", {"port": {"binding:host_id": "host-1", "interface_name": name}})
    assert status == 400, (name, status, data)
    assert "interface_name" in data["NeutronError"]["message"], data
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "interface_name": "tapvm0"}})["port"]
    status, data = a.put(f"ports/{port['id']}", {"port": {"interface_name": name}})
    assert status == 400 and "interface_name" in data["NeutronError"]["message"], (status, data)
    assert a.ok("GET", f"ports/{port['id']}")["port"]["interface_name"] == "tapvm0"


def distinct_rule(i: int) -> tuple[str, dict]:
    """The i-th of many rules that are all different (distinct service ports)."""
    kind = ("connection_rate_limit", "connection_limit", "syn_flood", "brute_force")[i % 4]
    port = 1000 + i
    body = {
        "connection_rate_limit": {"direction": "ingress", "scope": "remote_ip", "max_cps": 20,
                                  "protocol": "tcp", "port_range_min": port},
        "connection_limit": {"direction": "ingress", "max_connections": 50, "protocol": "tcp", "port_range_min": port},
        "syn_flood": {"port_range_min": port, "max_syn_rate": 500},
        "brute_force": {"profile": "custom", "protocol": "tcp", "port_range_min": port},
    }[kind]
    return kind, body


def test_rules_per_policy_are_bounded_as_in_the_state_file(actors):
    a = actors.member_a
    pid = a.ok("POST", "qos/policies", {"policy": {"name": "big"}})["policy"]["id"]
    rules = [distinct_rule(i) for i in range(MAX_RULES_PER_POLICY + 1)]
    for kind, body in rules[:-1]:
        a.ok("POST", f"qos/policies/{pid}/{kind}_rules", {f"{kind}_rule": body})
    kind, body = rules[-1]
    status, data = a.post(f"qos/policies/{pid}/{kind}_rules", {f"{kind}_rule": body})
    message = data["NeutronError"]["message"]
    assert status == 400 and "rules" in message and f"at most {MAX_RULES_PER_POLICY}" in message, (status, data)
    policy = a.ok("GET", f"qos/policies/{pid}")["policy"]
    assert len(policy["rules"]) == MAX_RULES_PER_POLICY, len(policy["rules"])
    # the same policy is exactly at the state file's bound: what the API stores, an agent loads
    state = parse_state({"policies": [{"name": "big", "rules": [{"type": k, **b} for k, b in rules[:-1]]}]})
    assert len(state.policies[0].rules) == MAX_RULES_PER_POLICY
    # a slot freed by a delete can be used again
    first = policy["rules"][0]
    a.ok("DELETE", f"qos/policies/{pid}/{first['type']}_rules/{first['id']}")
    a.ok("POST", f"qos/policies/{pid}/{kind}_rules", {f"{kind}_rule": body})
