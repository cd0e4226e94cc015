"""Bans, allowlist, events, agents, tokens over HTTP."""

from __future__ import annotations

from apitest import PROJECT_A, error_type


def test_bans_allowlist_and_events(actors):
    a = actors.member_a
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1"}})["port"]
    ban = a.ok("POST", "connguard/bans", {"ban": {"ip_address": "198.51.100.0/24", "port_id": port["id"],
                                                  "seconds": 600, "reason": "manual test"}})["ban"]
    assert ban["origin"] == "manual" and ban["scope"] == "port" and ban["host"] == "host-1"
    assert ban["expires_at"] is not None and ban["project_id"] == PROJECT_A
    for bad, field in [({"ip_address": "300.1.1.1"}, "ip_address"), ({"ip_address": "10.0.0.1/8"}, "ip_address"),
                       ({"ip_address": "10.0.0.1", "seconds": 0}, "seconds"), ({"ip_address": "10.0.0.1", "x": 1}, "x"),
                       ({"ip_address": "10.0.0.1", "port_id": "zz"}, "port_id")]:
        status, data = a.post("connguard/bans", {"ban": bad})
        assert status == 400 and field in data["NeutronError"]["message"], (bad, data)
    assert [b["id"] for b in a.ok("GET", "connguard/bans?origin=manual")["bans"]] == [ban["id"]]
    state = actors.agent.ok("GET", "connguard/hosts/host-1/state")["host_state"]
    assert [b["ip_address"] for b in state["bans"]] == ["198.51.100.0/24"]
    a.ok("DELETE", f"connguard/bans/{ban['id']}")
    assert a.ok("GET", "connguard/bans")["bans"] == []
    types = [e["event_type"] for e in a.ok("GET", "connguard/events?sort_key=created_at")["events"]]
    assert types == ["port_created", "ban", "unban"]  # port changes are audited events too
    entry = a.ok("POST", "connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": "2001:db8::/32",
                                                                     "description": "office"}})["allowlist_entry"]
    assert entry["project_id"] == PROJECT_A
    status, data = a.post("connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": "10.0.0.1/8"}})
    assert status == 400 and "remote_ip_prefix" in data["NeutronError"]["message"]
    a.ok("DELETE", f"connguard/allowlist/{entry['id']}")


def test_agent_report_and_agents_list(actors):
    a, agent = actors.member_a, actors.agent
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1"}})["port"]
    rule = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    report = {"report": {"heartbeat": {"started_at": "2026-12-01T08:00:00Z", "configurations": {"ports": 1}},
                         "ports": [{"port_id": port["id"], "counters": [{"rule_id": rule, "refused": 12}]}],
                         "bans": [{"ip_address": "203.0.113.9", "port_id": port["id"], "reason": "ssh brute force",
                                   "banned_at": "2026-12-01T08:00:00Z", "expires_at": "2099-01-01T00:00:00Z"}]}}
    assert agent.ok("POST", "connguard/hosts/host-1/report", report, expect=200)["agent"]["alive"] is True
    agents = actors.admin.ok("GET", "agents")["agents"]
    assert [(x["host"], x["alive"], x["configurations"]) for x in agents] == [("host-1", True, {"ports": 1})]
    bans = a.ok("GET", "connguard/bans")["bans"]
    assert [(b["ip_address"], b["origin"]) for b in bans] == [("203.0.113.9/32", "detected")]
    assert "limit_exceeded" in [e["event_type"] for e in a.ok("GET", "connguard/events")["events"]]
    status, _ = agent.post("connguard/hosts/host-2/report", report)
    assert status == 403


def test_tokens_over_http(actors):
    admin = actors.admin
    tok = admin.ok("POST", "connguard/tokens", {"token": {"project_id": "p9", "role": "member"}})["token"]
    assert tok["token"].startswith("cg_") and tok["role"] == "member"
    listed = admin.ok("GET", "connguard/tokens")["tokens"]
    assert tok["id"] in [t["id"] for t in listed] and all("token" not in t for t in listed)
    status, data = admin.post("connguard/tokens", {"token": {"project_id": "p9", "role": "king"}})
    assert status == 400 and "role" in data["NeutronError"]["message"]
    status, _ = admin.post("connguard/tokens", {"token": {"project_id": "p9", "role": "agent"}})
    assert status == 400  # an agent token needs its host
    new = type(admin)(admin.client, tok["token"])
    assert new.ok("GET", "qos/policies")["policies"] == []
    admin.ok("DELETE", f"connguard/tokens/{tok['id']}")
    status, data = new.get("qos/policies")
    assert status == 401 and error_type(data) == "NotAuthenticated"


def test_metrics(actors):
    actors.member_a.get("qos/policies")
    text = actors.member_a.client.get("/metrics").text
    assert 'connguard_api_requests_total{code="200",method="GET",route="/v2.0/qos/policies"}' in text
