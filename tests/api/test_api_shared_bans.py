"""Shared bans through the agent channel: a ban detected on one host with ``share`` project or
cloud reaches the host state of every host of that scope at once (their long-polls wake), a
delete lifts it everywhere, and offences count across hosts."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from apitest import PROJECT_A, Api
from test_api_reports import agent_for, policy_with_rule, send, utc

ATTACKER = "203.0.113.66"


class LongPoll(threading.Thread):
    """GET a host's state with ?revision=<current>&wait=30 in a thread; records when it answered."""

    def __init__(self, agent: Api, host: str) -> None:
        super().__init__(daemon=True)
        self.agent, self.host = agent, host
        self.since = agent.ok("GET", f"connguard/hosts/{host}/state")["host_state"]["revision"]
        self.answered_at: float | None = None
        self.state: dict[str, Any] | None = None

    def run(self) -> None:
        self.state = self.agent.ok("GET", f"connguard/hosts/{self.host}/state?revision={self.since}&wait=30")["host_state"]
        self.answered_at = time.monotonic()

    def waiting(self) -> "LongPoll":
        self.start()
        time.sleep(0.3)  # let the request reach its wait (answering early would fail the test below)
        assert self.answered_at is None, "the long-poll answered before any change"
        return self

    def latency_after(self, t0: float) -> float:
        self.join(35)
        assert self.answered_at is not None, f"long-poll of {self.host} did not answer"
        return self.answered_at - t0


def _three_hosts(actors: Any, app: Any) -> tuple[dict[str, Api], dict[str, str], str]:
    a = actors.member_a
    pol, rule = policy_with_rule(a, {"type": "brute_force", "profile": "ssh", "ban_seconds": 60,
                                     "ban_multiplier": 2, "share": "cloud"})
    agents = {"host-1": actors.agent}
    for host in ("host-2", "host-3"):
        agents[host] = agent_for(app, actors.agent.client, host)
    ports = {h: a.ok("POST", "ports", {"port": {"binding:host_id": h, "qos_policy_id": pol}})["port"]["id"]
             for h in agents}
    return agents, ports, rule


def _bans(agent: Api, host: str) -> list[tuple[str, int, str]]:
    state = agent.ok("GET", f"connguard/hosts/{host}/state")["host_state"]
    return [(b["ip_address"], b["offence_count"], b["scope"]) for b in state["bans"]]


def test_shared_ban_reaches_every_host_at_once_and_delete_lifts_it_everywhere(actors, app):
    agents, ports, rule = _three_hosts(actors, app)
    polls = {h: LongPoll(agents[h], h).waiting() for h in ("host-2", "host-3")}
    now = datetime.now(timezone.utc)
    t0 = time.monotonic()
    send(agents["host-1"], "host-1", bans=[{"ip_address": ATTACKER, "port_id": ports["host-1"], "rule_id": rule,
                                            "share": "cloud", "banned_at": utc(now),
                                            "expires_at": utc(now + timedelta(seconds=60)), "reason": "ssh"}])
    for host, poll in polls.items():
        took = poll.latency_after(t0)
        print(f"shared ban reached the long-poll of {host} in {took:.3f} s")
        assert took < 1.0, f"{host} woke {took:.3f} s after the report"
        assert [(b["ip_address"], b["origin"], b["host"]) for b in poll.state["bans"]] == [
            (f"{ATTACKER}/32", "detected", "host-1")], poll.state["bans"]
    for host in agents:
        assert _bans(agents[host], host) == [(f"{ATTACKER}/32", 1, "cloud")], host
    ban = actors.admin.ok("GET", "connguard/bans")["bans"]
    assert len(ban) == 1 and ban[0]["expires_at"] == utc(now + timedelta(seconds=60)), ban
    # the detecting host resending it (a queued report) adds no offence and no row
    send(agents["host-1"], "host-1", bans=[{"ip_address": ATTACKER, "port_id": ports["host-1"], "rule_id": rule,
                                            "share": "cloud", "banned_at": utc(now),
                                            "expires_at": utc(now + timedelta(seconds=60))}])
    assert len(actors.admin.ok("GET", "connguard/bans")["bans"]) == 1

    polls = {h: LongPoll(agents[h], h).waiting() for h in agents}
    t0 = time.monotonic()
    actors.admin.ok("DELETE", f"connguard/bans/{ban[0]['id']}")
    for host, poll in polls.items():
        took = poll.latency_after(t0)
        print(f"unban reached the long-poll of {host} in {took:.3f} s")
        assert took < 1.0, f"{host} woke {took:.3f} s after the delete"
        assert poll.state["bans"] == [], (host, poll.state["bans"])
    kinds = [e["event_type"] for e in actors.admin.ok("GET", "connguard/events?sort_key=created_at")["events"]
             if e["event_type"] in ("ban", "unban")]  # not the audited policy/port changes before them
    assert kinds == ["ban", "unban"], kinds


def test_second_offence_on_another_host_is_escalated(actors, app):
    agents, ports, rule = _three_hosts(actors, app)
    now = datetime.now(timezone.utc)
    first = {"ip_address": ATTACKER, "port_id": ports["host-1"], "rule_id": rule, "share": "cloud",
             "banned_at": utc(now - timedelta(seconds=300)), "expires_at": utc(now - timedelta(seconds=240))}
    send(agents["host-1"], "host-1", bans=[first])  # over a while ago: recent history, not active
    assert _bans(agents["host-2"], "host-2") == []
    poll = LongPoll(agents["host-3"], "host-3").waiting()
    send(agents["host-2"], "host-2", bans=[{**first, "port_id": ports["host-2"], "banned_at": utc(now),
                                            "expires_at": utc(now + timedelta(seconds=60)), "offence_count": 1}])
    assert poll.latency_after(time.monotonic()) < 1.0
    for host in agents:  # every host carries offence 2 and the multiplied length (60 s x 2)
        assert _bans(agents[host], host) == [(f"{ATTACKER}/32", 2, "cloud")], host
    ban = actors.admin.ok("GET", "connguard/bans")["bans"][0]
    assert (ban["host"], ban["expires_at"]) == ("host-2", utc(now + timedelta(seconds=120))), ban


def test_project_ban_stays_in_its_project(actors, app):
    a, b = actors.member_a, actors.member_b
    pol, rule = policy_with_rule(a, {"type": "brute_force", "profile": "ssh", "ban_seconds": 60, "share": "project"})
    agents = {h: agent_for(app, actors.agent.client, h) for h in ("host-2", "host-3")}
    agents["host-1"] = actors.agent
    pa = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": pol}})["port"]["id"]
    a.ok("POST", "ports", {"port": {"binding:host_id": "host-2"}})
    b.ok("POST", "ports", {"port": {"binding:host_id": "host-3"}})
    now = datetime.now(timezone.utc)
    send(agents["host-1"], "host-1", bans=[{"ip_address": ATTACKER, "port_id": pa, "rule_id": rule, "share": "project",
                                            "banned_at": utc(now), "expires_at": utc(now + timedelta(seconds=60))}])
    assert _bans(agents["host-2"], "host-2") == [(f"{ATTACKER}/32", 1, "project")]
    assert _bans(agents["host-3"], "host-3") == []  # project B's host
    assert [x["project_id"] for x in a.ok("GET", "connguard/bans")["bans"]] == [PROJECT_A]
    assert b.ok("GET", "connguard/bans")["bans"] == []


def test_the_scope_is_the_rules_not_the_reports(actors, app):
    """A host's agent token cannot ban cloud-wide on its own word: without a brute-force rule
    of the port's policy (none, another policy's, another type) the ban stays on the port."""
    a = actors.member_a
    other, other_rule = policy_with_rule(a, {"type": "brute_force", "profile": "ssh", "ban_seconds": 60,
                                             "share": "cloud"})
    mine, rate = policy_with_rule(a, {"type": "connection_rate_limit", "direction": "ingress", "max_cps": 5},
                                  name="mine")
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": mine}})["port"]["id"]
    host2 = agent_for(app, actors.agent.client, "host-2")
    a.ok("POST", "ports", {"port": {"binding:host_id": "host-2"}})
    now = datetime.now(timezone.utc)
    for i, rule in enumerate([None, other_rule, rate]):
        send(actors.agent, "host-1", bans=[{"ip_address": f"203.0.113.{i}", "port_id": port, "rule_id": rule,
                                            "share": "cloud", "banned_at": utc(now),
                                            "expires_at": utc(now + timedelta(seconds=60))}])
    assert {b["scope"] for b in a.ok("GET", "connguard/bans")["bans"]} == {"port"}
    assert _bans(host2, "host-2") == []
    status, data = actors.agent.post("connguard/hosts/host-1/report", {"report": {
        "heartbeat": {"started_at": utc(now)}, "bans": [{"ip_address": "203.0.113.0/24", "port_id": port,
                                                         "banned_at": utc(now), "expires_at": utc(now)}]}})
    assert status == 400 and "Invalid input for bans[0].ip_address: a detected ban is one source" in \
        data["NeutronError"]["message"], data
