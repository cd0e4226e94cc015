"""The real ``openstack`` client (python-openstackclient) against a live server, with a token
and an explicit endpoint (``--os-auth-type admin_token``): no Keystone involved. What cannot
work without Keystone, or with connguard's own rule types, is listed in docs/api.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from connguard.db.services.tokens import create_token


@pytest.fixture
def openstack(server, app, tmp_path):
    exe = shutil.which("openstack")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("python-openstackclient (test extra) is not installed")
        pytest.skip("python-openstackclient not installed")
    with app.state.sessions() as s:
        token = create_token(s, project_id="demo", role="member")[0]
        s.commit()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_AUTH_TYPE="admin_token", OS_ENDPOINT=server, OS_TOKEN=token, HOME=str(tmp_path))

    def run(*args: str) -> object:
        r = subprocess.run([exe, *args, "-f", "json"], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return json.loads(r.stdout or "null")

    return run


def test_openstack_client_lists_and_creates_policies_and_rule_types(openstack):
    created = openstack("network", "qos", "policy", "create", "web", "--description", "from openstack")
    assert created["name"] == "web" and created["project_id"] == "demo"
    listed = openstack("network", "qos", "policy", "list")
    assert [p["Name"] for p in listed] == ["web"]
    types = openstack("network", "qos", "rule", "type", "list")
    assert sorted(t["Type"] for t in types) == ["brute_force", "connection_limit", "connection_rate_limit", "syn_flood"]
    detail = openstack("network", "qos", "rule", "type", "show", "syn_flood")
    names = [p["parameter_name"] for p in detail["drivers"][0]["supported_parameters"]]
    assert "max_syn_rate" in names
