"""Collections in SQL: filters, sorting, keyset pagination in both directions, isolation, and
a bounded number of queries per request whatever the number of rows (no N+1)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import pytest
from apitest import PROJECT_A, error_type
from sqlalchemy import event


def _get(api, href: str) -> Any:
    r = api.client.get(href, headers={"X-Auth-Token": api.token})
    assert r.status_code == 200, r.text
    return r.json()


def _link(page: dict[str, Any], name: str, rel: str) -> str | None:
    return next((link["href"] for link in page.get(f"{name}_links", []) if link["rel"] == rel), None)


def _walk(api, path: str, name: str) -> list[list[str]]:
    """Follow ``next`` links to the end; the ids of each page."""
    pages, href = [], "/v2.0/" + path
    while href:
        page = _get(api, href)
        pages.append([i["id"] for i in page[name]])
        href = _link(page, name, "next")
    return pages


def test_pages_forward_and_back(actors):
    a = actors.member_a
    ids = [a.ok("POST", "ports", {"port": {"name": f"vm{i}"}})["port"]["id"] for i in range(7)]
    pages = _walk(a, "ports?limit=3", "ports")
    assert pages == [ids[0:3], ids[3:6], ids[6:7]]
    # From the last page, "previous" walks back to the first; the first page has no previous.
    last = _get(a, f"/v2.0/ports?limit=3&marker={ids[5]}")
    assert [p["id"] for p in last["ports"]] == [ids[6]] and _link(last, "ports", "next") is None
    back = _get(a, _link(last, "ports", "previous"))
    assert [p["id"] for p in back["ports"]] == ids[3:6]
    first = _get(a, _link(back, "ports", "previous"))
    assert [p["id"] for p in first["ports"]] == ids[0:3]
    assert _link(first, "ports", "previous") is None
    assert [p["id"] for p in _get(a, _link(first, "ports", "next"))["ports"]] == ids[3:6]
    # limit=0 means no limit; a marker alone gives everything after it.
    assert len(a.ok("GET", "ports?limit=0")["ports"]) == 7
    assert [p["id"] for p in a.ok("GET", f"ports?marker={ids[4]}")["ports"]] == ids[5:]


def test_sort_with_nulls_and_ties_pages_like_the_full_listing(actors):
    a = actors.member_a
    for i in range(9):
        host = None if i % 3 == 0 else f"host-{i % 2}"
        a.ok("POST", "ports", {"port": {"name": f"vm{i % 4}", "binding:host_id": host}})
    for query in ("sort_key=binding:host_id&sort_dir=desc&sort_key=name",
                  "sort_key=binding:host_id&sort_key=name&sort_dir=asc&sort_dir=desc",
                  "sort_key=name&sort_dir=desc", "sort_key=created_at&sort_dir=desc"):
        full = [p["id"] for p in a.ok("GET", f"ports?{query}")["ports"]]
        assert len(full) == 9
        pages = _walk(a, f"ports?{query}&limit=2", "ports")
        assert [i for page in pages for i in page] == full, query
    hosts = [p["binding:host_id"] for p in a.ok("GET", "ports?sort_key=binding:host_id")["ports"]]
    assert hosts[:3] == [None] * 3 and hosts[3:] == sorted(hosts[3:])  # NULLs first ascending
    hosts = [p["binding:host_id"] for p in a.ok("GET", "ports?sort_key=binding:host_id&sort_dir=desc")["ports"]]
    assert hosts[-3:] == [None] * 3  # and last descending


def test_filters_in_sql(actors):
    a, admin = actors.member_a, actors.admin
    cloud = admin.ok("POST", "qos/policies", {"policy": {"name": "cloud", "shared": True, "is_default": True}})["policy"]
    own = a.ok("POST", "qos/policies", {"policy": {"name": "own", "tags": ["web", "prod"]}})["policy"]
    a.ok("POST", "qos/policies", {"policy": {"name": "other", "tags": ["db"]}})
    p1 = a.ok("POST", "ports", {"port": {"name": "a", "fixed_ips": ["10.0.0.1", "10.0.0.2"],
                                          "qos_policy_id": own["id"]}})["port"]
    p2 = a.ok("POST", "ports", {"port": {"name": "b", "binding:host_id": "h", "fixed_ips": ["10.0.0.3"]}})["port"]

    def names(path: str) -> list[str]:
        return [i["name"] for i in a.ok("GET", path)[path.split("?")[0].split("/")[-1]]]

    assert names("ports?fixed_ips=10.0.0.2") == ["a"]
    assert names("ports?fixed_ips=10.0.0.3&fixed_ips=10.0.0.1") == ["a", "b"]
    assert names("ports?binding:host_id=null") == ["a"]
    assert names("ports?binding:host_id=h") == ["b"]
    assert names(f"ports?effective_qos_policy_id={cloud['id']}") == ["b"]
    assert names(f"ports?effective_qos_policy_id={own['id']}&name=a") == ["a"]
    assert names(f"ports?tenant_id={PROJECT_A}&revision_number=1") == ["a", "b"]
    assert names(f"ports?id={p2['id']}&id={p1['id']}") == ["a", "b"]
    assert names(f"ports?created_at={p1['created_at']}") in (["a"], ["a", "b"])
    assert names("qos/policies?tags=prod") == ["own"]
    assert names("qos/policies?shared=true") == ["cloud"]
    assert names("qos/policies?is_default=False&shared=false") == ["own", "other"]
    for bad in ("ports?revision_number=x", "qos/policies?shared=maybe", "ports?created_at=yesterday",
                "qos/policies?rules=x", "qos/policies?sort_key=tags", "ports?colour=red"):
        status, data = a.get(bad)
        assert status == 400 and error_type(data) == "HTTPBadRequest", bad


def test_lists_are_isolated_and_markers_stay_in_the_collection(actors):
    a, b = actors.member_a, actors.member_b
    pa = a.ok("POST", "ports", {"port": {"name": "a"}})["port"]
    b.ok("POST", "ports", {"port": {"name": "b"}})
    assert [p["name"] for p in b.ok("GET", "ports")["ports"]] == ["b"]
    assert [p["name"] for p in b.ok("GET", f"ports?project_id={PROJECT_A}")["ports"]] == []
    status, data = b.get(f"ports?marker={pa['id']}")  # another project's id: not in this collection
    assert status == 400 and error_type(data) == "HTTPBadRequest"
    status, _ = a.get(f"ports?marker={pa['id']}&name=zzz")  # filtered out: not in the collection either
    assert status == 400
    assert {p["name"] for p in actors.admin.ok("GET", "ports")["ports"]} == {"a", "b"}


def test_security_collections_filter_and_page(actors):
    a, admin = actors.member_a, actors.admin
    port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1"}})["port"]
    for i in range(4):
        a.ok("POST", "connguard/bans", {"ban": {"ip_address": f"198.51.100.{i}", "port_id": port["id"]}})
        a.ok("POST", "connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": f"192.0.2.{i}/32"}})
    admin.ok("POST", "connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": "203.0.113.0/24",
                                                                 "project_id": None}})
    assert [len(p) for p in _walk(a, "connguard/bans?limit=3", "bans")] == [3, 1]
    ip = a.ok("GET", "connguard/bans")["bans"][2]["ip_address"]
    assert len(a.ok("GET", f"connguard/bans?port_id={port['id']}&ip_address={ip}")["bans"]) == 1
    assert [e["remote_ip_prefix"] for e in a.ok("GET", "connguard/allowlist?project_id=null")["allowlist"]] \
        == ["203.0.113.0/24"]
    assert [len(p) for p in _walk(a, "connguard/allowlist?limit=2", "allowlist")] == [2, 2, 1]
    events = a.ok("GET", "connguard/events?event_type=ban&sort_key=ip_address&sort_dir=desc&limit=2")
    assert [e["ip_address"].split("/")[0] for e in events["events"]] == ["198.51.100.3", "198.51.100.2"]
    assert _link(events, "events", "next")
    actors.agent.ok("POST", "connguard/hosts/host-1/report", {"report": {"heartbeat": {"started_at": "2026-12-01T08:00:00Z"}}}, expect=200)
    agents = admin.ok("GET", "agents?alive=true&binary=connguard-agent&sort_key=alive")["agents"]
    assert [g["host"] for g in agents] == ["host-1"]
    assert admin.ok("GET", "agents?alive=false")["agents"] == []


@contextmanager
def _count_queries(app: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def before(_conn, _cursor, statement, *_args):  # noqa: ANN001
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append(statement)

    event.listen(app.state.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(app.state.engine, "before_cursor_execute", before)


@pytest.mark.parametrize("path", ["ports?limit=50", "qos/policies?limit=50", "connguard/hosts/host-1/state",
                                  "connguard/bans", "connguard/events?limit=50"])
def test_queries_do_not_grow_with_rows(app, actors, path):
    a, admin = actors.member_a, actors.admin
    admin.ok("POST", "qos/policies", {"policy": {"name": "cloud", "shared": True, "is_default": True}})

    def add(n: int) -> None:
        for i in range(n):
            pol = a.ok("POST", "qos/policies", {"policy": {"name": f"p{i}"}})["policy"]
            a.ok("POST", f"qos/policies/{pol['id']}/connection_limit_rules",
                 {"connection_limit_rule": {"max_connections": 10 + i}})
            port = a.ok("POST", "ports", {"port": {"binding:host_id": "host-1",
                                                   "qos_policy_id": pol["id"] if i % 2 else None}})["port"]
            a.ok("POST", "connguard/bans", {"ban": {"ip_address": f"198.51.100.{i}", "port_id": port["id"]}})

    api = actors.agent if "hosts" in path else admin
    counts = []
    for n in (2, 12):
        add(n)
        app.state.callers.clear()  # the channel remembers tokens briefly (server/authcache.py): count the lookup each time
        with _count_queries(app) as seen:
            api.ok("GET", path)
        counts.append(len(seen))
    assert counts[0] == counts[1], (path, counts)
    assert counts[1] <= 8, counts


def test_columns_are_the_public_fields():
    from connguard.db.models import AllowlistEntry, Ban, Event, Port, QosPolicy
    from connguard.db.services import hosts, policies, ports, security

    assert set(policies.COLUMNS) == set(policies.policy_public(QosPolicy(), []))
    assert set(ports.COLUMNS) == set(ports.port_public(Port(), None))
    assert set(security.BAN_COLUMNS) == set(security.ban_public(Ban()))
    assert set(security.ALLOW_COLUMNS) == set(security.allow_public(AllowlistEntry()))
    assert set(security.EVENT_COLUMNS) == set(security.event_public(Event()))
    assert set(hosts._agent_columns()) == set(hosts.agent_public(hosts.Agent()))
