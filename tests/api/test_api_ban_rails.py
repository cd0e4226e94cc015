"""Rails on bans and the allowlist: manual bans expire by default, wide prefixes need force,
and ``ban delete`` / ``allow delete`` take addresses and go on past a failure."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime

from click.testing import CliRunner

from apitest import CLI, error_type

from connguard.cli.main import cli
from connguard.db.services.security import DEFAULT_MANUAL_BAN_SECONDS


def _seconds_left(ban: dict) -> float:
    return (datetime.fromisoformat(ban["expires_at"].replace("Z", "+00:00"))
            - datetime.fromisoformat(ban["created_at"].replace("Z", "+00:00"))).total_seconds()


def test_manual_ban_expires_by_default(actors):
    ban = actors.member_a.ok("POST", "connguard/bans", {"ban": {"ip_address": "198.51.100.7"}})["ban"]
    assert ban["expires_at"] is not None, ban
    assert abs(_seconds_left(ban) - DEFAULT_MANUAL_BAN_SECONDS) < 2, \
        f"a manual ban without seconds lasts {_seconds_left(ban)} s, not {DEFAULT_MANUAL_BAN_SECONDS}"
    assert DEFAULT_MANUAL_BAN_SECONDS == 14400
    ban = actors.member_a.ok("POST", "connguard/bans", {"ban": {"ip_address": "198.51.100.8", "seconds": 90}})["ban"]
    assert abs(_seconds_left(ban) - 90) < 2, _seconds_left(ban)


def test_wide_ban_prefixes_need_force(actors):
    a, admin = actors.member_a, actors.admin
    for prefix, text in [("0.0.0.0/0", "0.0.0.0/0 (every IPv4 address) is wider than /16"),
                         ("::/0", "::/0 (every IPv6 address) is wider than /32"),
                         ("10.0.0.0/8", "10.0.0.0/8 is wider than /16"), ("2001:db8::/31", "2001:db8::/31 is wider")]:
        status, data = a.post("connguard/bans", {"ban": {"ip_address": prefix}})
        assert status == 400 and error_type(data) == "PrefixTooWide", (prefix, status, data)
        message = data["NeutronError"]["message"]
        assert message.startswith(f"Invalid input for ip_address: {text}") and '"force": true' in message, message
    assert a.ok("GET", "connguard/bans")["bans"] == []
    # at the limit: taken; wider with force: taken
    assert a.ok("POST", "connguard/bans", {"ban": {"ip_address": "10.1.0.0/16"}})["ban"]["ip_address"] == "10.1.0.0/16"
    forced = admin.ok("POST", "connguard/bans", {"ban": {"ip_address": "0.0.0.0/0", "scope": "cloud",
                                                        "seconds": 60, "force": True}})["ban"]
    assert forced["ip_address"] == "0.0.0.0/0" and forced["scope"] == "cloud"
    status, data = a.post("connguard/bans", {"ban": {"ip_address": "10.0.0.0/8", "force": "yes"}})
    assert status == 400 and "Invalid input for force" in data["NeutronError"]["message"], data


def test_wide_cloud_allowlist_needs_force(actors):
    admin, a = actors.admin, actors.member_a
    status, data = admin.post("connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": "0.0.0.0/0",
                                                                          "project_id": None}})
    assert status == 400 and error_type(data) == "PrefixTooWide", data
    assert data["NeutronError"]["message"].startswith("Invalid input for remote_ip_prefix: 0.0.0.0/0")
    entry = admin.ok("POST", "connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": "::/0", "project_id": None,
                                                                         "force": True}})["allowlist_entry"]
    assert entry["project_id"] is None and entry["remote_ip_prefix"] == "::/0"
    # a project's own entry only exempts remotes from that project's punishment: no limit
    own = a.ok("POST", "connguard/allowlist", {"allowlist_entry": {"remote_ip_prefix": "10.0.0.0/8"}})
    assert own["allowlist_entry"]["remote_ip_prefix"] == "10.0.0.0/8"


def _run(env: dict, *args: str):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_delete_by_address_and_past_failures(server, db_url):
    admin = subprocess.run([*CLI, "token", "create", "--project", "admin", "--role", "admin", "--db", db_url],
                           capture_output=True, text=True, env=os.environ, timeout=60)
    assert admin.returncode == 0, admin.stderr
    env = {"CONNGUARD_URL": server, "CONNGUARD_TOKEN": admin.stdout.strip()}
    wide = _run(env, "ban", "add", "10.0.0.0/8")
    assert wide.exit_code == 1 and "10.0.0.0/8 is wider than /16" in wide.stderr, wide.stderr
    forced = _run(env, "ban", "add", "10.0.0.0/8", "--force", "-f", "json")
    assert forced.exit_code == 0, forced.stderr
    one = json.loads(_run(env, "ban", "add", "198.51.100.7", "-f", "json").stdout)
    assert one["ip_address"] == "198.51.100.7/32"
    assert _seconds_left(one) == 14400, one

    # by address (stored as /32), by prefix, and one that does not exist: two done, one reported
    r = _run(env, "ban", "delete", "198.51.100.7", "203.0.113.9", "10.0.0.0/8")
    assert r.exit_code == 1, (r.exit_code, r.stderr)
    assert "Error: 203.0.113.9: no ban of 203.0.113.9" in r.stderr, r.stderr
    assert r.stderr.strip().endswith("Error: failed to delete 1 of 3 bans"), r.stderr
    assert json.loads(_run(env, "ban", "list", "-f", "json").stdout) == []
    bad = _run(env, "ban", "delete", "not-an-address")
    assert bad.exit_code == 1 and "'not-an-address' is neither a ban id nor an address or prefix" in bad.stderr
    assert bad.stderr.strip().endswith("failed to delete 1 of 1 ban"), bad.stderr

    entry = json.loads(_run(env, "allow", "add", "192.0.2.0/24", "-f", "json").stdout)
    gone = _run(env, "allow", "delete", "192.0.2.0/24", "00000000-0000-0000-0000-000000000000")
    assert gone.exit_code == 1 and gone.stderr.strip().endswith("failed to delete 1 of 2 allowlist entries"), \
        gone.stderr
    assert json.loads(_run(env, "allow", "list", "-f", "json").stdout) == [], entry
    cloud = _run(env, "allow", "add", "0.0.0.0/0", "--cloud")
    assert cloud.exit_code == 1 and "0.0.0.0/0 (every IPv4 address) is wider than /16" in cloud.stderr, cloud.stderr
    assert _run(env, "allow", "add", "0.0.0.0/0", "--cloud", "--force").exit_code == 0


def test_the_widest_prefix_is_configurable(actors, db_url):
    from fastapi.testclient import TestClient

    from apitest import Api
    from connguard.db.services.security import WidestPrefix
    from connguard.server import create_app

    strict = create_app(db_url, run_migrations=False, widest_prefix=WidestPrefix(24, 48))
    try:
        a = Api(TestClient(strict), actors.member_a.token)
        status, data = a.post("connguard/bans", {"ban": {"ip_address": "10.1.16.0/20"}})
        assert status == 400 and data["NeutronError"]["message"].startswith(
            "Invalid input for ip_address: 10.1.16.0/20 is wider than /24"), data
        status, data = a.post("connguard/bans", {"ban": {"ip_address": "2001:db8::/40"}})
        assert status == 400 and "is wider than /48" in data["NeutronError"]["message"], data
        assert a.ok("POST", "connguard/bans", {"ban": {"ip_address": "10.1.16.0/24"}})["ban"]["ip_address"] == \
            "10.1.16.0/24"
    finally:
        strict.state.engine.dispose()
    # the default server takes the /20
    assert actors.member_a.ok("POST", "connguard/bans", {"ban": {"ip_address": "10.2.16.0/20"}})


def test_server_widest_prefix_option_is_checked():
    for bad in ("16", "33,32", "16,129", "a,b"):
        r = CliRunner().invoke(cli, ["server", "--widest-prefix", bad])
        assert r.exit_code == 2, (bad, r.output)
        assert f"{bad!r} is not V4,V6 prefix lengths (0-32,0-128), e.g. 16,32" in r.output, r.output
