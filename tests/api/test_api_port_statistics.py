"""``GET /v2.0/ports/{id}/statistics``: the server-side totals (admitted, refused,
would-refuse, set-full) and the offenders the port's agent reported, for readers of the
port's project only (another project's port answers 404)."""

from __future__ import annotations

from test_api_reports import policy_with_rule, send


def test_statistics_show_the_reported_totals_and_offenders(actors):
    a, agent = actors.member_a, actors.agent
    pol, rule = policy_with_rule(a, {"type": "connection_rate_limit", "direction": "ingress", "max_cps": 20})
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": pol}})["port"]["id"]
    send(agent, "host-1", full=True, ports=[{"port_id": port, "status": "ACTIVE", "counters": [
        {"rule_id": rule, "admitted": 100, "refused": 7, "set_full": 2}],
        "offenders": [{"ip_address": "198.51.100.7", "count": 7}]}])
    # a restarted agent's totals start again: the server adds, never goes backwards
    send(agent, "host-1", ports=[{"port_id": port, "counters": [{"rule_id": rule, "admitted": 5, "refused": 1}]}])
    stats = actors.reader_a.ok("GET", f"ports/{port}/statistics")["statistics"]
    [r] = stats["rules"]
    assert (r["rule_id"], r["rule_type"], r["admitted"], r["refused"], r["would_refuse"], r["set_full"]) == \
        (rule, "connection_rate_limit", 105, 8, 0, 2), r
    assert stats["status"] == "ACTIVE" and stats["offenders"] == [{"ip_address": "198.51.100.7/32", "rule_id": None,
                                                                    "count": 7}], stats
    status, _ = actors.member_b.get(f"ports/{port}/statistics")
    assert status == 404
