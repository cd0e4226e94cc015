"""Ports: Neutron fields, attaching policies, the effective policy."""

from __future__ import annotations

from apitest import error_type


def test_port_fields_and_interface_default(actors):
    a = actors.member_a
    port = a.ok("POST", "ports", {"port": {"name": "vm1", "binding:host_id": "host-1",
                                           "fixed_ips": [{"ip_address": "10.0.0.5"}, "fd00::5"],
                                           "mac_address": "fa:16:3e:00:00:01"}})["port"]
    assert port["interface_name"] == "tap" + port["id"][:11]
    assert port["fixed_ips"] == [{"ip_address": "10.0.0.5"}, {"ip_address": "fd00::5"}]
    assert port["binding:host_id"] == "host-1" and port["qos_policy_id"] is None
    assert port["effective_qos_policy_id"] is None and port["revision_number"] == 1
    assert a.ok("GET", "ports?binding:host_id=host-1")["ports"][0]["id"] == port["id"]
    for bad, field in [({"fixed_ips": ["10.0.0.300"]}, "fixed_ips"), ({"interface_name": "bad name!"}, "interface_name"),
                       ({"qos_policy_id": "not-a-uuid"}, "qos_policy_id"), ({"id": "nope"}, "id"),
                       ({"mac_address": "zz"}, "mac_address"), ({"status": 3}, "status")]:
        status, data = a.post("ports", {"port": bad})
        assert status == 400 and field in data["NeutronError"]["message"], (bad, data)
    status, data = a.post("ports", {"port": {"binding:host_id": "host-1", "interface_name": port["interface_name"]}})
    assert status == 409 and error_type(data) == "PortInterfaceExists"
    assert len(a.ok("GET", "ports")["ports"]) == 1
    status, data = a.put(f"ports/{port['id']}", {"port": {"effective_qos_policy_id": None}})
    assert status == 400


def test_effective_policy_order(actors):
    a, admin = actors.member_a, actors.admin
    port = a.ok("POST", "ports", {"port": {"name": "vm"}})["port"]
    cloud = admin.ok("POST", "qos/policies", {"policy": {"name": "cloud", "shared": True, "is_default": True}})["policy"]
    assert a.ok("GET", f"ports/{port['id']}")["port"]["effective_qos_policy_id"] == cloud["id"]
    proj = a.ok("POST", "qos/policies", {"policy": {"name": "proj", "is_default": True}})["policy"]
    assert a.ok("GET", f"ports/{port['id']}")["port"]["effective_qos_policy_id"] == proj["id"]
    own = a.ok("POST", "qos/policies", {"policy": {"name": "own"}})["policy"]
    got = a.ok("PUT", f"ports/{port['id']}", {"port": {"qos_policy_id": own["id"]}})["port"]
    assert got["qos_policy_id"] == got["effective_qos_policy_id"] == own["id"]
    # A shared policy may be attached; another project's private one may not (404, as if missing).
    a.ok("PUT", f"ports/{port['id']}", {"port": {"qos_policy_id": cloud["id"]}})
    other = actors.member_b.ok("POST", "qos/policies", {"policy": {"name": "b"}})["policy"]
    status, data = a.put(f"ports/{port['id']}", {"port": {"qos_policy_id": other["id"]}})
    assert status == 404 and error_type(data) == "QosPolicyNotFound"
    assert a.ok("GET", f"ports/{port['id']}")["port"]["qos_policy_id"] == cloud["id"]


def test_host_state_revision_and_long_poll(actors):
    a, agent = actors.member_a, actors.agent
    state = agent.ok("GET", "connguard/hosts/host-1/state")["host_state"]
    assert state["revision"] == 0 and state["ports"] == []
    pid = a.ok("POST", "qos/policies", {"policy": {"name": "p"}})["policy"]["id"]
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": pid}})["port"]
    state = agent.ok("GET", "connguard/hosts/host-1/state?revision=0&wait=5")["host_state"]
    assert state["revision"] >= 1 and [p["id"] for p in state["ports"]] == [port["id"]]
    assert [p["id"] for p in state["policies"]] == [pid]
    rev = state["revision"]
    a.ok("POST", f"qos/policies/{pid}/connection_limit_rules", {"connection_limit_rule": {"max_connections": 5}})
    state = agent.ok("GET", f"connguard/hosts/host-1/state?revision={rev}&wait=5")["host_state"]
    assert state["revision"] > rev and state["policies"][0]["rules"][0]["max_connections"] == 5
    # Nothing changed: the long poll times out and answers the same revision.
    same = agent.ok("GET", f"connguard/hosts/host-1/state?revision={state['revision']}&wait=0.3")["host_state"]
    assert same["revision"] == state["revision"]
    status, data = agent.get("connguard/hosts/host-2/state")
    assert status == 403 and error_type(data) == "NotAuthorized"
    status, _ = a.get("connguard/hosts/host-1/state")
    assert status == 403
