"""The reporter: a full report first, then deltas with only what moved; while the server is
unreachable reports are queued on disk (bounded, overflow counted), delivered in order after
reconnect and followed by a full report."""

from __future__ import annotations

import threading

from connguard.agent.hostinfo import Iface
from connguard.agent.reconciler import Reconciler
from connguard.agent.report_queue import ReportQueue
from connguard.agent.reporter import Delivery, Reporter
from connguard.agent.source import Desired
from connguard.compiler.context import RuleContext
from connguard.model import parse_state

from test_agent_reconciler import Kernel, Src

STATE = parse_state({
    "policies": [{"name": "qos-p1", "rules": [{"type": "connection_rate_limit", "direction": "ingress", "max_cps": 5}]}],
    "ports": [{"interface_name": "tap0", "policy": "qos-p1"}, {"interface_name": "tap1", "policy": "qos-p1"}]})
P0, P1, R0 = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b", \
    "00000000-0000-0000-0000-0000000000f0"
HITS = "h" + RuleContext(STATE.policies[0], 0, False, ()).rid


def _world(tmp_path, max_reports=1000):
    ex, src, now = Kernel(), Src(), [1_800_000_000.0]
    rec = Reconciler(src, ex, tmp_path, clock=lambda: now[0])
    src.next = Desired(STATE, "server snapshot", 1, {"tap0": P0, "tap1": P1}, {("qos-p1", 0): R0})
    rec.tick()
    sent, down = [], [False]
    ifaces = {"tap0": Iface("tap0", ("10.0.0.5",), "UP")}

    def post(body):
        if down[0]:
            raise Delivery("connection refused")
        sent.append(body["report"])
        return {}

    rep = Reporter(rec, src, post, netns=None, pattern="tap*", queue=ReportQueue(tmp_path / "q", max_reports=max_reports),
                   clock=lambda: now[0], stop_event=threading.Event(),
                   read_interfaces=lambda ns, pat: dict(ifaces), read_conntrack=lambda ns: (12, 262144))
    return ex, rep, sent, down, ifaces, now


def _hits(ex, tap0: int, tap1: int) -> None:
    ex.hits[HITS] = {"tap0": tap0, "tap1": tap1}


def test_full_first_then_deltas_of_what_moved(tmp_path):
    ex, rep, sent, down, ifaces, now = _world(tmp_path)
    _hits(ex, 3, 0)
    rep.step()
    full = sent[-1]
    assert full["full"] is True
    assert {p["port_id"]: (p["status"], p["counters"][0]["refused"]) for p in full["ports"]} == {P0: ("ACTIVE", 3), P1: ("ACTIVE", 0)}
    assert full["interfaces"] == [{"name": "tap0", "addresses": ["10.0.0.5"], "state": "UP"}]
    assert full["conntrack"] == {"count": 12, "max": 262144}
    now[0] += 5
    rep.step()
    assert sent[-1]["full"] is False and sent[-1]["ports"] == [] and "interfaces" not in sent[-1], sent[-1]
    _hits(ex, 3, 7)
    del ifaces["tap0"]
    ifaces["tap5"] = Iface("tap5", (), "UP")
    now[0] += 5
    rep.step()
    delta = sent[-1]
    assert [(p["port_id"], p["counters"][0]["refused"], "status" in p) for p in delta["ports"]] == [(P1, 7, False)], delta
    assert delta["interfaces"] == [{"name": "tap5", "addresses": [], "state": "UP"}] and delta["interfaces_gone"] == ["tap0"]


def test_offline_reports_are_queued_bounded_and_delivered_in_order_then_a_full_one(tmp_path):
    ex, rep, sent, down, ifaces, now = _world(tmp_path, max_reports=3)
    rep.step()
    down[0] = True
    for i in range(5):
        _hits(ex, 10 + i, 0)  # counters move: each offline report has content
        now[0] += 5
        rep.step()
    assert len(rep.queue) == 3 and rep.queue.overflow_total == 2, (len(rep.queue), rep.queue.overflow_total)
    reopened = ReportQueue(tmp_path / "q", max_reports=3)
    assert len(reopened) == 3 and reopened.overflow_total == 2, "the queue does not survive a restart"
    down[0] = False
    n = len(sent)
    now[0] += 5
    rep.step()
    delivered = sent[n:]
    assert [r["ports"][0]["counters"][0]["refused"] for r in delivered[:3]] == [12, 13, 14], delivered
    assert delivered[-1]["full"] is True and delivered[-1]["queue"] == {"length": 0, "overflow_total": 2}
    assert len(rep.queue) == 0


def test_no_full_report_before_the_first_apply(tmp_path):
    """A full report replaces the server's view: one listing no port would wipe the host's
    counters, and the next totals would be counted twice."""
    ex, src, now = Kernel(), Src(), [1_800_000_000.0]
    rec = Reconciler(src, ex, tmp_path, clock=lambda: now[0])
    sent = []
    rep = Reporter(rec, src, lambda body: sent.append(body["report"]), netns=None, pattern="tap*",
                   queue=ReportQueue(tmp_path / "q"), clock=lambda: now[0],
                   read_interfaces=lambda ns, pat: {}, read_conntrack=lambda ns: None)
    rep.step()
    assert sent[-1]["full"] is False and sent[-1]["ports"] == [], sent[-1]
    src.next = Desired(STATE, "server snapshot", 1, {"tap0": P0, "tap1": P1}, {("qos-p1", 0): R0})
    rec.tick()
    rep.step()
    assert sent[-1]["full"] is True and len(sent[-1]["ports"]) == 2, sent[-1]


def test_monitor_mode_reports_would_refuse_and_offenders_when_they_change(tmp_path):
    monitor = STATE.model_copy(update={"policies": (STATE.policies[0].model_copy(update={"enforcement": "monitor"}),)})
    ex, src, now = Kernel(), Src(), [1_800_000_000.0]
    rec = Reconciler(src, ex, tmp_path, clock=lambda: now[0])
    src.next = Desired(monitor, "server snapshot", 1, {"tap0": P0, "tap1": P1}, {("qos-p1", 0): R0})
    rec.tick()
    sent = []
    rep = Reporter(rec, src, lambda body: sent.append(body["report"]), netns=None, pattern="tap*",
                   queue=ReportQueue(tmp_path / "q"), clock=lambda: now[0],
                   read_interfaces=lambda ns, pat: {}, read_conntrack=lambda ns: None)
    ex.hits[HITS] = {"tap0": 9}
    ex.offenders = [("tap0", "198.51.100.7", 3), ("tap0", "198.51.100.8", 3)]
    rep.step()
    by_port = {p["port_id"]: p for p in sent[-1]["ports"]}
    assert by_port[P0]["counters"] == [{"rule_id": R0, "admitted": 0, "refused": 0, "would_refuse": 9,
                                           "set_full": 0}], by_port[P0]
    assert [o["ip_address"] for o in by_port[P0]["offenders"]] == ["198.51.100.7", "198.51.100.8"]
    assert by_port[P1]["offenders"] == []
    rep.step()
    assert sent[-1]["ports"] == [], "unchanged offenders were sent again"
    ex.offenders = [("tap1", "203.0.113.5", 1)]
    rep.step()
    moved = {p["port_id"]: p["offenders"] for p in sent[-1]["ports"]}
    assert moved == {P0: [], P1: [{"ip_address": "203.0.113.5", "count": 1}]}, moved


def test_enforce_mode_reports_the_most_refused_offenders_first_at_most_ten(tmp_path):
    ex, rep, sent, down, ifaces, now = _world(tmp_path)
    ex.offenders = [("tap0", f"198.51.100.{i}", i) for i in range(1, 16)] + [("tap1", "203.0.113.9", 4)]
    rep.step()
    by_port = {p["port_id"]: p["offenders"] for p in sent[-1]["ports"]}
    assert [o["count"] for o in by_port[P0]] == list(range(15, 5, -1)), by_port[P0]
    assert by_port[P0][0]["ip_address"] == "198.51.100.15" and by_port[P1] == [{"ip_address": "203.0.113.9", "count": 4}]
