"""The server source over the in-process app (TestClient): the JSON snapshot becomes the same
HostState a state file gives, long-polls bring changes, the cache serves a restart while the
server is down, and garbage, truncated or older snapshots are refused."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from agent_api import Api, backends, make_app, token
from connguard.agent.server_source import ServerSource
from connguard.agent.snapshot import policy_name
from connguard.compiler import compile_host
from connguard.model import parse_state


@pytest.fixture(params=backends())
def world(request, tmp_path_factory):
    app = make_app(request.param, tmp_path_factory)
    client = TestClient(app, base_url="http://testserver")
    admin = Api(client, token(app, role="admin"))
    return app, client, admin, token(app, role="agent", host="host-1")


def _source(client, tok, workdir, **kw) -> ServerSource:
    client.headers["X-Auth-Token"] = tok
    return ServerSource("http://testserver", tok, "host-1", workdir, http=client, **kw)


def test_snapshot_is_the_same_host_state_as_a_state_file_and_long_poll_brings_changes(world, tmp_path):
    app, client, admin, tok = world
    pol, rule = admin.policy_with_rule({"type": "connection_rate_limit", "direction": "ingress", "max_cps": 20})
    port = admin.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": pol,
                                               "fixed_ips": ["10.0.0.5"]}})["port"]
    src = _source(client, tok, tmp_path)
    assert src.fetch_once(None, 0) is True
    got = src.poll()
    name = policy_name(pol)
    same = parse_state({"policies": [{"name": name, "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "max_cps": 20}]}],
        "ports": [{"interface_name": port["interface_name"], "fixed_ips": ["10.0.0.5"], "policy": name,
                   "name": port["name"]}]})
    assert got.state == same, (got.state, same)
    assert compile_host(got.state) == compile_host(same)
    assert dict(got.port_ids) == {port["interface_name"]: port["id"]}
    assert dict(got.rule_ids) == {(name, 0): rule}
    assert src.poll() is None, "a snapshot is handed over once"

    # long-poll: answers when a write bumps the revision, with the change
    answered = {}

    def poll() -> None:
        answered["new"] = src.fetch_once(src.revision, 10)
        answered["at"] = time.monotonic()

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)
    assert "at" not in answered, "the long-poll answered before any change"
    t0 = time.monotonic()
    admin.ok("PUT", f"qos/policies/{pol}/connection_rate_limit_rules/{rule}",
             {"connection_rate_limit_rule": {"max_cps": 40}})
    t.join(12)
    assert answered.get("new") is True, answered
    assert answered["at"] - t0 < 2.0, f"long-poll answered {answered['at'] - t0:.2f} s after the write"
    assert src.poll().state.policies[0].rules[0].max_cps == 40


def test_cached_snapshot_is_enforced_by_a_restarted_agent_while_the_server_is_down(world, tmp_path):
    app, client, admin, tok = world
    pol, _ = admin.policy_with_rule({"type": "connection_limit", "direction": "ingress", "max_connections": 5})
    admin.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "qos_policy_id": pol}})
    src = _source(client, tok, tmp_path)
    src.fetch_once(None, 0)
    first = src.poll()

    def down(request):
        raise httpx.ConnectError("connection refused")

    dead = httpx.Client(transport=httpx.MockTransport(down))
    restarted = ServerSource("http://testserver", tok, "host-1", tmp_path, http=dead)
    cached = restarted.poll()
    assert cached is not None and cached.state == first.state and cached.revision == first.revision
    with pytest.raises(httpx.ConnectError):
        restarted.fetch_once(None, 0)
    assert restarted.poll() is None


def _fake(answers):
    """A transport answering each request with the next body (bytes)."""
    it = iter(answers)

    def handler(request):
        return httpx.Response(200, content=next(it))
    return httpx.Client(transport=httpx.MockTransport(handler))


def _good(revision: int) -> bytes:
    return json.dumps({"host_state": {"host": "host-1", "revision": revision, "ports": [], "policies": [],
                                      "allowlist": [], "bans": []}}).encode()


@pytest.mark.parametrize("bad, why", [
    (b'{"host_state": {"host": "host-1", "revis', "not JSON"),
    (json.dumps({"host_state": {"host": "host-1", "revision": 9, "ports": []}}).encode(), "host_state.policies"),
    (json.dumps({"host_state": {"host": "host-1", "revision": 9, "ports": [{"interface_name": "tap 0", "id": "x"}],
                                "policies": [], "allowlist": [], "bans": []}}).encode(), "interface_name"),
    (_good(3), "below the 5 held"),
    (json.dumps({"host_state": {"host": "host-2", "revision": 9, "ports": [], "policies": [], "allowlist": [],
                                "bans": []}}).encode(), "host-2"),
])
def test_garbage_truncated_invalid_or_older_snapshots_are_refused(tmp_path, bad, why):
    from connguard.agent.server_source import _Unusable

    src = ServerSource("http://fake", "t", "host-1", tmp_path, http=_fake([_good(5), bad]))
    assert src.fetch_once(None, 0) and src.poll().revision == 5
    cache = (tmp_path / "snapshot.json").read_bytes()
    with pytest.raises(_Unusable) as exc:
        src.fetch_once(5, 0)
    assert why in str(exc.value), str(exc.value)
    assert src.poll() is None and src.revision == 5
    assert (tmp_path / "snapshot.json").read_bytes() == cache, "a refused snapshot replaced the cache"


def test_backoff_grows_with_jitter_up_to_the_cap_and_is_logged_once(tmp_path, caplog):
    import random

    from connguard.agent import server_source as ss

    waits = []
    stop = threading.Event()

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) >= 12:
            stop.set()

    def down(request):
        raise httpx.ConnectError("refused")

    src = ss.ServerSource("http://x", "t", "host-1", tmp_path, http=httpx.Client(transport=httpx.MockTransport(down)),
                          stop_event=stop, rng=random.Random(1))
    src._sleep = sleep
    with caplog.at_level("WARNING", logger="connguard.agent.server"):
        src.run()
    assert len(waits) == 12
    assert all(w <= ss.BACKOFF_CAP for w in waits), waits
    assert waits[-1] >= ss.BACKOFF_CAP / 2 and waits[0] <= ss.BACKOFF_START, waits
    assert len({round(w, 6) for w in waits[-4:]}) == 4, f"no jitter at the cap: {waits[-4:]}"
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1, [r.getMessage() for r in unreachable]


def test_a_registered_port_replaces_the_discovered_stand_in_of_its_interface(world):
    app, client, admin, tok = world
    agent = Api(client, tok)
    hb = {"started_at": "2026-12-01T08:00:00Z", "version": "t"}
    agent.ok("POST", "connguard/hosts/host-1/report", {"report": {"heartbeat": hb, "interfaces": [
        {"name": "tapabc", "addresses": ["10.0.0.9"], "state": "UP"}]}}, expect=200)
    [found] = admin.ok("GET", "ports?binding:host_id=host-1")["ports"]
    assert found["device_owner"] == "connguard:discovered"
    port = admin.ok("POST", "ports", {"port": {"binding:host_id": "host-1", "interface_name": "tapabc",
                                               "fixed_ips": ["10.0.0.9"]}})["port"]
    listed = admin.ok("GET", "ports?binding:host_id=host-1")["ports"]
    assert [p["id"] for p in listed] == [port["id"]], listed
    # another project cannot take over this project's discovered port
    agent.ok("POST", "connguard/hosts/host-1/report", {"report": {"heartbeat": hb, "interfaces": [
        {"name": "tapabc", "addresses": ["10.0.0.9"], "state": "UP"}, {"name": "tapdef", "state": "UP"}]}},
        expect=200)
    other = Api(client, token(app, role="member", project="project-b"))
    r = client.post("/v2.0/ports", json={"port": {"binding:host_id": "host-1", "interface_name": "tapdef"}},
                    headers={"X-Auth-Token": other.tok})
    assert r.status_code in (403, 409), (r.status_code, r.text)


def test_gc_paused_nests_and_restores_the_collector():
    import gc

    from connguard.agent.gcpause import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "an inner pause re-enabled the collector"
    assert gc.isenabled(), "the collector stayed off after the pause"
    try:
        with gc_paused():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.isenabled(), "an exception left the collector off"
