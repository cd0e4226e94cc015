"""Enforce-mode refusals end in the refuse chains, which record the offender in a rule of its
own: a full offender set (an attacker with many sources fills it) must never turn a refusal
into a pass (a dynset that cannot add skips the rest of its rule)."""

from __future__ import annotations

from connguard.compiler import compile_host
from connguard.compiler.common import refuse_chain
from connguard.model import parse_state

RULES = [{"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 5},
         {"type": "connection_rate_limit", "direction": "egress", "scope": "port", "max_cps": 50},
         {"type": "connection_limit", "direction": "any", "scope": "remote_ip", "max_connections": 5},
         {"type": "brute_force", "profile": "ssh"}]


def _compiled(enforcement="enforce"):
    return compile_host(parse_state({"policies": [{"name": "p", "enforcement": enforcement, "rules": RULES}],
                                     "ports": [{"interface_name": "tapa", "policy": "p"}]}))


def test_each_refuse_chain_records_in_rules_without_a_verdict_then_refuses():
    rs = _compiled()
    for d in ("ingress", "egress"):
        for kind, verdicts in (("drop", [["drop"]]), ("reset", [["reject"], ["drop"]])):
            chain = rs.chain(refuse_chain(d, kind))
            record, refusal = chain.rules[:2], chain.rules[2:]
            for r in record:
                [dyn] = [e["set"] for e in r.expr if "set" in e]
                assert dyn["op"] == "update" and dyn["set"] in ("@offenders4", "@offenders6"), r.expr
                assert not any(k in e for e in r.expr for k in ("drop", "reject", "accept", "jump")), r.expr
            assert [list(r.expr[-1]) for r in refusal] == verdicts, refusal


def test_enforce_refusals_of_rate_and_connection_limits_go_through_the_refuse_chains():
    rs = _compiled()
    policy = [c for c in rs.chains if c.name.startswith(("in_", "out_"))]
    ends = [r.expr[-1] for c in policy for r in c.rules if r.origin.endswith(("connection_rate_limit ingress",
                                                                           "connection_rate_limit egress",
                                                                           "connection_limit ingress",
                                                                           "connection_limit egress"))]
    assert ends and all(e.get("jump", {}).get("target", "").startswith("refuse_") for e in ends), ends
    assert rs.set("offenders4").counter and rs.set("offenders6").counter


def test_monitor_mode_uses_no_refuse_chain():
    rs = _compiled("monitor")
    policy = [c for c in rs.chains if c.name.startswith(("in_", "out_"))]
    assert not [r for c in policy for r in c.rules if r.expr and "jump" in r.expr[-1]
                and r.expr[-1]["jump"]["target"].startswith("refuse_")]
