"""The report half of the agent channel: typed reports (full and delta), port status, counters,
offenders, discovered ports, bounds, and the metrics and events derived from reports."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from apitest import ADMIN_PROJECT, Api, error_type
from prometheus_client.parser import text_string_to_metric_families

from connguard.db.services.report_schema import MAX_REPORT_BYTES
from connguard.db.services.tokens import create_token

STARTED = "2026-12-01T08:00:00Z"


def agent_for(app: Any, client: Any, host: str, project: str = ADMIN_PROJECT) -> Api:
    with app.state.sessions() as s:
        secret = create_token(s, project_id=project, role="agent", host=host)[0]
        s.commit()
    return Api(client, secret)


def send(agent: Api, host: str, expect: int = 200, **report: Any) -> Any:
    report.setdefault("heartbeat", {"started_at": STARTED, "version": "test"})
    return agent.ok("POST", f"connguard/hosts/{host}/report", {"report": report}, expect=expect)


def metrics(api: Api) -> dict[tuple[str, tuple], float]:
    text = api.client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def sample(values: dict, name: str, **labels: str) -> float | None:
    return values.get((name, tuple(sorted(labels.items()))))


def policy_with_rule(api: Api, rule: dict[str, Any], **policy: Any) -> tuple[str, str]:
    pol = api.ok("POST", "qos/policies", {"policy": {"name": "web", **policy}})["policy"]
    kind = rule.pop("type")
    created = api.ok("POST", f"qos/policies/{pol['id']}/{kind}_rules", {f"{kind}_rule": rule})
    return pol["id"], created[f"{kind}_rule"]["id"]


def test_full_and_delta_reports_fold_counters_into_totals_and_events(actors):
    a, agent = actors.member_a, actors.agent
    pol, rule = policy_with_rule(a, {"type": "connection_rate_limit", "direction": "ingress", "max_cps": 20})
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": pol}})["port"]
    labels = {"host": "host-1", "port_id": port["id"], "rule_id": rule, "rule_type": "connection_rate_limit"}

    out = send(agent, "host-1", full=True, ports=[{"port_id": port["id"], "status": "ACTIVE", "counters": [
        {"rule_id": rule, "admitted": 100, "refused": 7, "set_full": 2}]}],
        conntrack={"count": 1234, "max": 262144}, apply={"latency_seconds": 0.042, "errors_total": 1},
        queue={"length": 0, "overflow_total": 3})
    assert out["ignored_port_ids"] == out["ignored_interfaces"] == [] and out["agent"]["alive"] is True, out
    m = metrics(a)
    assert sample(m, "connguard_port_admitted_total", **labels) == 100, m
    assert sample(m, "connguard_port_refused_total", **labels) == 7
    assert sample(m, "connguard_port_set_full_total", **labels) == 2
    assert sample(m, "connguard_host_set_full_bypasses_total", host="host-1") == 2
    assert sample(m, "connguard_host_conntrack_entries", host="host-1") == 1234
    assert sample(m, "connguard_host_conntrack_entries_max", host="host-1") == 262144
    assert sample(m, "connguard_host_apply_latency_seconds", host="host-1") == 0.042
    assert sample(m, "connguard_host_apply_errors_total", host="host-1") == 1
    assert sample(m, "connguard_host_report_queue_overflow_total", host="host-1") == 3
    assert sample(m, "connguard_agents_alive") == 1 and sample(m, "connguard_agent_up", host="host-1") == 1
    assert not [k for k in m if any(lbl in ("ip_address", "remote") for lbl, _ in k[1])]

    # a delta with the raw totals grown: the server adds the difference, one event per rule
    send(agent, "host-1", ports=[{"port_id": port["id"], "counters": [{"rule_id": rule, "admitted": 150,
                                                                       "refused": 19, "set_full": 2}]}])
    # the same totals again (a resend): nothing moves, no event
    send(agent, "host-1", ports=[{"port_id": port["id"], "counters": [{"rule_id": rule, "admitted": 150,
                                                                       "refused": 19, "set_full": 2}]}])
    # the agent restarted: its raw totals began again at 0, so all of 5 is new
    send(agent, "host-1", heartbeat={"started_at": "2026-12-01T09:00:00Z"},
         ports=[{"port_id": port["id"], "counters": [{"rule_id": rule, "admitted": 10, "refused": 5}]}])
    m = metrics(a)
    assert sample(m, "connguard_port_admitted_total", **labels) == 160, m
    assert sample(m, "connguard_port_refused_total", **labels) == 24
    events = a.ok("GET", f"connguard/events?event_type=limit_exceeded&rule_id={rule}&sort_key=created_at")["events"]
    assert sorted(e["count"] for e in events) == [5, 7, 12], events
    assert all(e["port_id"] == port["id"] and e["host"] == "host-1" for e in events)

    # a full report without the rule (it left the policy): its counters go
    send(agent, "host-1", full=True, ports=[{"port_id": port["id"], "counters": []}])
    assert sample(metrics(a), "connguard_port_admitted_total", **labels) is None


def test_monitor_counters_and_offenders(actors):
    a, agent = actors.member_a, actors.agent
    pol, rule = policy_with_rule(a, {"type": "connection_limit", "direction": "ingress", "max_connections": 5},
                                 enforcement="monitor")
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": pol}})["port"]
    offenders = [{"ip_address": f"198.51.100.{i}", "rule_id": rule, "count": 100 - i} for i in range(4)]
    send(agent, "host-1", ports=[{"port_id": port["id"], "counters": [{"rule_id": rule, "would_refuse": 33}],
                                  "offenders": offenders}])
    m = metrics(a)
    labels = {"host": "host-1", "port_id": port["id"], "rule_id": rule, "rule_type": "connection_limit"}
    assert sample(m, "connguard_port_would_refuse_total", **labels) == 33
    assert sample(m, "connguard_port_offenders", host="host-1", port_id=port["id"]) == 4
    ev = a.ok("GET", "connguard/events?event_type=limit_exceeded")["events"]
    assert [(e["count"], "would have refused 33 (monitor)" in e["message"]) for e in ev] == [(33, True)], ev
    send(agent, "host-1", full=True, ports=[])  # a full report without the port: its offenders go
    assert sample(metrics(a), "connguard_port_offenders", host="host-1", port_id=port["id"]) is None


def test_error_status_shows_in_port_show_with_the_kernel_message(actors):
    a, agent = actors.member_a, actors.agent
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1"}})["port"]
    assert port["status"] == "ACTIVE" and port["status_message"] == ""
    msg = "Error: Could not process rule: No such file or directory"
    send(agent, "host-1", ports=[{"port_id": port["id"], "status": "ERROR", "status_message": msg}])
    shown = a.ok("GET", f"ports/{port['id']}")["port"]
    assert (shown["status"], shown["status_message"]) == ("ERROR", msg), shown
    assert [p["id"] for p in a.ok("GET", "ports?status=ERROR")["ports"]] == [port["id"]]
    send(agent, "host-1", ports=[{"port_id": port["id"], "status": "ERROR", "status_message": msg}])  # unchanged
    send(agent, "host-1", ports=[{"port_id": port["id"], "status": "ACTIVE"}])
    shown = a.ok("GET", f"ports/{port['id']}")["port"]
    assert (shown["status"], shown["status_message"]) == ("ACTIVE", ""), shown
    events = a.ok("GET", f"connguard/events?port_id={port['id']}&sort_key=created_at")["events"]
    assert [(e["event_type"], e["message"]) for e in events if e["event_type"] != "port_created"] == [
        ("port_error", msg), ("port_recovered", "the port's rules are applied again")], events
    assert {e["actor_host"] for e in events if e["event_type"] != "port_created"} == {"host-1"}, events


def test_bad_reports_name_the_field_and_oversize_is_413(actors):
    a, agent = actors.member_a, actors.agent
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1"}})["port"]
    rule = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    cases = [
        ({"heartbeat": None}, "heartbeat"),
        ({"heartbeat": {"started_at": "yesterday"}}, "heartbeat.started_at"),
        ({"heartbeat": {"started_at": "2026-12-01T08:00:00"}}, "heartbeat.started_at"),  # no time zone
        ({"ports": [{"port_id": port["id"], "counters": [{"rule_id": rule, "refused": -1}]}]},
         "ports[0].counters[0].refused"),
        ({"ports": [{"port_id": port["id"], "status": "BROKEN"}]}, "ports[0].status"),
        ({"ports": [{"port_id": port["id"], "offenders": [{"ip_address": "10.0.0.1", "count": 1}] * 11}]},
         "ports[0].offenders"),
        ({"bans": [{"ip_address": "10.0.0.300", "port_id": port["id"], "banned_at": STARTED,
                    "expires_at": STARTED}]}, "bans[0].ip_address"),
        ({"interfaces": [{"name": "tap bad"}]}, "interfaces[0].name"),
        ({"conntrack": {"count": 1}}, "conntrack.max"),
        ({"colour": "red"}, "colour"),
    ]
    for report, field in cases:
        report.setdefault("heartbeat", {"started_at": STARTED})
        if report["heartbeat"] is None:
            del report["heartbeat"]
        status, data = agent.post("connguard/hosts/host-1/report", {"report": report})
        assert status == 400 and error_type(data) == "HTTPBadRequest", (report, status, data)
        assert f"Invalid input for {field}:" in data["NeutronError"]["message"], (field, data)
    assert a.ok("GET", f"ports/{port['id']}")["port"]["status"] == "ACTIVE"  # nothing half-applied
    big = b'{"report": {"heartbeat": {"started_at": "' + STARTED.encode() + b'", "version": "'
    big += b"x" * MAX_REPORT_BYTES + b'"}}}'
    r = agent.client.post("/v2.0/connguard/hosts/host-1/report", content=big,
                          headers={"X-Auth-Token": agent.token, "Content-Type": "application/json"})
    assert r.status_code == 413 and error_type(r.json()) == "HTTPRequestEntityTooLarge", r.text
    assert str(MAX_REPORT_BYTES) in r.json()["NeutronError"]["message"]


def test_report_sizes_of_a_10000_port_host():
    """What the bound means for a large host: a full resync of 10,000 ports with four rules
    each (every counter non-zero, nine-digit totals) fits under the limit, and a delta of the
    100 ports whose counters moved is a few tens of kilobytes."""
    def port(i: int) -> dict[str, Any]:
        pid = f"{i:08d}-0000-4000-8000-000000000000"
        return {"port_id": pid, "status": "ACTIVE", "counters": [
            {"rule_id": f"{r:08d}-1111-4000-8000-000000000000", "admitted": 123456789, "refused": 123456789,
             "would_refuse": 123456789, "set_full": 123456789} for r in range(4)]}

    hb = {"started_at": STARTED, "version": "0.1"}
    full = len(json.dumps({"report": {"full": True, "heartbeat": hb, "ports": [port(i) for i in range(10_000)]}}))
    delta = len(json.dumps({"report": {"heartbeat": hb, "ports": [port(i) for i in range(100)]}}))
    print(f"full report of 10,000 ports x 4 rules: {full} bytes; delta of 100 ports: {delta} bytes")
    assert full < MAX_REPORT_BYTES, (full, MAX_REPORT_BYTES)
    assert delta < 100 * 1024, delta


def test_unknown_ports_are_skipped_and_named(actors):
    agent = actors.agent
    ghost = "1" * 8 + "-0000-4000-8000-" + "0" * 12
    out = send(agent, "host-1", ports=[{"port_id": ghost, "status": "ERROR", "status_message": "x"}])
    assert out["ignored_port_ids"] == [ghost], out
    status, _ = actors.member_a.post("connguard/hosts/host-1/report", {"report": {"heartbeat": {"started_at": STARTED}}})
    assert status == 403


def test_discovered_ports_get_the_default_policy_and_go_down_when_gone(actors):
    admin, agent = actors.admin, actors.agent
    # the agent token of host-1 belongs to ADMIN_PROJECT: discovered ports go there
    default = admin.ok("POST", "qos/policies", {"policy": {"name": "default", "is_default": True}})["policy"]
    before = agent.ok("GET", "connguard/hosts/host-1/state")["host_state"]
    out = send(agent, "host-1", full=True, interfaces=[
        {"name": "tap-a", "addresses": ["10.0.0.5", "fd00::5"], "state": "UP"},
        {"name": "tap-b", "state": "UP"}])
    state = agent.ok("GET", "connguard/hosts/host-1/state")["host_state"]
    assert out["revision"] == state["revision"] > before["revision"], (out, before["revision"])
    ports = {p["interface_name"]: p for p in state["ports"]}
    assert sorted(ports) == ["tap-a", "tap-b"]
    assert all(p["device_owner"] == "connguard:discovered" and p["project_id"] == ADMIN_PROJECT
               and p["effective_qos_policy_id"] == default["id"] and p["status"] == "ACTIVE"
               for p in ports.values()), ports
    assert [f["ip_address"] for f in ports["tap-a"]["fixed_ips"]] == ["10.0.0.5", "fd00::5"]
    assert [p["id"] for p in state["policies"]] == [default["id"]]

    send(agent, "host-1", full=True, interfaces=[{"name": "tap-a", "addresses": ["10.0.0.5", "fd00::5"]}])
    assert admin.ok("GET", f"ports/{ports['tap-b']['id']}")["port"]["status"] == "DOWN"  # kept, DOWN
    again = agent.ok("GET", "connguard/hosts/host-1/state")["host_state"]
    assert again["revision"] == state["revision"], "nothing desired changed"
    send(agent, "host-1", interfaces_gone=["tap-a"])
    assert admin.ok("GET", f"ports/{ports['tap-a']['id']}")["port"]["status"] == "DOWN"
    send(agent, "host-1", interfaces=[{"name": "tap-b", "state": "UP"}])  # a delta: back
    assert admin.ok("GET", f"ports/{ports['tap-b']['id']}")["port"]["status"] == "ACTIVE"
    assert admin.ok("GET", f"ports/{ports['tap-a']['id']}")["port"]["status"] == "DOWN"
    assert len(admin.ok("GET", "ports?device_owner=connguard:discovered")["ports"]) == 2  # no duplicates
    # an operator's port with the same interface name is not taken over
    op = admin.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "interface_name": "tap-c"}})["port"]
    send(agent, "host-1", full=True, interfaces=[{"name": "tap-b"}])
    shown = admin.ok("GET", f"ports/{op['id']}")["port"]
    assert (shown["device_owner"], shown["status"]) == ("", "ACTIVE"), shown


def utc(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_detected_port_ban_escalates_on_the_same_port(actors):
    a, agent = actors.member_a, actors.agent
    pol, rule = policy_with_rule(a, {"type": "brute_force", "profile": "ssh", "ban_seconds": 60,
                                     "ban_multiplier": 3})
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": pol}})["port"]
    now = datetime.now(timezone.utc)
    ban = {"ip_address": "203.0.113.50", "port_id": port["id"], "rule_id": rule,
           "banned_at": utc(now - timedelta(seconds=200)), "expires_at": utc(now - timedelta(seconds=140))}
    send(agent, "host-1", bans=[ban])
    assert a.ok("GET", "connguard/bans")["bans"] == []  # already over: recorded, not active
    second = {**ban, "banned_at": utc(now), "expires_at": utc(now + timedelta(seconds=60))}
    send(agent, "host-1", bans=[second])
    bans = a.ok("GET", "connguard/bans")["bans"]
    assert [(b["offence_count"], b["scope"]) for b in bans] == [(2, "port")], bans
    length = (datetime.fromisoformat(bans[0]["expires_at"].replace("Z", "+00:00")) - now.replace(microsecond=0))
    assert length == timedelta(seconds=180), (length, bans)  # 60 s x 3: the server applied the rule


def test_metrics_count_active_bans(actors):
    a, agent = actors.member_a, actors.agent
    pol, rule = policy_with_rule(a, {"type": "brute_force", "profile": "ssh", "ban_seconds": 60, "share": "project"})
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": pol}})["port"]
    now = datetime.now(timezone.utc)
    send(agent, "host-1", bans=[{"ip_address": f"203.0.113.{i}", "port_id": port["id"], "rule_id": rule,
                                 "banned_at": utc(now), "expires_at": utc(now + timedelta(seconds=60))}
                                for i in range(3)])
    a.ok("POST", "connguard/bans", {"ban": {"ip_address": "198.51.100.1"}})
    m = metrics(a)
    assert sample(m, "connguard_bans_active", scope="project", origin="detected") == 3, m
    assert sample(m, "connguard_bans_active", scope="project", origin="manual") == 1
