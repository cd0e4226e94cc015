"""State files that would leave ports silently unprotected (or refuse everyone) are errors
naming the field, in the file's terms; and what an apply changed, in the same terms."""

import pytest

from connguard.cli.changes import describe, summary
from connguard.exceptions import ValidationFailed
from connguard.model import parse_state
from connguard.model.state import load_state_text

TYPES = "connection_rate_limit, connection_limit, syn_flood, brute_force"
WEB = "policies: [{name: web, rules: [{type: connection_limit, max_connections: 10}]}]\n"


def errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as info:
        load_state_text(text, source="s.yaml")
    return info.value.errors


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n", "{}\n"])
def test_an_empty_file_is_an_error(text):
    assert errors(text) == [("s.yaml", "the file is empty: applying it would protect nothing "
                                       "(write 'ports: []' to mean that)")]


def test_an_explicitly_empty_state_is_taken():
    assert load_state_text("ports: []\n").ports == ()


def test_a_port_with_no_policy_and_no_default():
    assert errors(WEB + "ports: [{interface_name: tap1}, {interface_name: tap2, policy: web}]\n") == [
        ("ports[0].policy", "tap1 has no policy and there is no default_policy: it would be unprotected")]
    assert load_state_text(WEB + "default_policy: web\nports: [{interface_name: tap1}]\n").ports[0].policy is None


@pytest.mark.parametrize("prefix,version", [("0.0.0.0/0", 4), ("::/0", 6)])
def test_a_ban_of_everyone(prefix, version):
    text = WEB + f"ports: [{{interface_name: tap1, policy: web}}]\nbans: [{{ip_address: '{prefix}'}}]\n"
    assert errors(text) == [("bans[0].ip_address", f"{prefix} would ban every IPv{version} address")]
    # a server snapshot may carry one (an admin's forced cloud ban): the model itself allows it
    assert parse_state({"bans": [{"ip_address": prefix}]}).bans[0].ip_address == prefix


def test_a_duplicate_key_is_refused_with_its_line():
    [(where, reason)] = errors("policies: []\nports: []\nports: []\n")
    assert where == "s.yaml:3:1" and reason == "not valid YAML: duplicate key 'ports' (first at line 2)"


def test_rule_type_errors_speak_the_files_terms():
    text = ("policies:\n  - name: web\n    rules:\n      - {direction: ingress, max_cps: 5}\n"
            "      - {type: nope}\nports: [{interface_name: tap1, policy: web}]\n")
    assert errors(text) == [("policies[0].rules[0]", f"missing 'type' (one of {TYPES})"),
                            ("policies[0].rules[1]", f"type 'nope' is not one of {TYPES}")]


def test_changes_in_the_files_terms():
    one = load_state_text(WEB + "ports: [{interface_name: tap1, policy: web}]\n")
    assert describe(None, summary(one)) == ["ports: 1 added (tap1)", "policies: 1 added (web)"]
    assert describe(summary(one), summary(one)) == ["unchanged"]
    two = load_state_text(
        "policies: [{name: web, enforcement: monitor, rules: [{type: connection_limit, max_connections: 20},"
        " {type: brute_force, profile: ssh}]}, {name: db}]\n"
        "ports: [{interface_name: tap2, policy: web}, {interface_name: tap1, policy: db}]\n")
    assert describe(summary(one), summary(two)) == [
        "ports: 1 added (tap2); 1 changed (tap1: web -> db)",
        "policies: 1 added (db); 1 changed (web: enforcement enforce -> monitor, rules 1 added, "
        "1 changed (rules[0]))"]
    banned = load_state_text(WEB + "ports: [{interface_name: tap1, policy: web}]\n"
                             "bans: [{ip_address: 192.0.2.1, interface_name: tap1}, {ip_address: 10.0.0.0/16}]\n")
    assert describe(summary(one), summary(banned)) == ["bans: 2 added (10.0.0.0/16, 192.0.2.1/32 on tap1)"]
    assert describe(summary(banned), summary(one)) == [
        "bans: 2 taken out of the file (10.0.0.0/16, 192.0.2.1/32 on tap1; in the kernel until it expires)"]
    assert describe(summary(two), summary(one)) == [
        "ports: 1 changed (tap1: db -> web); 1 removed (tap2)",
        "policies: 1 changed (web: enforcement monitor -> enforce, rules 1 changed (rules[0]), 1 removed); "
        "1 removed (db)"]
