"""Kernel (per host) and server (across hosts) brute-force escalation compose by the longer
one winning, never by multiplying twice (docs/dataplane.md, "Brute-force escalation"): the
server's length comes from the offence count, not from the length the kernel gave."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from test_api_reports import send, utc

from connguard.db.models import Ban
from connguard.db.services.common import aware
from test_api_shared_bans import ATTACKER, _three_hosts

BASE = 60  # ban_seconds of _three_hosts' rule, ban_multiplier 2


def _ban(app):
    """The latest ban row of the attacker, ended ones included (the API lists active bans)."""
    with app.state.sessions() as s:
        row = s.scalars(select(Ban).where(Ban.ip_address.startswith(ATTACKER)).order_by(Ban.created_at.desc())).first()
        return {"offence_count": row.offence_count, "expires_at": utc(aware(row.expires_at))}


def test_a_kernel_escalated_repeat_after_a_cross_host_offence_is_multiplied_once(actors, app):
    agents, ports, rule = _three_hosts(actors, app)
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def report(host, *, ago, length, step):
        start = now - timedelta(seconds=ago)
        send(agents[host], host, bans=[{"ip_address": ATTACKER, "port_id": ports[host], "rule_id": rule,
                                        "share": "cloud", "banned_at": utc(start), "offence_count": step,
                                        "expires_at": utc(start + timedelta(seconds=length))}])
        return start

    report("host-1", ago=1000, length=BASE, step=1)            # offence 1, long over
    second = report("host-2", ago=500, length=BASE, step=1)    # host-2's kernel: its first (60 s)
    ban = _ban(app)
    assert ban["offence_count"] == 2 and ban["expires_at"] == utc(second + timedelta(seconds=2 * BASE)), ban
    # host-2 again once that ban is over: its kernel escalates on its own memory (step 2:
    # 120 s) and the server counts offence 3 across hosts: 240 s, not 120 x 2 x 2
    third = report("host-2", ago=0, length=2 * BASE, step=2)
    ban = _ban(app)
    assert ban["offence_count"] == 3, ban
    assert ban["expires_at"] == utc(third + timedelta(seconds=4 * BASE)), (ban, "expected 240 s")


def test_the_longer_of_kernel_and_server_lengths_wins(actors, app):
    agents, ports, rule = _three_hosts(actors, app)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # a kernel length beyond what the server computes for offence 1 (an operator's longer
    # ban in the kernel, or history the server lost) is kept, not shortened
    send(agents["host-1"], "host-1", bans=[{"ip_address": ATTACKER, "port_id": ports["host-1"], "rule_id": rule,
                                            "share": "cloud", "banned_at": utc(now), "offence_count": 1,
                                            "expires_at": utc(now + timedelta(seconds=10 * BASE))}])
    ban = _ban(app)
    assert ban["offence_count"] == 1 and ban["expires_at"] == utc(now + timedelta(seconds=10 * BASE)), ban
