"""QoS policies: envelopes, validation, If-Match, defaults, in-use, collection queries."""

from __future__ import annotations

from apitest import PROJECT_A, error_type


def test_version_document_and_health(actors):
    r = actors.admin.client.get("/")
    assert r.status_code == 200
    assert r.json()["versions"][0]["id"] == "v2.0"
    assert r.json()["versions"][0]["status"] == "CURRENT"
    assert actors.admin.client.get("/healthz").json() == {"status": "ok", "wakeups": "polling"}  # no lifespan: no listener
    assert "/v2.0/qos/policies" in actors.admin.client.get("/openapi.json").json()["paths"]


def test_policy_crud_and_envelopes(actors):
    api = actors.member_a
    created = api.ok("POST", "qos/policies", {"policy": {"name": "web", "description": "d", "tags": ["x"]}})["policy"]
    assert created["project_id"] == created["tenant_id"] == PROJECT_A
    assert created["enforcement"] == "enforce" and created["rules"] == [] and created["revision_number"] == 1
    pid = created["id"]
    shown = api.ok("GET", f"qos/policies/{pid}")["policy"]
    assert shown == created
    updated = api.ok("PUT", f"qos/policies/{pid}", {"policy": {"enforcement": "monitor"}})["policy"]
    assert updated["enforcement"] == "monitor" and updated["revision_number"] == 2 and updated["name"] == "web"
    assert [p["id"] for p in api.ok("GET", "qos/policies")["policies"]] == [pid]
    api.ok("DELETE", f"qos/policies/{pid}")
    status, data = api.get(f"qos/policies/{pid}")
    assert status == 404 and error_type(data) == "QosPolicyNotFound"


def test_validation_names_field_and_changes_nothing(actors):
    api = actors.member_a
    cases = [
        ({"policy": {"name": ""}}, "name"),
        ({"policy": {"name": "x", "enforcement": "maybe"}}, "enforcement"),
        ({"policy": {"name": "x", "colour": "red"}}, "colour"),
        ({"policy": {"name": "x", "description": "d" * 2000}}, "description"),
        ({"policy": {"name": 5}}, "name"),
        ({"policies": {"name": "x"}}, "policy"),
        ({"policy": "x"}, "policy"),
    ]
    for body, field in cases:
        status, data = api.post("qos/policies", body)
        assert status == 400, (body, data)
        assert error_type(data) == "HTTPBadRequest"
        assert field in data["NeutronError"]["message"], (body, data)
    assert api.ok("GET", "qos/policies")["policies"] == []


def test_bad_json_and_oversized_body(actors):
    client = actors.member_a.client
    headers = {"X-Auth-Token": actors.member_a.token, "Content-Type": "application/json"}
    r = client.post("/v2.0/qos/policies", content=b"{not json", headers=headers)
    assert r.status_code == 400 and error_type(r.json()) == "HTTPBadRequest"
    big = b'{"policy": {"name": "x", "description": "' + b"a" * 100_000 + b'"}}'
    r = client.post("/v2.0/qos/policies", content=big, headers=headers)
    assert r.status_code == 413 and "larger" in r.json()["NeutronError"]["message"]
    assert actors.member_a.ok("GET", "qos/policies")["policies"] == []


def test_if_match(actors):
    api = actors.member_a
    pid = api.ok("POST", "qos/policies", {"policy": {"name": "p"}})["policy"]["id"]
    status, data = api.put(f"qos/policies/{pid}", {"policy": {"name": "q"}}, If_Match="revision_number=7")
    assert status == 412 and error_type(data) == "PreconditionFailed"
    status, data = api.put(f"qos/policies/{pid}", {"policy": {"name": "q"}}, If_Match="revision_number=1")
    assert status == 200 and data["policy"]["revision_number"] == 2
    status, data = api.put(f"qos/policies/{pid}", {"policy": {"name": "q"}}, If_Match="garbage")
    assert status == 400
    status, data = api.delete(f"qos/policies/{pid}", If_Match="revision_number=1")
    assert status == 412
    assert api.ok("GET", f"qos/policies/{pid}")["policy"]["name"] == "q"


def test_one_default_per_project_and_cloud_default_admin_only(actors):
    a = actors.member_a
    a.ok("POST", "qos/policies", {"policy": {"name": "d1", "is_default": True}})
    status, data = a.post("qos/policies", {"policy": {"name": "d2", "is_default": True}})
    assert status == 409 and error_type(data) == "QosPolicyDefaultExists"
    other = a.ok("POST", "qos/policies", {"policy": {"name": "d3"}})["policy"]
    status, data = a.put(f"qos/policies/{other['id']}", {"policy": {"is_default": True}})
    assert status == 409 and error_type(data) == "QosPolicyDefaultExists"
    # Another project has its own default.
    actors.member_b.ok("POST", "qos/policies", {"policy": {"name": "b", "is_default": True}})
    # Sharing (and so the cloud default) is admin-only.
    status, data = a.post("qos/policies", {"policy": {"name": "s", "shared": True}})
    assert status == 403 and error_type(data) == "NotAuthorized"
    actors.admin.ok("POST", "qos/policies", {"policy": {"name": "cloud", "shared": True, "is_default": True}})
    status, _ = actors.admin.post("qos/policies", {"policy": {"name": "cloud2", "shared": True, "is_default": True,
                                                               "project_id": "elsewhere"}})
    assert status == 409
    assert len(a.ok("GET", "qos/policies")["policies"]) == 3  # d1, d3 and the shared one


def test_policy_in_use_cannot_be_deleted(actors):
    a = actors.member_a
    pid = a.ok("POST", "qos/policies", {"policy": {"name": "p"}})["policy"]["id"]
    port = a.ok("POST", "ports", {"port": {"qos_policy_id": pid}})["port"]
    status, data = a.delete(f"qos/policies/{pid}")
    assert status == 409 and error_type(data) == "QosPolicyInUse"
    a.ok("PUT", f"ports/{port['id']}", {"port": {"qos_policy_id": None}})
    a.ok("DELETE", f"qos/policies/{pid}")


def test_filters_fields_sorting_pagination(actors):
    a = actors.member_a
    ids = [a.ok("POST", "qos/policies", {"policy": {"name": f"p{i}", "enforcement": "monitor" if i % 2 else "enforce"}})
           ["policy"]["id"] for i in range(5)]
    assert [p["name"] for p in a.ok("GET", "qos/policies?enforcement=monitor")["policies"]] == ["p1", "p3"]
    assert [p["name"] for p in a.ok("GET", "qos/policies?name=p0&name=p4")["policies"]] == ["p0", "p4"]
    assert a.ok("GET", "qos/policies?shared=false&name=p2")["policies"][0]["id"] == ids[2]
    assert a.ok("GET", "qos/policies?fields=id&fields=name&name=p0")["policies"] == [{"id": ids[0], "name": "p0"}]
    names = [p["name"] for p in a.ok("GET", "qos/policies?sort_key=name&sort_dir=desc")["policies"]]
    assert names == ["p4", "p3", "p2", "p1", "p0"]
    page = a.ok("GET", "qos/policies?sort_key=name&sort_dir=asc&limit=2")
    assert [p["name"] for p in page["policies"]] == ["p0", "p1"]
    nxt = [link for link in page["policies_links"] if link["rel"] == "next"][0]["href"]
    page2 = a.client.get(nxt, headers={"X-Auth-Token": a.token}).json()
    assert [p["name"] for p in page2["policies"]] == ["p2", "p3"]
    for bad in ("colour=red", "sort_key=colour", "sort_dir=up", "limit=x", "marker=nope"):
        status, data = a.get(f"qos/policies?{bad}")
        assert status == 400 and error_type(data) == "HTTPBadRequest", bad
