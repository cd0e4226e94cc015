"""Project isolation matrix: another project's object answers 404 for every verb and stays
unchanged; readers cannot write; agent tokens cannot use the user API; no token, 401."""

from __future__ import annotations

import pytest
from apitest import error_type

from connguard.model.rules import RULE_TYPES
from test_api_rules import EXAMPLES


@pytest.fixture
def world(actors):
    """Project A's objects, one of each kind."""
    a = actors.member_a
    policy = a.ok("POST", "qos/policies", {"policy": {"name": "a"}})["policy"]
    rules = {t: a.ok("POST", f"qos/policies/{policy['id']}/{t}_rules", {f"{t}_rule": EXAMPLES[t]})[f"{t}_rule"]
             for t in RULE_TYPES}
    port = a.ok("POST", "ports", {"port": {"name": "a", "binding:host_id": "host-1", "qos_policy_id": policy["id"]}})["port"]
    ban = a.ok("POST", "connguard/bans", {"ban": {"ip_address": "198.51.100.7", "port_id": port["id"]}})["ban"]
    allow = a.ok("POST", "connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": "192.0.2.0/24"}})["allowlist_entry"]
    event = a.ok("GET", "connguard/events")["events"][0]
    return {"policy": policy, "rules": rules, "port": port, "ban": ban, "allow": allow, "event": event}


def _requests(w):
    pid = w["policy"]["id"]
    out = [
        ("GET", f"qos/policies/{pid}", None),
        ("PUT", f"qos/policies/{pid}", {"policy": {"name": "stolen"}}),
        ("DELETE", f"qos/policies/{pid}", None),
        ("GET", f"ports/{w['port']['id']}", None),
        ("PUT", f"ports/{w['port']['id']}", {"port": {"name": "stolen"}}),
        ("DELETE", f"ports/{w['port']['id']}", None),
        ("GET", f"connguard/bans/{w['ban']['id']}", None),
        ("DELETE", f"connguard/bans/{w['ban']['id']}", None),
        ("GET", f"connguard/allowlist/{w['allow']['id']}", None),
        ("DELETE", f"connguard/allowlist/{w['allow']['id']}", None),
        ("GET", f"connguard/events/{w['event']['id']}", None),
        ("POST", "connguard/bans", {"ban": {"ip_address": "203.0.113.1", "port_id": w["port"]["id"]}}),
        ("POST", "ports", {"port": {"name": "b", "qos_policy_id": pid}}),  # attach A's policy
    ]
    for t, rule in w["rules"].items():
        base = f"qos/policies/{pid}/{t}_rules"
        out += [("GET", base, None), ("POST", base, {f"{t}_rule": EXAMPLES[t]}),
                ("GET", f"{base}/{rule['id']}", None), ("PUT", f"{base}/{rule['id']}", {f"{t}_rule": {}}),
                ("DELETE", f"{base}/{rule['id']}", None)]
    return out


def _snapshot(actors):
    admin = actors.admin
    return [admin.ok("GET", p) for p in ("qos/policies", "ports", "connguard/bans", "connguard/allowlist")]


def test_other_project_gets_404_and_nothing_changes(actors, world):
    before = _snapshot(actors)
    for method, path, body in _requests(world):
        status, data = actors.member_b.call(method, path, body)
        assert status == 404, (method, path, status, data)
        assert error_type(data).endswith("NotFound")
    assert _snapshot(actors) == before
    b = actors.member_b
    for coll in ("qos/policies", "ports", "connguard/bans", "connguard/allowlist", "connguard/events"):
        assert b.ok("GET", coll)[coll.split("/")[-1]] == [], coll


def test_reader_cannot_write(actors, world):
    before = _snapshot(actors)
    writes = [r for r in _requests(world) if r[0] != "GET"] + [
        ("POST", "qos/policies", {"policy": {"name": "r"}}),
        ("POST", "ports", {"port": {"name": "r"}}),
        ("POST", "connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": "10.0.0.0/8"}}),
    ]
    for method, path, body in writes:
        status, data = actors.reader_a.call(method, path, body)
        assert status == 403 and error_type(data) == "NotAuthorized", (method, path, data)
    assert _snapshot(actors) == before
    # ...but reads its project.
    assert actors.reader_a.ok("GET", f"qos/policies/{world['policy']['id']}")["policy"]["name"] == "a"


def test_agent_token_cannot_use_user_api(actors, world):
    for method, path, body in _requests(world) + [("GET", "qos/policies", None), ("GET", "agents", None)]:
        status, data = actors.agent.call(method, path, body)
        assert status == 403 and error_type(data) == "NotAuthorized", (method, path)


def test_no_or_bad_token_is_401(actors):
    for api in (actors.anonymous, type(actors.anonymous)(actors.anonymous.client, "cg_wrong")):
        status, data = api.get("qos/policies")
        assert status == 401 and error_type(data) == "NotAuthenticated"


def test_cloud_wide_objects_are_admin_only(actors, world):
    a = actors.member_a
    status, data = a.post("connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": "10.0.0.0/8", "project_id": None}})
    assert status == 403
    status, _ = a.post("connguard/bans", {"ban": {"ip_address": "10.0.0.1", "scope": "cloud"}})
    assert status == 403
    entry = actors.admin.ok("POST", "connguard/allowlist",
                            {"allowlist_entry": {"remote_ip_prefix": "10.0.0.0/8", "project_id": None,
                                                 "force": True}})["allowlist_entry"]  # wider than /16
    assert entry["project_id"] is None
    # Visible to every project, changeable by none.
    assert entry["id"] in [e["id"] for e in actors.member_b.ok("GET", "connguard/allowlist")["allowlist"]]
    status, _ = actors.member_b.delete(f"connguard/allowlist/{entry['id']}")
    assert status == 403
    cloud_ban = actors.admin.ok("POST", "connguard/bans", {"ban": {"ip_address": "10.9.0.0/16", "scope": "cloud"}})["ban"]
    assert cloud_ban["project_id"] is None and cloud_ban["scope"] == "cloud"
    status, _ = a.delete(f"connguard/bans/{cloud_ban['id']}")
    assert status == 403
    # Admin sees and changes everything.
    actors.admin.ok("PUT", f"qos/policies/{world['policy']['id']}", {"policy": {"description": "by admin"}})
    # Only admins mint tokens and list agents.
    assert a.post("connguard/tokens", {"token": {"project_id": "x", "role": "admin"}})[0] == 403
    assert a.get("agents")[0] == 403
