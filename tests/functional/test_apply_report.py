"""What ``connguard apply`` tells, against a real kernel in a namespace: what changed (or
"unchanged"), warnings as sentences, a namespace-wide sysctl stated once when it changes, the
ruleset in nft's own syntax; and ``status`` shows the warnings."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from connguard.cli.main import cli
from nsenforce import private_netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

STATE = {
    "policies": [{"name": "web", "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20},
        {"type": "syn_flood", "port_range_min": 80, "port_range_max": 80, "max_syn_rate": 100}]}],
    "ports": [{"interface_name": "tapweb1", "fixed_ips": ["10.0.0.5"], "policy": "web"}],
}
LOOSE = "net.netfilter.nf_conntrack_tcp_loose"


@pytest.fixture
def netns():
    yield from private_netns("cgap")


def apply(tmp_path, state: dict, *args: str):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(state))
    r = CliRunner().invoke(cli, ["apply", str(path), *args], env={"CONNGUARD_DATA_DIR": str(tmp_path)},
                           catch_exceptions=False)
    return r


def lines(output: str, head: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith(head)]


def in_ns(netns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=True).stdout


def test_apply_says_what_changed_and_states_the_sysctl_once(netns, tmp_path):
    # an interface that exists for one port, not for the other
    subprocess.run(["ip", "-n", netns, "link", "add", "tapweb1", "type", "veth", "peer", "name", "vmweb1"], check=True)
    assert in_ns(netns, "sysctl", "-n", LOOSE).strip() == "1"
    first = apply(tmp_path, STATE, "--netns", netns)
    assert first.exit_code == 0, first.output
    assert lines(first.output, "changed:") == ["changed: ports: 1 added (tapweb1)", "changed: policies: 1 added (web)"]
    notes = lines(first.output, "note:")
    assert notes == [f"note: set {LOOSE} = 0 in netns {netns} (was 1): synproxy needs a handshake's ACK to reach it "
                     "as 'invalid'; with 0, conntrack in the whole namespace no longer adopts TCP connections it "
                     "did not see start (e.g. after a conntrack flush)"], first.output
    assert lines(first.output, "warning:") == []  # tapweb1 exists

    again = apply(tmp_path, STATE, "--netns", netns)
    assert again.exit_code == 0, again.output
    assert lines(again.output, "unchanged:") == ["unchanged: the same ports, policies, rules and bans as the last apply here"]
    assert lines(again.output, "changed:") == [] and lines(again.output, "note:") == [], again.output

    more = {**STATE, "ports": STATE["ports"] + [{"interface_name": "tapweb2", "policy": "web"}],
            "policies": [{"name": "web", "rules": [{**STATE["policies"][0]["rules"][0], "max_cps": 40},
                                                   STATE["policies"][0]["rules"][1]]}]}
    third = apply(tmp_path, more, "--netns", netns)
    assert third.exit_code == 0, third.output
    assert lines(third.output, "changed:") == ["changed: ports: 1 added (tapweb2)",
                                               "changed: policies: 1 changed (web: rules 1 changed (rules[0]))"]
    warning = (f"warning: ports[1]: there is no interface tapweb2 in netns {netns} yet; its rules are in place "
               "and protect it as soon as it appears")
    assert lines(third.output, "warning:") == [warning], third.output
    # status checks the interfaces when it runs: tapweb2 is missing, then appears
    live = (f"warning: port tapweb2: there is no interface tapweb2 in netns {netns} yet; its rules are in place "
            "and protect it as soon as it appears")
    status = CliRunner().invoke(cli, ["status", "--netns", netns], env={"CONNGUARD_DATA_DIR": str(tmp_path)})
    assert lines(status.output, "warning:") == [live], status.output
    subprocess.run(["ip", "-n", netns, "link", "add", "tapweb2", "type", "veth", "peer", "name", "vmweb2"], check=True)
    data = json.loads(CliRunner().invoke(cli, ["status", "--netns", netns, "-f", "json"],
                                         env={"CONNGUARD_DATA_DIR": str(tmp_path)}).output)
    assert data["warnings"] == [] and data["agent"]["warnings"] == [], data


def test_refused_state_ban_is_a_sentence(netns, tmp_path):
    first = {**STATE, "bans": [{"ip_address": "10.1.0.0/16", "seconds": 600}]}
    assert apply(tmp_path, first, "--netns", netns).exit_code == 0
    # a ban overlapping one the kernel already holds: the ruleset lands, the ban is reported
    second = {**STATE, "bans": [{"ip_address": "10.0.0.0/8", "seconds": 60}]}
    r = apply(tmp_path, second, "--netns", netns)
    assert r.exit_code == 0, r.output
    assert lines(r.output, "changed:") == ["changed: bans: 1 added (10.0.0.0/8); 1 taken out of the file "
                                           "(10.1.0.0/16; in the kernel until it expires)"], r.output
    assert [w for w in lines(r.output, "warning:") if "ban" in w] == [
        "warning: the host-wide ban of 10.0.0.0/8 (60 s) was not added: it overlaps a ban already in the kernel"], \
        r.output


def test_dry_run_in_nft_syntax_is_what_the_kernel_then_holds(netns, tmp_path):
    dry = apply(tmp_path, STATE, "--dry-run", "--format", "nft")
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("table inet connguard {"), dry.output[:200]
    assert apply(tmp_path, STATE, "--netns", netns).exit_code == 0
    assert dry.output == in_ns(netns, "nft", "list", "table", "inet", "connguard")
    as_json = apply(tmp_path, STATE, "--dry-run")
    assert json.loads(as_json.output)["nftables"][0] == {"add": {"table": {"family": "inet", "name": "connguard"}}}
