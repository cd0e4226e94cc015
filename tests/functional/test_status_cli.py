"""``connguard status`` as a health check, against a real agent process in a namespace: the
error in force stays shown, a dead agent is told from a running one, --port filters, times are
ISO 8601, and the exit status is non-zero when nothing is enforced or the agent is dead."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from connguard.cli.main import cli
from nsenforce import private_netns, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
STATE = {
    "policies": [{"name": "web", "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20}]},
        {"name": "db", "rules": [{"type": "connection_limit", "direction": "any", "max_connections": 50}]}],
    "ports": [{"interface_name": "tapweb1", "fixed_ips": ["10.0.0.5"], "policy": "web"},
              {"interface_name": "tapdb1", "fixed_ips": ["10.0.0.6"], "policy": "db"}],
    "bans": [{"ip_address": "203.0.113.9", "interface_name": "tapweb1", "seconds": 600},
             {"ip_address": "203.0.113.10", "interface_name": "tapdb1", "seconds": 600},
             {"ip_address": "198.51.100.0/24", "seconds": 300}],
}


@pytest.fixture
def netns():
    yield from private_netns("cgst")


def status(tmp_path, *args: str):
    return CliRunner().invoke(cli, ["status", *args], env={"CONNGUARD_DATA_DIR": str(tmp_path)},
                              catch_exceptions=False)


def test_nothing_enforced_exits_3(netns, tmp_path):
    r = status(tmp_path, "--netns", netns)
    assert r.exit_code == 3, (r.exit_code, r.output)
    assert f"connguard enforces nothing in netns {netns} (no table inet connguard)" in r.output
    assert status(tmp_path, "--netns", netns, "-f", "json").exit_code == 3


def test_port_filter_and_iso_times_after_apply(netns, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(STATE))
    applied = CliRunner().invoke(cli, ["apply", str(path), "--netns", netns], env={"CONNGUARD_DATA_DIR": str(tmp_path)})
    assert applied.exit_code == 0, applied.output
    r = status(tmp_path, "--netns", netns, "--port", "tapweb1", "-f", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert [p["interface_name"] for p in data["ports"]] == ["tapweb1"], data["ports"]
    assert sorted((b["ip_address"], b["interface_name"]) for b in data["bans"]) == \
        [("198.51.100.0/24", None), ("203.0.113.9", "tapweb1")], data["bans"]
    assert data["agent"]["pid"] is None and data["agent"]["running"] is None
    assert ISO.match(data["agent"]["updated_at"]), data["agent"]["updated_at"]
    for b in data["bans"]:
        assert ISO.match(b["expires_at"]), b
    table = status(tmp_path, "--netns", netns, "--port", "tapdb1")
    assert table.exit_code == 0
    shown = table.output.split("\nPORTS", 1)[1]
    assert "tapdb1" in shown and "tapweb1" not in shown, table.output
    assert re.search(r"203\.0\.113\.10 +tapdb1 +until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in \d+m\d\ds\)", table.output), \
        table.output
    assert re.search(r"^connguard apply: state .*, applied/checked \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", table.output, re.M)
    bad = status(tmp_path, "--netns", netns, "--port", "tapnope")
    assert bad.exit_code == 1 and "--port tapnope: not a protected port here (ports: tapdb1, tapweb1)" in bad.output


def test_agent_error_stays_and_a_dead_agent_fails_the_check(netns, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(STATE))
    env = {**os.environ, "CONNGUARD_DATA_DIR": str(tmp_path)}
    agent = subprocess.Popen([*CLI, "agent", "--state-file", str(path), "--netns", netns, "--interval", "0.2"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status_file = tmp_path / "agent" / netns / "status.json"
    try:
        wait_for(lambda: status_file.exists() and json.loads(status_file.read_text()).get("pid") == agent.pid, 20,
                 what="the agent's status file")
        r = status(tmp_path, "--netns", netns)
        assert r.exit_code == 0, r.output
        assert f"agent pid {agent.pid} (running)" in r.output, r.output

        # a bad edit, written by rename: rejected, the last good state stays enforced, and the
        # error stays shown pass after pass (it used to be cleared by the next good apply)
        bad = {**STATE, "ports": [{**STATE["ports"][0], "interface_name": "bad name"}]}
        tmp = tmp_path / "s.yaml.new"
        tmp.write_text(yaml.safe_dump(bad))
        os.replace(tmp, path)
        expected = "state file rejected, still enforcing the last good state"
        wait_for(lambda: expected in (json.loads(status_file.read_text()).get("last_error") or ""), 15,
                 what="the rejection in the status file")
        time.sleep(1.0)  # five more passes, each applying the last good state successfully
        data = json.loads(status(tmp_path, "--netns", netns, "-f", "json").output)
        assert data["agent"]["last_error"] and data["agent"]["last_error"].startswith(expected), data["agent"]
        assert "ports[0].interface_name" in data["agent"]["last_error"], data["agent"]["last_error"]
        assert [p["interface_name"] for p in data["ports"]] == ["tapdb1", "tapweb1"]
        table = status(tmp_path, "--netns", netns)
        assert f"  last error: {expected}" in table.output, table.output

        # a good file clears it
        tmp.write_text(yaml.safe_dump(STATE))
        os.replace(tmp, path)
        wait_for(lambda: json.loads(status_file.read_text()).get("last_error") is None, 15, what="the error to clear")

        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        r = status(tmp_path, "--netns", netns)
        assert r.exit_code == 4, (r.exit_code, r.output)
        assert f"agent pid {agent.pid} (NOT RUNNING)" in r.output, r.output
        assert "the agent is not running: what it applied is still enforced" in r.output
        data = json.loads(status(tmp_path, "--netns", netns, "-f", "json").output)
        assert data["agent"]["running"] is False and data["enforcing"] is True
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
