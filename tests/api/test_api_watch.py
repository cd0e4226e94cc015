"""The agent channel's long-polls are served together (server/watch.py) and its tokens are
remembered briefly (server/authcache.py): many waiting agents cost a few queries per change and
per second, not a few per agent; every one still gets its own host's state; a revoked token
stops working at once."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from sqlalchemy import event

from connguard.db.services.tokens import create_token

HOSTS = 40


def _provision(app: Any, admin) -> tuple[dict[str, str], dict[str, str], str]:
    pol = admin.ok("POST", "qos/policies", {"policy": {"name": "w"}})["policy"]["id"]
    rule = admin.ok("POST", f"qos/policies/{pol}/brute_force_rules",
                    {"brute_force_rule": {"profile": "ssh", "share": "cloud"}})["brute_force_rule"]["id"]
    tokens, ports = {}, {}
    for i in range(HOSTS):
        host = f"wh-{i:02d}"
        ports[host] = admin.ok("POST", "ports", {"port": {"binding:host_id": host, "qos_policy_id": pol,
                                                          "interface_name": f"tapw{i}"}})["port"]["id"]
        with app.state.sessions() as s:
            tokens[host] = create_token(s, project_id="admin", role="agent", host=host)[0]
            s.commit()
    return tokens, ports, rule


def _selects(app: Any) -> list[str]:
    seen: list[str] = []

    def before(_conn, _cursor, statement, *_args):  # noqa: ANN001
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append(statement)
    event.listen(app.state.engine, "before_cursor_execute", before)
    return seen


async def _fanout(app: Any, tokens: dict[str, str], ports: dict[str, str], rule: str) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t/v2.0") as http:
        async def get(host: str, query: str = "") -> dict:
            r = await http.get(f"connguard/hosts/{host}/state{query}", headers={"X-Auth-Token": tokens[host]},
                               timeout=60)
            assert r.status_code == 200, (host, r.status_code, r.text)
            return r.json()["host_state"]

        first = {h: await get(h) for h in tokens}
        polls = {h: asyncio.create_task(get(h, f"?revision={first[h]['revision']}&wait=30")) for h in tokens}
        await asyncio.sleep(1.5)  # every poll waits (and the watch has read once at least)
        assert not any(p.done() for p in polls.values()), "a long-poll answered before any change"
        reads0 = app.state.watch.reads
        await asyncio.sleep(2.2)
        idle_reads = app.state.watch.reads - reads0
        seen = _selects(app)
        now = datetime.now(timezone.utc)
        h0 = next(iter(tokens))
        r = await http.post(f"connguard/hosts/{h0}/report", headers={"X-Auth-Token": tokens[h0]}, json={"report": {
            "heartbeat": {"started_at": now.isoformat()}, "bans": [{
                "ip_address": "198.51.100.7", "port_id": ports[h0], "rule_id": rule, "banned_at": now.isoformat(),
                "expires_at": (now + timedelta(seconds=600)).isoformat(), "share": "cloud"}]}})
        assert r.status_code == 200, r.text
        t0 = time.monotonic()
        states = dict(zip(polls, await asyncio.gather(*polls.values())))
        took = time.monotonic() - t0
        selects = len(seen)
    return {"states": states, "first": first, "idle_reads": idle_reads, "selects": selects, "took": took}


def test_waiting_agents_are_answered_together(app, actors):
    tokens, ports, rule = _provision(app, actors.admin)
    out = asyncio.run(_fanout(app, tokens, ports, rule))
    # idle: one revision read per second for all 40 waiting agents, not one per agent
    assert out["idle_reads"] <= 4, f"{out['idle_reads']} watch reads in 2.2 s idle with {HOSTS} agents waiting"
    for host, state in out["states"].items():
        assert state["host"] == host and state["revision"] > out["first"][host]["revision"], state
        assert [p["id"] for p in state["ports"]] == [ports[host]], (host, state["ports"])
        assert [b["ip_address"] for b in state["bans"]] == ["198.51.100.7/32"], (host, state["bans"])
    # the report (token, port, rule, previous ban, hosts to bump...) plus the watch's revision
    # read and one batch of six queries for the 40 hosts; before: 40 x (revision + six)
    assert out["selects"] <= 25, f"{out['selects']} SELECTs to answer {HOSTS} long-polls"
    assert out["took"] < 5, f"the {HOSTS} long-polls took {out['took']:.2f} s to answer"


def test_a_timed_out_long_poll_answers_the_current_state(app, actors):
    tokens, ports, _ = _provision(app, actors.admin)
    host = next(iter(tokens))
    st = actors.admin.client.get(f"/v2.0/connguard/hosts/{host}/state", headers={"X-Auth-Token": tokens[host]})
    rev = st.json()["host_state"]["revision"]
    t0 = time.monotonic()
    r = actors.admin.client.get(f"/v2.0/connguard/hosts/{host}/state?revision={rev}&wait=1",
                                headers={"X-Auth-Token": tokens[host]})
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["host_state"]["revision"] == rev, r.text
    assert [p["id"] for p in r.json()["host_state"]["ports"]] == [ports[host]]
    assert 0.9 <= took < 5, f"wait=1 answered after {took:.2f} s"


def test_revoked_agent_token_is_refused_at_once(app, actors):
    with app.state.sessions() as s:
        secret, tok = create_token(s, project_id="admin", role="agent", host="host-9")
        s.commit()
    headers = {"X-Auth-Token": secret}
    client = actors.admin.client
    assert client.get("/v2.0/connguard/hosts/host-9/state", headers=headers).status_code == 200
    assert client.get("/v2.0/connguard/hosts/host-9/state", headers=headers).status_code == 200  # cached now
    actors.admin.ok("DELETE", f"connguard/tokens/{tok['id']}", expect=204)
    r = client.get("/v2.0/connguard/hosts/host-9/state", headers=headers)
    assert r.status_code == 401, (r.status_code, r.text)


def test_caller_cache_expires():
    from connguard.db.services.common import Caller
    from connguard.server.authcache import CallerCache

    now = [100.0]
    cache = CallerCache(ttl=10, clock=lambda: now[0])
    who = Caller(role="agent", project_id="p", host="h")
    cache.put("k", who)
    now[0] += 9.9
    assert cache.get("k") == who
    now[0] += 0.2
    assert cache.get("k") is None, "an entry outlived its TTL"
