"""``connguard apply`` against a real kernel in a namespace: a bad state file names the field,
exits non-zero and leaves the kernel exactly as it was; a rejected batch changes nothing."""

import subprocess

import pytest
import yaml
from click.testing import CliRunner

from connguard.cli.main import cli
from nsenforce import private_netns

pytestmark = pytest.mark.netns

GOOD = {
    "policies": [{"name": "web", "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20},
        {"type": "brute_force", "profile": "ssh"}]}],
    "ports": [{"interface_name": "tapweb1", "fixed_ips": ["10.0.0.5"], "policy": "web"}],
}


def with_rule(**change):
    rule = {**GOOD["policies"][0]["rules"][0], **change}
    return {**GOOD, "policies": [{"name": "web", "rules": [rule]}]}


BAD = [
    ("unknown field", with_rule(colour="red"), "policies[0].rules[0].colour: unknown field"),
    ("out of range", with_rule(max_cps=0), "policies[0].rules[0].max_cps"),
    ("bad CIDR", with_rule(remote_ip_prefix="10.0.0.0/33"), "policies[0].rules[0].remote_ip_prefix"),
    ("bad interface", {**GOOD, "ports": [{"interface_name": "tap;rm -rf", "policy": "web"}]},
     "ports[0].interface_name"),
    ("custom without ports", {**GOOD, "policies": [{"name": "web", "rules": [{"type": "brute_force", "profile": "custom"}]}]},
     "custom requires protocol and port_range_min"),
    ("duplicate rule", {**GOOD, "policies": [{"name": "web", "rules": [GOOD["policies"][0]["rules"][0]] * 2}]},
     "duplicates rules[0]"),
    # `$` accepted a trailing newline: apply said "1 protected port(s)" and protected nothing
    ("interface with trailing newline", {**GOOD, "ports": [{**GOOD["ports"][0], "interface_name": "tapweb1\n"}]},
     "ports[0].interface_name: 'tapweb1\\n' is not an interface name"),
    # 10,000 rules took 41.5 s to apply; more than 64 are refused before anything is compiled
    ("too many rules", {**GOOD, "policies": [{"name": "web", "rules": [
        {"type": "connection_rate_limit", "max_cps": 5, "remote_ip_prefix": f"10.{i // 256}.{i % 256}.0/24"}
        for i in range(1_000)]}]},
     "policies[0].rules: at most 64 rules per policy, got 1000"),
]


@pytest.fixture
def netns():
    yield from private_netns("cgtest")


def ruleset(netns) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "ruleset"],
                          capture_output=True, text=True, check=True).stdout


def run(args, tmp_path):
    return CliRunner().invoke(cli, args, env={"CONNGUARD_DATA_DIR": str(tmp_path)}, catch_exceptions=False)


@pytest.mark.parametrize("name,state,message", BAD, ids=[b[0] for b in BAD])
def test_bad_state_file_names_field_and_leaves_kernel_untouched(netns, tmp_path, name, state, message):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    assert run(["apply", str(good), "--netns", netns], tmp_path).exit_code == 0
    before = ruleset(netns)
    assert "tapweb1" in before
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(state))
    result = run(["apply", str(bad), "--netns", netns], tmp_path)
    assert result.exit_code == 1
    assert message in result.output
    assert ruleset(netns) == before


def test_missing_netns_is_a_clear_error(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    result = run(["apply", str(good), "--netns", "cg-no-such-ns"], tmp_path)
    assert result.exit_code == 1 and "does not exist" in result.output


def test_kernel_rejection_changes_nothing_and_names_the_rule(netns, tmp_path, nft_executor):
    """A batch the kernel refuses (here a rule jumping to a chain that does not exist, added to
    a valid ruleset that also adds a port) is atomic: nothing of it is applied."""
    from connguard.compiler import compile_host
    from connguard.compiler.ruleset import Rule
    from connguard.exceptions import ApplyError
    from connguard.model import parse_state
    from connguard.nft import Applier

    applier = Applier(nft_executor(netns))
    applier.apply(compile_host(parse_state(GOOD)))
    before = ruleset(netns)
    rs = compile_host(parse_state({**GOOD, "ports": GOOD["ports"] + [{"interface_name": "tapweb2", "policy": "web"}]}))
    # Inject a rule the kernel refuses (a jump to a chain that does not exist) into one chain.
    chain = next(c for c in rs.chains if c.name.startswith("in_"))
    broken = chain.__class__(chain.name, chain.rules + (Rule(({"jump": {"target": "nowhere"}},), "policy web rule 9 injected"),))
    rs = rs.__class__(**{**rs.__dict__, "chains": tuple(broken if c is chain else c for c in rs.chains)})
    with pytest.raises(ApplyError) as info:
        applier.apply(rs)
    assert "policy web rule 9 injected" in str(info.value)
    assert ruleset(netns) == before


def test_status_reports_ports_rules_and_bans(netns, tmp_path):
    import json

    state = {**GOOD, "bans": [{"ip_address": "203.0.113.9", "interface_name": "tapweb1", "seconds": 600},
                              {"ip_address": "198.51.100.0/24", "seconds": 60}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(state))
    assert run(["apply", str(path), "--netns", netns], tmp_path).exit_code == 0
    result = run(["status", "--netns", netns, "-f", "json"], tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["enforcing"] is True
    assert data["counters"] == {"banned": 0, "bans_placed": 0, "set_full": 0}
    [port] = data["ports"]
    assert port["interface_name"] == "tapweb1" and port["policy"] == "web"
    assert [h["rule"].split()[0] for h in port["hits"]] == ["connection_rate_limit", "brute_force"]
    bans = {(b["ip_address"], b["interface_name"]): b for b in data["bans"]}
    assert set(bans) == {("203.0.113.9", "tapweb1"), ("198.51.100.0/24", None)}
    assert 590 <= bans[("203.0.113.9", "tapweb1")]["expires_in"] <= 600
    table = run(["status", "--netns", netns], tmp_path)
    assert "tapweb1" in table.output and "198.51.100.0/24" in table.output


def test_status_without_table_says_so(netns, tmp_path):
    result = run(["status", "--netns", netns], tmp_path)
    # exit 3 since status became a health check (tests/functional/test_status_cli.py)
    assert result.exit_code == 3 and "enforces nothing" in result.output


def test_overlapping_state_bans_never_block_the_ruleset(netns, tmp_path, nft_executor):
    from connguard.compiler import compile_host
    from connguard.model import parse_state
    from connguard.nft import Applier, NftCli, observe

    applier = Applier(nft_executor(netns))
    # overlapping prefixes in one file are merged (the kernel refuses overlaps in one batch)
    first = {**GOOD, "bans": [{"ip_address": "10.1.0.0/16"}, {"ip_address": "10.1.2.0/24", "seconds": 60}]}
    applier.apply(compile_host(parse_state(first)))
    assert [b.ip_address for b in observe(NftCli(netns)).bans] == ["10.1.0.0/16"]
    # a ban overlapping one the kernel already holds: the ruleset change lands, the ban is reported
    second = {**GOOD, "ports": GOOD["ports"] + [{"interface_name": "tapweb2", "policy": "web"}],
              "bans": [{"ip_address": "10.0.0.0/8", "seconds": 60}]}
    result = applier.apply(compile_host(parse_state(second)))
    assert result.warnings and "10.0.0.0" in result.warnings[0], result
    assert "tapweb2" in ruleset(netns)
    assert [b.ip_address for b in observe(NftCli(netns)).bans] == ["10.1.0.0/16"]


def test_a_set_of_another_shape_is_replaced(netns, nft_executor):
    """An older layout left ban4 with another key type and a rule using it: a full sync
    replaces it instead of failing with EBUSY."""
    from connguard.compiler import compile_host
    from connguard.model import parse_state
    from connguard.nft import Applier

    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], check=True, text=True, input=(
        "table inet connguard {\n set ban4 { type ipv4_addr; }\n"
        " chain bans4 {\n  ip daddr @ban4 drop\n }\n chain old_chain {\n  ip saddr @ban4 drop\n }\n}\n"))
    Applier(nft_executor(netns)).apply(compile_host(parse_state(GOOD)))
    text = ruleset(netns)
    assert "type ifname . ipv4_addr" in text and "old_chain" not in text


def test_check_asks_the_kernel_and_changes_nothing(netns, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    before = ruleset(netns)
    result = run(["apply", str(good), "--netns", netns, "--check"], tmp_path)
    assert result.exit_code == 0 and "would accept" in result.output
    assert ruleset(netns) == before
