"""The openstack client's conventions in the resource commands, against a live server: exact
output of each format for a known object, --long columns, --limit/--marker paging, names for
ids (and the ambiguous-name error), rule show/set/delete without --type, errors in CLI terms."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from connguard.cli.client import BAD_TOKEN, NO_TOKEN
from connguard.cli.main import cli


@pytest.fixture
def env(server, actors, tmp_path):
    # No config file of the user running the tests: only what the test says.
    return {"CONNGUARD_URL": server, "CONNGUARD_TOKEN": actors.member_a.token,
            "CONNGUARD_CONFIG": str(tmp_path / "absent.toml")}


class Cli:
    def __init__(self, env: dict[str, str]):
        self.env = env

    def run(self, *args: str, **env: str):
        return CliRunner().invoke(cli, list(args), env={**self.env, **env}, catch_exceptions=False,
                                  prog_name="connguard")

    def ok(self, *args: str, **env: str) -> str:
        r = self.run(*args, **env)
        assert r.exit_code == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def json(self, *args: str, **env: str):
        return json.loads(self.ok(*args, "-f", "json", **env))

    def fails(self, *args: str, **env: str) -> str:
        r = self.run(*args, **env)
        assert r.exit_code == 1, (args, r.exit_code, r.stdout, r.stderr)
        return r.stderr


def test_each_format_of_a_known_policy(env):
    c = Cli(env)
    policy = c.json("policy", "create", "web", "--description", "web tier", "--enforcement", "monitor")
    cols = ["-c", "name", "-c", "description", "-c", "enforcement", "-c", "shared", "-c", "revision_number"]
    rev = policy["revision_number"]
    assert c.ok("policy", "show", "web", *cols) == (
        "+-----------------+----------+\n"
        "| Field           | Value    |\n"
        "+-----------------+----------+\n"
        "| name            | web      |\n"
        "| description     | web tier |\n"
        "| enforcement     | monitor  |\n"
        "| shared          | False    |\n"
        f"| revision_number | {rev:<8} |\n"
        "+-----------------+----------+\n")
    assert c.ok("policy", "show", "web", *cols, "-f", "value") == f"web\nweb tier\nmonitor\nFalse\n{rev}\n"
    assert c.ok("policy", "show", "web", *cols, "-f", "csv") == (
        '"name","description","enforcement","shared","revision_number"\n'
        f'"web","web tier","monitor","False",{rev}\n')
    expected = {"name": "web", "description": "web tier", "enforcement": "monitor", "shared": False,
                "revision_number": rev}
    assert c.ok("policy", "show", "web", *cols, "-f", "json") == json.dumps(expected, indent=2) + "\n"
    assert c.ok("policy", "show", "web", *cols, "-f", "yaml") == (
        f"name: web\ndescription: web tier\nenforcement: monitor\nshared: false\nrevision_number: {rev}\n")
    # the same object as a one-row listing
    list_cols = ["-c", "name", "-c", "enforcement", "-c", "shared", "-c", "revision_number"]
    assert c.ok("policy", "list", *list_cols, "-f", "csv") == (
        f'"name","enforcement","shared","revision_number"\n"web","monitor","False",{rev}\n')
    assert c.ok("policy", "list", *list_cols) == (
        "+------+-------------+--------+-----------------+\n"
        "| name | enforcement | shared | revision_number |\n"
        "+------+-------------+--------+-----------------+\n"
        f"| web  | monitor     | False  | {rev:>15} |\n"
        "+------+-------------+--------+-----------------+\n")


def _header(table: str) -> list[str]:
    return [h.strip() for h in table.splitlines()[1].strip("|").split("|")]


def test_long_shows_each_rules_parameters(env):
    c = Cli(env)
    c.ok("policy", "create", "web")
    rate = c.json("rule", "create", "web", "--type", "connection-rate-limit", "--direction", "ingress",
                  "--scope", "remote-ip", "--max-cps", "20")
    syn = c.json("rule", "create", "web", "--type", "syn-flood", "--port-range-min", "80", "--max-syn-rate",
                 "500", "--no-synproxy")
    assert rate["scope"] == "remote_ip" and syn["synproxy"] is False
    short = c.ok("rule", "list", "web")
    assert _header(short) == ["id", "type", "direction", "qos_policy_id"], short
    long = c.ok("rule", "list", "web", "--long")
    assert _header(long) == ["id", "type", "direction", "qos_policy_id", "parameters"], long
    assert "max_cps=20, max_burst_cps=20, scope=remote_ip" in long, long
    rows = {r["id"]: r for r in c.json("rule", "list", "web", "--long")}
    assert rows[rate["id"]]["parameters"] == {"max_cps": 20, "max_burst_cps": 20, "scope": "remote_ip"}
    assert rows[syn["id"]]["parameters"] == {"port_range_min": 80, "port_range_max": 80, "max_syn_rate": 500,
                                             "synproxy": False, "mss": 1460, "wscale": 7}
    # other listings: --long adds its columns after the default ones
    assert _header(c.ok("policy", "list", "--long"))[-3:] == ["description", "tags", "rules"]
    c.ok("port", "create", "--name", "vm1", "--host", "h1", "--fixed-ip", "10.0.0.5")
    assert _header(c.ok("port", "list", "--long"))[-4:] == ["mac_address", "project_id", "status",
                                                            "revision_number"]
    assert "binding:host_id" in _header(c.ok("port", "list")) and "mac_address" not in c.ok("port", "list")


def _pages(c: Cli, *args: str, size: int = 2) -> list[list[str]]:
    pages, marker = [], []
    while True:
        ids = c.ok(*args, "--limit", str(size), *marker, "-f", "value", "-c", "id").split()
        if not ids:
            return pages
        pages.append(ids)
        marker = ["--marker", ids[-1]]
        assert len(pages) < 20, pages


def test_limit_and_marker_page_every_list(env, db_url):
    c = Cli(env)
    for i in range(5):
        c.ok("policy", "create", f"p{i}")
        c.ok("port", "create", "--name", f"vm{i}", "--host", "h1", "--fixed-ip", f"10.0.0.{i + 1}")
        c.ok("allow", "add", f"192.0.2.{i}/32")
        c.ok("rule", "create", "p0", "--type", "connection-limit", "--max-connections", "100",
             "--protocol", "tcp", "--port-range-min", str(1000 + i))
    c.ok("ban", "add", "198.51.100.1")
    c.ok("ban", "add", "198.51.100.2")
    c.ok("ban", "add", "198.51.100.3")
    for args in (["policy", "list"], ["port", "list"], ["allow", "list"], ["ban", "list"], ["event", "list"],
                 ["rule", "list", "p0"], ["rule", "list", "p0", "--type", "connection-limit"]):
        everything = c.ok(*args, "-f", "value", "-c", "id").split()
        pages = _pages(c, *args)
        flat = [i for p in pages for i in p]
        assert [len(p) for p in pages][:-1] == [2] * (len(pages) - 1) and len(pages[-1]) <= 2, (args, pages)
        assert sorted(flat) == sorted(everything) and len(set(flat)) == len(flat), \
            f"{' '.join(args)}: pages {pages} are not the {len(everything)} rows {everything}"
        assert len(everything) >= 3, (args, everything)
    bad = c.run("rule", "list", "p0", "--marker", "nope")
    assert bad.exit_code == 2 and "--marker nope: no such row" in bad.output, bad.output


def test_token_list_pages(env, actors, db_url):
    c = Cli({**env, "CONNGUARD_TOKEN": actors.admin.token})
    for args in (["token", "list"], ["token", "list", "--db", db_url]):
        everything = c.ok(*args, "-f", "value", "-c", "id").split()
        pages = _pages(c, *args)
        flat = [i for p in pages for i in p]
        assert len(everything) == 5 and sorted(flat) == sorted(everything) and len(set(flat)) == 5, (args, pages)


def test_names_stand_for_ids_and_ambiguous_names_are_refused(env, actors):
    c = Cli(env)
    web = c.json("policy", "create", "web")
    port = c.json("port", "create", "--name", "vm1", "--host", "h1", "--fixed-ip", "10.0.0.5",
                  "--qos-policy", "web")
    assert port["qos_policy_id"] == web["id"]
    assert c.json("port", "show", "vm1")["id"] == port["id"]
    ban = c.json("ban", "add", "198.51.100.7", "--port", "vm1")
    assert ban["port_id"] == port["id"]
    assert [b["id"] for b in c.json("ban", "list", "--port", "vm1")] == [ban["id"]]
    assert {e["port_id"] for e in c.json("event", "list", "--port", "vm1")} == {port["id"]}
    assert c.fails("port", "show", "vm9") == "Error: No port with a name or ID of 'vm9' exists.\n"
    assert c.fails("policy", "show", "nope") == "Error: No policy with a name or ID of 'nope' exists.\n"
    # An admin's shared policy of the same name is visible to project-a too: "web" is ambiguous.
    admin = Cli({**env, "CONNGUARD_TOKEN": actors.admin.token})
    admin.ok("policy", "create", "web", "--share")
    for args in (["policy", "show", "web"], ["rule", "list", "web"], ["policy", "set", "web", "--name", "w"],
                 ["port", "set", "vm1", "--qos-policy", "web"], ["policy", "delete", "web"]):
        assert c.fails(*args) == "Error: More than one policy exists with the name 'web'.\n", args
    assert c.json("policy", "show", web["id"])["name"] == "web", "an id is never ambiguous"
    c.ok("port", "create", "--name", "vm1", "--host", "h1", "--fixed-ip", "10.0.0.6")
    assert c.fails("port", "show", "vm1") == "Error: More than one port exists with the name 'vm1'.\n"


def test_rule_show_set_delete_without_type(env):
    c = Cli(env)
    c.ok("policy", "create", "web")
    rate = c.json("rule", "create", "web", "--type", "connection-rate-limit", "--max-cps", "20")
    bf = c.json("rule", "create", "web", "--type", "brute-force", "--profile", "ssh", "--max-attempts", "6",
                "--window", "60")
    shown = yaml.safe_load(c.ok("rule", "show", "web", bf["id"], "-f", "yaml"))
    assert shown["type"] == "brute_force" and shown["max_attempts"] == 6, shown
    assert c.json("rule", "set", "web", rate["id"], "--max-cps", "40")["max_cps"] == 40
    assert c.json("rule", "show", "web", rate["id"], "--type", "connection-rate-limit")["max_cps"] == 40
    c.ok("rule", "delete", "web", bf["id"])
    assert [r["id"] for r in c.json("rule", "list", "web")] == [rate["id"]]
    assert c.fails("rule", "show", "web", bf["id"]) == \
        f"Error: No rule with ID '{bf['id']}' exists in policy 'web'.\n"


def test_errors_in_cli_terms(env):
    c = Cli(env)
    missing = c.run("policy", "list", CONNGUARD_TOKEN="")
    assert missing.exit_code == 1 and missing.stderr == f"Error: {NO_TOKEN}\n", missing.stderr
    assert "set CONNGUARD_TOKEN or pass --token" in NO_TOKEN and "X-Auth-Token" not in missing.stderr
    refused = c.run("policy", "list", "--token", "cg_not_a_token")
    assert refused.exit_code == 1 and refused.stderr == f"Error: {BAD_TOKEN}\n", refused.stderr
    assert c.fails("ban", "add", "10.0.0.0/8") == \
        "Error: Invalid input for ip_address: 10.0.0.0/8 is wider than /16; a ban that wide needs --force\n"
    old = c.run("rule", "create", "nope", "--type", "connection-limit", "--scope", "remote_ip",
                "--max-connections", "5")
    assert old.stderr.startswith("warning: --scope remote_ip is deprecated; write --scope remote-ip\n"), old.stderr
