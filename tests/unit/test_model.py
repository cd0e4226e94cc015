"""Model: defaults, ranges and errors that name the field."""

import pytest
import yaml

from connguard.exceptions import ValidationFailed
from connguard.model import (PROFILES, BruteForceRule, ConnectionLimitRule, ConnectionRateLimitRule,
                             SynFloodRule, load_state_file, parse_state)


def test_burst_defaults_to_rate():
    assert ConnectionRateLimitRule(max_cps=40).max_burst_cps == 40
    assert ConnectionRateLimitRule(max_cps=40, max_burst_cps=80).max_burst_cps == 80


def test_api_defaults():
    r = ConnectionRateLimitRule(max_cps=1)
    assert (r.direction, r.scope) == ("egress", "port")
    assert ConnectionLimitRule(max_connections=5).direction == "any"
    s = SynFloodRule(port_range_min=80, max_syn_rate=100)
    assert (s.port_range_max, s.synproxy, s.mss, s.wscale) == (80, True, 1460, 7)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_defaults_fill_rule(name):
    extra = {"protocol": "tcp", "port_range_min": 9999} if name == "custom" else {}
    r = BruteForceRule(profile=name, **extra)
    p = PROFILES[name]
    assert (r.max_attempts, r.window, r.ban_seconds) == (p.max_attempts, p.window, p.ban_seconds)
    assert r.services(), "every profile names a service"


def test_rule_overrides_profile_port():
    r = BruteForceRule(profile="ssh", port_range_min=2222)
    assert [(s.protocol, s.port_min, s.port_max) for s in r.services()] == [("tcp", 2222, 2222)]


def test_ban_escalation_is_capped():
    r = BruteForceRule(profile="ssh", ban_seconds=600, ban_multiplier=3, max_ban_seconds=4000)
    assert [r.ban_for(n) for n in (1, 2, 3, 4)] == [600, 1800, 4000, 4000]


BAD = [
    ({"policies": [{"name": "p", "rules": [{"type": "connection_rate_limit", "max_cps": 5, "colour": 1}]}]},
     "policies[0].rules[0].colour", "unknown field"),
    ({"policies": [{"name": "p", "rules": [{"type": "connection_rate_limit", "max_cps": 0}]}]},
     "policies[0].rules[0].max_cps", "greater than or equal to 1"),
    ({"policies": [{"name": "p", "rules": [{"type": "connection_limit", "max_connections": 10,
                                             "remote_ip_prefix": "10.0.0.300/8"}]}]},
     "policies[0].rules[0].remote_ip_prefix", "not an IPv4 or IPv6"),
    ({"ports": [{"interface_name": "tap with space"}]}, "ports[0].interface_name", "1-15 characters"),
    ({"ports": [{"interface_name": "averyveryverylongname"}]}, "ports[0].interface_name", "1-15 characters"),
    ({"policies": [{"name": "p", "rules": [{"type": "brute_force", "profile": "custom"}]}]},
     "policies[0].rules[0]", "custom requires protocol and port_range_min"),
    ({"policies": [{"name": "p", "rules": [{"type": "connection_rate_limit", "max_cps": 5},
                                            {"type": "connection_rate_limit", "max_cps": 9}]}]},
     "policies[0]", "duplicates rules[0]"),
    ({"policies": [{"name": "p", "rules": [{"type": "syn_flood", "port_range_min": 90, "port_range_max": 80,
                                            "max_syn_rate": 10}]}]},
     "policies[0].rules[0]", "port_range_min must be <= port_range_max"),
    ({"policies": [{"name": "p", "rules": [{"type": "connection_rate_limit", "max_cps": 5, "port_range_min": 80}]}]},
     "policies[0].rules[0]", "require protocol"),
    ({"ports": [{"interface_name": "tap1", "policy": "nope"}]}, "ports[0].policy", "no policy named 'nope'"),
    ({"default_policy": "nope"}, "default_policy", "no policy named"),
    ({"ports": [{"interface_name": "tap1", "fixed_ips": ["10.0.0.1"]},
                {"interface_name": "tap2", "fixed_ips": ["10.0.0.1"]}]}, "ports[1].fixed_ips", "already on ports[0]"),
    ({"allowlist": [{"remote_ip_prefix": "10.1.2.3/16"}]}, "allowlist[0].remote_ip_prefix", "host bits"),
    ({"bans": [{"ip_address": "10.0.0.0/8", "interface_name": "tap1"}], "ports": [{"interface_name": "tap1"}]},
     "bans[0]", "one address"),
    ({"policies": [{"name": "p", "enforcement": "maybe"}]}, "policies[0].enforcement", "'enforce' or 'monitor'"),
    # `$` matches before a trailing newline: "tapvm0\n" passed and protected nothing (issue 8, 9a)
    ({"ports": [{"interface_name": "tapvm0\n"}]}, "ports[0].interface_name", "'tapvm0\\n' is not an interface name"),
    ({"ports": [{"interface_name": "\ntapvm0"}]}, "ports[0].interface_name", "not an interface name"),
    ({"ports": [{"interface_name": "tapvm0"}], "bans": [{"ip_address": "10.0.0.1", "interface_name": "tapvm0\n"}]},
     "bans[0].interface_name", "not an interface name"),
    ({"policies": [{"name": "p", "rules": [{"type": "connection_rate_limit", "max_cps": i + 1, "remote_ip_prefix": f"10.0.{i}.0/24"}
                                            for i in range(65)]}]},
     "policies[0].rules", "at most 64 rules per policy, got 65"),
]


@pytest.mark.parametrize("state,field,reason", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_state_names_field(state, field, reason):
    with pytest.raises(ValidationFailed) as info:
        parse_state(state)
    assert any(f == field and reason in r for f, r in info.value.errors), info.value.errors


def test_state_file_errors(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("policies: [\n")
    with pytest.raises(ValidationFailed, match="not valid YAML"):
        load_state_file(p)
    with pytest.raises(ValidationFailed, match="cannot read"):
        load_state_file(tmp_path / "missing.yaml")


def test_rules_per_policy_up_to_the_bound_are_accepted():
    from connguard.model.objects import MAX_RULES_PER_POLICY

    rules = [{"type": "connection_rate_limit", "max_cps": 5, "remote_ip_prefix": f"10.0.{i}.0/24"}
             for i in range(MAX_RULES_PER_POLICY)]
    assert len(parse_state({"policies": [{"name": "p", "rules": rules}]}).policies[0].rules) == MAX_RULES_PER_POLICY


def test_ten_thousand_rules_are_refused_before_validating_them():
    """The bound is checked before the rules themselves: refusing is quick, whatever the size."""
    import time

    rules = [{"type": "connection_rate_limit", "max_cps": 5, "remote_ip_prefix": f"10.{i // 256}.{i % 256}.0/24"}
             for i in range(10_000)]
    started = time.perf_counter()
    with pytest.raises(ValidationFailed) as info:
        parse_state({"policies": [{"name": "p", "rules": rules}]})
    took = time.perf_counter() - started
    assert info.value.errors == [("policies[0].rules", "at most 64 rules per policy, got 10000")], info.value.errors
    assert took < 0.5, f"refusing 10,000 rules took {took:.2f} s"


@pytest.mark.parametrize("text,where,key", [
    ("ports: []\npolicies: []\nports: [{interface_name: tap1}]\n", ":3:1", "'ports' (first at line 1)"),
    ("ports:\n  - interface_name: tap1\n    policy: web\n    policy: other\n", ":4:5", "'policy' (first at line 3)"),
])
def test_a_key_given_twice_is_refused_with_its_line(tmp_path, text, where, key):
    """YAML keeps the last of two equal keys: a second ``ports:`` would silently drop the ports
    of the first one while the file looks complete."""
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(ValidationFailed) as info:
        load_state_file(p)
    [(field, reason)] = info.value.errors
    assert field == f"{p}{where}" and reason == f"not valid YAML: duplicate key {key}", info.value.errors


def test_merge_keys_may_override_what_they_merge(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("ports:\n  - &t {interface_name: tap1, policy: web}\n  - {<<: *t, interface_name: tap2}\n"
                 "policies: [{name: web}]\n")
    assert [(x.interface_name, x.policy) for x in load_state_file(p).ports] == [("tap1", "web"), ("tap2", "web")]


def test_the_c_parser_is_used_when_pyyaml_has_libyaml(tmp_path):
    from connguard.model.state import _StateLoader

    if not yaml.__with_libyaml__:
        pytest.skip("this PyYAML is built without libyaml: the pure-Python parser is the fallback")
    assert issubclass(_StateLoader, yaml.CSafeLoader)
    p = tmp_path / "s.yaml"
    p.write_text("policies:\n  - name: p\n    rules: [\n")
    with pytest.raises(ValidationFailed) as info:
        load_state_file(p)
    [(field, reason)] = info.value.errors
    assert field == f"{p}:4:1" and reason.startswith("not valid YAML"), info.value.errors


def test_a_file_that_is_not_utf8_is_an_error_not_a_crash(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_bytes(b"ports: [{interface_name: tap\xff}]\n")
    with pytest.raises(ValidationFailed, match="not UTF-8"):
        load_state_file(p)


def test_example_state_file_is_valid():
    state = load_state_file("examples/state.yaml")
    assert {p.name for p in state.policies} == {"web", "watch"}
    assert state.ports[0].fixed_ips == ("10.0.0.5", "fd00::5")


def test_api_style_fixed_ips():
    st = parse_state(yaml.safe_load("ports: [{interface_name: t1, fixed_ips: [{ip_address: 10.0.0.1}, 'fd00::1']}]"))
    assert st.ports[0].fixed_ips == ("10.0.0.1", "fd00::1")


@pytest.mark.parametrize("value", ["10.0.0.1", "255.255.255.255", "fd00::5", "::ffff:1.2.3.4", "FD00:0:0::5"])
def test_addresses_are_normalised_like_ipaddress(value):
    import ipaddress

    from connguard.model.common import _check_address
    assert _check_address(value) == str(ipaddress.ip_address(value))


@pytest.mark.parametrize("value", ["010.0.0.1", "1.2.3", "1.2.3.4 ", "256.0.0.1", "fd00::5::1", ""])
def test_bad_addresses_are_refused(value):
    from connguard.model.common import _check_address
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        _check_address(value)


@pytest.mark.parametrize("state,field,reason", [
    ({"ports": [{"interface_name": "tap1", "fixed_ips": ["fe80::1%eth0"]}]}, "ports[0].fixed_ips[0]", "scope id"),
    ({"allowlist": [{"remote_ip_prefix": "fe80::1%x y}"}]}, "allowlist[0].remote_ip_prefix", "scope id"),
    ({"policies": [{"name": "a\x00b"}]}, "policies[0].name", "control characters"),
    ({"policies": [{"name": "p", "rules": [{"type": "brute_force", "profile": "ssh", "protocol": "udp"}]}]},
     "policies[0].rules[0].protocol", "a udp source address is a claim anyone can make"),
])
def test_more_bad_input_found_in_review(state, field, reason):
    with pytest.raises(ValidationFailed) as info:
        parse_state(state)
    assert any(f == field and reason in r for f, r in info.value.errors), info.value.errors


def test_escalation_never_overflows():
    r = BruteForceRule(profile="ssh", ban_seconds=60, ban_multiplier=100, max_ban_seconds=60)
    assert r.ban_for(10_000) == 60
    r = BruteForceRule(profile="ssh", ban_seconds=60, ban_multiplier=2, max_ban_seconds=86400)
    assert r.ban_for(5000) == 86400


@pytest.mark.parametrize("profile,extra", [
    ("custom", {"port_range_min": 5060}),
    ("sip", {}),
    ("sip", {"port_range_min": 5060}),
    ("ssh", {}),
])
def test_brute_force_over_udp_is_refused_naming_the_field_and_why(profile, extra):
    """A UDP "attempt" can be sent with anyone's source address: a ban it triggered could be
    aimed at a legitimate peer (docs/dataplane.md, "Brute force")."""
    rule = {"type": "brute_force", "profile": profile, "protocol": "udp", **extra}
    with pytest.raises(ValidationFailed) as info:
        parse_state({"policies": [{"name": "p", "rules": [rule]}]})
    [(field, reason)] = info.value.errors
    assert field == "policies[0].rules[0].protocol", info.value.errors
    assert "a udp source address is a claim anyone can make" in reason and "connection_rate_limit" in reason, reason


def test_brute_force_over_sctp_is_refused_and_udp_rate_limits_stay_allowed():
    with pytest.raises(ValidationFailed) as info:
        parse_state({"policies": [{"name": "p", "rules": [
            {"type": "brute_force", "profile": "custom", "protocol": "sctp", "port_range_min": 22}]}]})
    assert [f for f, _ in info.value.errors] == ["policies[0].rules[0].protocol"], info.value.errors
    assert "tcp logins only" in info.value.errors[0][1]
    state = parse_state({"policies": [{"name": "p", "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "protocol": "udp", "port_range_min": 5060,
         "scope": "remote_ip", "max_cps": 20},
        {"type": "brute_force", "profile": "sip", "protocol": "tcp"}]}]})
    assert [s.protocol for s in state.policies[0].rules[1].services()] == ["tcp"]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_service_is_tcp(name):
    assert all(s.protocol == "tcp" for s in PROFILES[name].services), PROFILES[name].services
