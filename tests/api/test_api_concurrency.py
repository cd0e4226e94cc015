"""Lost updates and transactional writes."""

from __future__ import annotations

import threading

from apitest import error_type
from fastapi.testclient import TestClient


def test_lost_update_exactly_one_wins(app, actors):
    a = actors.member_a
    pid = a.ok("POST", "qos/policies", {"policy": {"name": "p"}})["policy"]["id"]
    barrier = threading.Barrier(2)
    results: list[tuple[int, str]] = []

    def put(name: str) -> None:
        client = TestClient(app)  # its own connection and event loop, like a second user
        barrier.wait()
        r = client.put(f"/v2.0/qos/policies/{pid}", json={"policy": {"name": name}},
                       headers={"X-Auth-Token": a.token, "If-Match": "revision_number=1"})
        results.append((r.status_code, name if r.status_code == 200 else error_type(r.json())))

    threads = [threading.Thread(target=put, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(s for s, _ in results)
    assert statuses == [200, 412], results
    winner = next(n for s, n in results if s == 200)
    final = a.ok("GET", f"qos/policies/{pid}")["policy"]
    assert final["name"] == winner and final["revision_number"] == 2


def test_failed_request_writes_nothing(actors):
    a = actors.member_a
    a.ok("POST", "qos/policies", {"policy": {"name": "default", "is_default": True}})
    other = a.ok("POST", "qos/policies", {"policy": {"name": "other"}})["policy"]
    # The name would change, then the default check fails: nothing of it may stay.
    status, data = a.put(f"qos/policies/{other['id']}", {"policy": {"name": "renamed", "is_default": True}})
    assert status == 409
    assert a.ok("GET", f"qos/policies/{other['id']}")["policy"] == other
    # A rule that clashes leaves the policy's revision alone.
    coll = f"qos/policies/{other['id']}/connection_limit_rules"
    a.ok("POST", coll, {"connection_limit_rule": {"max_connections": 10}})
    before = a.ok("GET", f"qos/policies/{other['id']}")["policy"]
    status, data = a.post(coll, {"connection_limit_rule": {"max_connections": 20}})
    assert status == 409 and error_type(data) == "QosRuleExists"
    assert a.ok("GET", f"qos/policies/{other['id']}")["policy"] == before
