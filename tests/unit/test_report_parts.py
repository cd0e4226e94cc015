"""Reports of a 12,000-port host stay bounded (issue 6: "a 10,000-port host must not send
megabytes every few seconds"): the real reporter, over the real in-process server, sends its
full report in parts of at most ``PART_PORTS`` ports and a few hundred kilobytes each; the
server ends with the totals of every port; a delta after 100 ports moved is one small report;
and a part replaces only its slice of the host's view."""

from __future__ import annotations

import json
import threading

import pytest
from agent_api import Api, make_app, token
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from connguard.agent.report_parts import PART_PORTS, split
from connguard.agent.report_queue import ReportQueue
from connguard.agent.reconciler import Reconciler
from connguard.agent.reporter import Reporter
from connguard.agent.source import Desired
from connguard.compiler.common import admitted_name, hit_name
from connguard.compiler.context import RuleContext
from connguard.db.models import Port, PortCounter
from connguard.model import parse_state

from test_agent_reconciler import Kernel, Src

N = 12_000
BOUND = 512 * 1024  # bytes per report body


@pytest.fixture
def app(tmp_path_factory):
    return make_app("sqlite", tmp_path_factory)


def _host(app, client):
    admin = Api(client, token(app, role="admin"))
    pol = admin.ok("POST", "qos/policies", {"policy": {"name": "web"}})["policy"]["id"]
    rule = admin.ok("POST", f"qos/policies/{pol}/connection_rate_limit_rules",
                    {"connection_rate_limit_rule": {"direction": "ingress", "max_cps": 20}})["connection_rate_limit_rule"]["id"]
    ids = {f"tap{i:05d}": f"{i:08d}-0000-4000-8000-000000000000" for i in range(N)}
    with app.state.sessions() as s:  # 12,000 API calls would be the slow part of this test
        s.execute(insert(Port.__table__), [
            {"id": pid, "project_id": "admin", "name": tap, "host_id": "host-1", "interface_name": tap,
             "fixed_ips": [], "device_owner": "", "status": "ACTIVE", "qos_policy_id": pol, "revision_number": 1}
            for tap, pid in ids.items()])
        s.commit()
    return pol, rule, ids


def test_a_12000_port_host_reports_in_bounded_parts_and_the_server_gets_every_total(app, tmp_path):
    client = TestClient(app)
    pol, rule, ids = _host(app, client)
    agent_tok = token(app, role="agent", host="host-1")
    name = f"qos-{pol}"
    state = parse_state({"policies": [{"name": name, "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "max_cps": 20}]}],
        "ports": [{"interface_name": tap, "policy": name} for tap in ids]})
    ex, src = Kernel(), Src()
    rec = Reconciler(src, ex, tmp_path)
    src.next = Desired(state, "server snapshot", 1, ids, {(name, 0): rule})
    rec.tick()
    rid = RuleContext(state.policies[0], 0, False, ()).rid
    ex.hits[hit_name(rid)] = {tap: 100_000_000 + i for i, tap in enumerate(ids)}
    ex.hits[admitted_name(rid)] = {tap: 900_000_000 + i for i, tap in enumerate(ids)}
    sizes: list[int] = []

    def post(body):
        raw = json.dumps(body)
        sizes.append(len(raw))
        r = client.post("/v2.0/connguard/hosts/host-1/report", content=raw,
                        headers={"X-Auth-Token": agent_tok, "Content-Type": "application/json"})
        assert r.status_code == 200, r.text[:500]
        return r.json()

    rep = Reporter(rec, src, post, netns=None, pattern="tap*", queue=ReportQueue(tmp_path / "q"),
                   stop_event=threading.Event(), read_interfaces=lambda ns, pat: {}, read_conntrack=lambda ns: None)
    rep.step()
    parts = -(-N // PART_PORTS)
    assert len(sizes) == parts, f"{len(sizes)} reports for {N} ports, expected {parts}"
    assert max(sizes) <= BOUND, f"largest part {max(sizes)} bytes (bound {BOUND})"
    print(f"full report of {N} ports: {len(sizes)} parts, largest {max(sizes)} bytes, total {sum(sizes)}")
    with app.state.sessions() as s:
        rows = s.execute(select(func.count(), func.sum(PortCounter.admitted), func.sum(PortCounter.refused))
                         .where(PortCounter.rule_id == rule)).one()
    assert rows[0] == N, f"the server holds counters of {rows[0]} ports of {N}"
    assert rows[1] == sum(ex.hits[admitted_name(rid)].values()) and rows[2] == sum(ex.hits[hit_name(rid)].values()), rows

    # a delta after 100 ports moved: one report, only those ports
    moved = list(ids)[5000:5100]
    for tap in moved:
        ex.hits[hit_name(rid)][tap] += 7
    sizes.clear()
    rep.step()
    assert len(sizes) == 1 and sizes[0] < 40 * 1024, f"delta of 100 moved ports: {sizes}"
    with app.state.sessions() as s:
        refused = s.scalar(select(func.sum(PortCounter.refused)).where(PortCounter.rule_id == rule))
    assert refused == rows[2] + 700, (refused, rows[2])


def test_a_part_replaces_only_its_slice():
    """A stale counter of a port in the second slice is dropped by the second part only; the
    slices of all parts together cover every id, lower and higher than any the agent knows."""
    hb = {"started_at": "2026-12-01T08:00:00Z"}
    ports = [{"port_id": f"{i:08d}-0000-4000-8000-000000000000", "counters": []} for i in range(5)]
    parts = split({"full": True, "heartbeat": hb, "ports": ports, "interfaces": [], "bans": [{"x": 1}]}, ports=2)
    assert [len(p["ports"]) for p in parts] == [2, 2, 1]
    slices = [p["part"]["ports"] for p in parts]
    assert slices[0]["after"] is None and slices[-1]["until"] is None
    assert [s["until"] for s in slices[:-1]] == [ports[1]["port_id"], ports[3]["port_id"]]
    assert [s["after"] for s in slices[1:]] == [s["until"] for s in slices[:-1]]
    assert parts[0]["part"]["interfaces"] == {"after": None, "until": None} and parts[1]["part"]["interfaces"] is None
    assert "bans" in parts[0] and not any("bans" in p for p in parts[1:])
    from connguard.db.services.report_schema import Report

    got = [Report.model_validate({k: v for k, v in p.items() if k != "bans"}).part for p in parts]
    pid = ports[2]["port_id"]
    assert [pid in g.ports for g in got] == [False, True, False]
    assert "0" * 8 + "-" in got[0].ports and "f" * 8 in got[2].ports
