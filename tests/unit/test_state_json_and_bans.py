"""A state file written as JSON goes through the JSON parser and means what the same YAML means
(a key given twice is still refused); state-file bans collapse as the kernel can hold them (the
widest of nested host prefixes with the longest lifetime, one element per port ban); the IPv4
fast paths of the ban validators refuse what the slow ones refuse."""

from __future__ import annotations

import json

import pytest
import yaml

from connguard.compiler.dispatch import ban_key, collapse_bans
from connguard.exceptions import ValidationFailed
from connguard.model.objects import Ban
from connguard.model.state import load_state_text

DOC = {"policies": [{"name": "p", "rules": [{"type": "brute_force", "profile": "ssh"}]}],
       "ports": [{"interface_name": "tap0", "policy": "p", "fixed_ips": ["10.0.0.5"]}],
       "bans": [{"ip_address": "192.0.2.1", "interface_name": "tap0", "seconds": 60},
                {"ip_address": "198.51.100.0/24"}, {"ip_address": "2001:db8::7", "interface_name": "tap0"}]}


def test_json_and_yaml_state_files_mean_the_same():
    assert load_state_text(json.dumps(DOC)) == load_state_text(yaml.safe_dump(DOC))


def test_a_key_given_twice_in_json_is_refused():
    text = '{"ports": [], "policies": [], "ports": [{"interface_name": "tap0"}]}'
    with pytest.raises(ValidationFailed, match="duplicate key 'ports'"):
        load_state_text(text)


def test_collapse_keeps_the_widest_prefix_and_the_longest_lifetime():
    bans = (Ban(ip_address="10.0.0.0/8", seconds=5), Ban(ip_address="10.1.0.0/16", seconds=900),
            Ban(ip_address="10.1.2.3"), Ban(ip_address="11.0.0.1", seconds=7),
            Ban(ip_address="192.0.2.9", interface_name="tap0", seconds=3),
            Ban(ip_address="192.0.2.9", interface_name="tap0", seconds=30),
            Ban(ip_address="2001:db8:1::1", interface_name="tap0", seconds=4),
            Ban(ip_address="2001:db8::/32"), Ban(ip_address="2001:db8:5::/48", seconds=1))
    got = dict(collapse_bans(bans))
    assert got == {("tap0", "192.0.2.9"): 30, ("tap0", "2001:db8:1::"): 4,
                   (None, "10.0.0.0/8"): None, (None, "11.0.0.1"): 7, (None, "2001:db8::/32"): None}, got


def test_ban_key_fast_path_spells_as_the_kernel_does():
    assert ban_key(Ban(ip_address="192.0.2.9", interface_name="tap0")) == ("tap0", "192.0.2.9")
    assert ban_key(Ban(ip_address="192.0.2.9")) == (None, "192.0.2.9")
    assert ban_key(Ban(ip_address="192.0.2.0/24")) == (None, "192.0.2.0/24")
    assert ban_key(Ban(ip_address="2001:db8:0:1:2:3:4:5", interface_name="tap0")) == ("tap0", "2001:db8:0:1::")


@pytest.mark.parametrize("ip", ["2001:db8::/32", "10.0.0.0/24", "01.2.3.4", "1.2.3.4/33", "1.2.3"])
def test_port_bans_the_fast_path_must_refuse(ip):
    with pytest.raises(ValueError):
        Ban(ip_address=ip, interface_name="tap0")
