"""The CLI drives a live server (uvicorn in a subprocess on a free loopback port)."""

from __future__ import annotations

import json
import os
import subprocess

import yaml
from click.testing import CliRunner

from apitest import CLI

from connguard.cli.main import cli


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI in this process (start-up of a Python per command would dominate the test);
    it still talks HTTP to the live server."""
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_cli_story(server, db_url):
    admin = run_process("token", "create", "--project", "admin", "--role", "admin", "--db", db_url)
    assert admin.returncode == 0, admin.stderr
    assert admin.stdout.strip().startswith("cg_") and len(admin.stdout.splitlines()) == 1
    env = {"CONNGUARD_URL": server, "CONNGUARD_TOKEN": admin.stdout.strip()}
    member = run("token", "create", "--project", "project-a", "--role", "member", env=env)
    assert member.returncode == 0, member.stderr
    env["CONNGUARD_TOKEN"] = member.stdout.strip()

    def ok(*args: str) -> str:
        r = run(*args, env=env)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    policy = json.loads(ok("policy", "create", "web", "--description", "web tier", "-f", "json"))
    assert policy["name"] == "web" and policy["project_id"] == "project-a"
    for args in (["--type", "connection-rate-limit", "--direction", "ingress", "--scope", "remote-ip", "--max-cps", "20"],
                 ["--type", "connection-limit", "--direction", "any", "--max-connections", "2000"],
                 ["--type", "syn-flood", "--port-range-min", "80", "--port-range-max", "443", "--max-syn-rate", "2000"],
                 ["--type", "brute-force", "--profile", "ssh", "--max-attempts", "6", "--window", "60"]):
        ok("rule", "create", "web", *args)
    rules = json.loads(ok("rule", "list", "web", "-f", "json", "-c", "type", "-c", "id"))
    assert sorted(r["type"] for r in rules) == ["brute_force", "connection_limit", "connection_rate_limit", "syn_flood"]
    rate = next(r for r in rules if r["type"] == "connection_rate_limit")
    shown = yaml.safe_load(ok("rule", "show", "web", rate["id"], "--type", "connection-rate-limit", "-f", "yaml"))
    assert shown["max_cps"] == 20 and shown["max_burst_cps"] == 20
    ok("rule", "set", "web", rate["id"], "--type", "connection-rate-limit", "--max-cps", "40")

    port = json.loads(ok("port", "create", "--name", "vm1", "--host", "host-1", "--fixed-ip", "10.0.0.5",
                         "--qos-policy", "web", "-f", "json"))
    assert port["qos_policy_id"] == policy["id"] == port["effective_qos_policy_id"]
    assert json.loads(ok("policy", "set", "web", "--default", "-f", "json"))["is_default"] is True

    table = ok("policy", "list")
    assert table.startswith("+") and "| web " in table and "is_default" in table
    assert json.loads(ok("policy", "list", "-f", "json"))[0]["name"] == "web"
    assert yaml.safe_load(ok("policy", "list", "-f", "yaml"))[0]["is_default"] is True
    assert ok("policy", "list", "-f", "value", "-c", "name", "-c", "is_default") == "web True\n"
    assert ok("port", "list", "-f", "value", "-c", "interface_name") == f"tap{port['id'][:11]}\n"
    assert "connection_rate_limit" in ok("rule-type", "list", "-f", "value").split()
    assert "max_syn_rate" in ok("rule-type", "show", "syn-flood", "-f", "json")

    # Errors: the server's message on one line, exit 1; usage errors exit 2.
    bad = run_process("rule", "create", "web", "--type", "connection-rate-limit", "--max-cps", "0", env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: Invalid input for max_cps")
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    in_use = run("policy", "delete", "web", env=env)
    assert in_use.returncode == 1 and "used by port" in in_use.stderr
    assert run("policy", "show", "nope", env=env).returncode == 1
    assert run("rule", "create", "web", "--type", "bandwidth", env=env).returncode == 2
    assert run("policy", "list", "-f", "xml", env=env).returncode == 2
    assert run("policy", "list", "-c", "nope", env=env).returncode == 2
    stale = run("policy", "set", "web", "--name", "w2", "--if-revision", "1", env=env)
    assert stale.returncode == 1 and "revision_number" in stale.stderr
    unauth = run("policy", "list", env={**env, "CONNGUARD_TOKEN": "cg_nope"})
    assert unauth.returncode == 1 and "token" in unauth.stderr
    down = run("policy", "list", "--url", "http://127.0.0.1:1", env=env)
    assert down.returncode == 1 and "cannot reach" in down.stderr

    ban = json.loads(ok("ban", "add", "198.51.100.7", "--port", port["id"], "--seconds", "60", "-f", "json"))
    assert [b["id"] for b in json.loads(ok("ban", "list", "-f", "json"))] == [ban["id"]]
    ok("ban", "delete", ban["id"])
    entry = json.loads(ok("allow", "add", "192.0.2.0/24", "--description", "office", "-f", "json"))
    assert "192.0.2.0/24" in ok("allow", "list")
    ok("allow", "delete", entry["id"])
    # (policy, rule, port and allowlist changes are audited events too, so filtered by type)
    assert {e["event_type"] for e in json.loads(ok("event", "list", "--type", "ban", "-f", "json"))} == {"ban"}
    assert {e["event_type"] for e in json.loads(ok("event", "list", "-f", "json"))} >= {
        "ban", "unban", "allowlist_created", "allowlist_deleted"}

    json.loads(ok("port", "unset", port["id"], "--qos-policy", "-f", "json"))
    ok("policy", "delete", "web")
    assert json.loads(ok("policy", "list", "-f", "json")) == []
    env["CONNGUARD_TOKEN"] = admin.stdout.strip()
    assert json.loads(ok("agent", "list", "-f", "json")) == []  # no agent has reported yet
    tokens = json.loads(ok("token", "list", "-f", "json"))
    assert {t["role"] for t in tokens} == {"admin", "member"}
    member_id = next(t["id"] for t in tokens if t["role"] == "member")
    ok("token", "revoke", member_id)
    assert len(json.loads(ok("token", "list", "--db", db_url, "-f", "json"))) == 1
