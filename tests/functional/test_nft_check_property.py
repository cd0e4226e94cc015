"""Property: every rendering of a random valid host state is accepted by the kernel
(``nft --check`` in a private namespace), both as a full load and as a delta from another
random state that is really applied first.

Half of the states are adversarial (issue 8): allowlist entries nested in each other and in
the rules' ``remote_ip_prefix``, synproxy ranges overlapping each other and the brute-force
services, many ports on few policies, IPv4-only, IPv6-only and address-less ports, monitor
policies beside enforcing ones, and policies with the maximum number of rules. A last test
fills every dynamic set before a delta and a resync: the kernel must still accept both, and
no element of a set that stays may be lost."""

import os
import subprocess

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from connguard.compiler import compile_host
from connguard.model import parse_state
from connguard.model.objects import MAX_RULES_PER_POLICY
from connguard.nft import Applier, NftCli
from nsenforce import private_netns

pytestmark = pytest.mark.netns

ports_ = st.integers(1, 65535)
rate = st.integers(1, 1_000_000)


@st.composite
def match_fields(draw, *, allow_ports=True):
    out = {}
    fam = draw(st.sampled_from([None, "IPv4", "IPv6"]))
    if fam:
        out["ethertype"] = fam
    proto = draw(st.sampled_from([None, "tcp", "udp", "sctp"]))
    if proto:
        out["protocol"] = proto
        if allow_ports and draw(st.booleans()):
            lo = draw(ports_)
            out["port_range_min"], out["port_range_max"] = lo, draw(st.integers(lo, 65535))
    if draw(st.booleans()):
        v6 = fam == "IPv6" or (fam is None and draw(st.booleans()))
        out["remote_ip_prefix"] = draw(st.sampled_from(
            ["2001:db8::/32", "fd00:1:2::/48", "::1/128"] if v6 else ["192.0.2.0/24", "10.0.0.0/8", "198.51.100.7/32"]))
    return out


@st.composite
def rule(draw):
    kind = draw(st.sampled_from(["connection_rate_limit", "connection_limit", "syn_flood", "brute_force"]))
    if kind == "connection_rate_limit":
        r = {"direction": draw(st.sampled_from(["ingress", "egress"])), "max_cps": draw(rate),
             "scope": draw(st.sampled_from(["port", "remote_ip"])), **draw(match_fields())}
        r["max_burst_cps"] = draw(st.integers(r["max_cps"], 1_000_000))
    elif kind == "connection_limit":
        r = {"direction": draw(st.sampled_from(["ingress", "egress", "any"])),
             "max_connections": draw(st.integers(1, 10_000_000)),
             "scope": draw(st.sampled_from(["port", "remote_ip"])), **draw(match_fields())}
    elif kind == "syn_flood":
        lo = draw(ports_)
        r = {"port_range_min": lo, "port_range_max": draw(st.integers(lo, 65535)), "max_syn_rate": draw(rate),
             "synproxy": draw(st.booleans()), "mss": draw(st.integers(536, 65495)), "wscale": draw(st.integers(0, 14))}
    else:
        profile = draw(st.sampled_from(["ssh", "rdp", "sip", "imap", "custom", "vnc"]))
        r = {"profile": profile, "direction": draw(st.sampled_from(["ingress", "egress"])),
             "max_attempts": draw(st.integers(1, 100_000)), "window": draw(st.integers(1, 86_400)),
             "ban_seconds": draw(st.integers(1, 3600)), "ban_multiplier": draw(st.floats(1, 100)),
             "max_ban_seconds": 86_400, **draw(match_fields())}
        if r.get("protocol") in ("udp", "sctp"):  # refused by the model: brute force is TCP only
            r["protocol"] = "tcp"
        if profile == "custom":
            r["protocol"] = "tcp"
            r["port_range_min"] = r["port_range_max"] = draw(ports_)
    return {"type": kind, **r}


def unique_rules(rules):
    seen, out = set(), []
    for r in rules:
        try:
            key = parse_state({"policies": [{"name": "k", "rules": [r]}]}).policies[0].rules[0].key()
        except Exception:
            continue
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


@st.composite
def host_state(draw):
    npol = draw(st.integers(1, 3))
    policies = [{"name": f"pol-{i} ünïcode", "enforcement": draw(st.sampled_from(["enforce", "monitor"])),
                 "rules": unique_rules(draw(st.lists(rule(), max_size=6)))} for i in range(npol)]
    nports = draw(st.integers(0, 6))
    ports = [{"interface_name": f"tap{i}x", "fixed_ips": [f"10.9.0.{i + 1}", f"fd09::{i + 1}"][: draw(st.integers(0, 2))],
              "policy": draw(st.sampled_from([None] + [p["name"] for p in policies]))} for i in range(nports)]
    allow = draw(st.lists(st.sampled_from(["192.0.2.0/24", "192.0.2.128/25", "2001:db8::/48", "10.0.0.0/8"]),
                          max_size=3, unique=True))
    bans = [{"ip_address": "203.0.113.5", "seconds": 60}] if draw(st.booleans()) else []
    if ports and draw(st.booleans()):
        bans.append({"ip_address": "2001:db8:1:2::/64", "interface_name": ports[0]["interface_name"]})
    return parse_state({"policies": policies, "ports": ports, "allowlist": [{"remote_ip_prefix": a} for a in allow],
                        "default_policy": draw(st.sampled_from([None, policies[0]["name"]])), "bans": bans})


# Prefixes nested in each other (and the same pool for allowlist, rules and bans), and service
# ranges overlapping each other and the brute-force profiles' ports (22, 3389, 5900-5906).
NESTED4 = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "192.0.2.0/24", "192.0.2.128/25"]
NESTED6 = ["2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64", "2001:db8:1:2::5/128", "fd00::/8"]
RANGES = [(22, 22), (1, 1024), (20, 25), (80, 443), (443, 443), (3389, 3389), (5900, 5906), (1, 65535)]


@st.composite
def adversarial_rule(draw):
    kind = draw(st.sampled_from(["connection_rate_limit", "connection_limit", "syn_flood", "brute_force"]))
    lo, hi = draw(st.sampled_from(RANGES))
    match = {}
    if draw(st.booleans()):
        match = {"protocol": "tcp", "port_range_min": lo, "port_range_max": hi}
    if draw(st.booleans()):
        match["remote_ip_prefix"] = draw(st.sampled_from(NESTED4 + NESTED6))
    if kind == "syn_flood":
        return {"type": kind, "port_range_min": lo, "port_range_max": hi, "max_syn_rate": draw(rate),
                "synproxy": draw(st.booleans()), **({"ethertype": e} if (e := draw(st.sampled_from([None, "IPv4", "IPv6"]))) else {})}
    if kind == "brute_force":
        profile = draw(st.sampled_from(["ssh", "rdp", "vnc", "custom"]))
        if profile == "custom":
            match.update(protocol="tcp", port_range_min=lo, port_range_max=hi)
        return {"type": kind, "profile": profile, "direction": draw(st.sampled_from(["ingress", "egress"])),
                "max_attempts": draw(st.integers(1, 20)), **match}
    if kind == "connection_rate_limit":
        return {"type": kind, "direction": draw(st.sampled_from(["ingress", "egress"])), "max_cps": draw(rate),
                "scope": draw(st.sampled_from(["port", "remote_ip"])), **match}
    return {"type": kind, "direction": draw(st.sampled_from(["ingress", "egress", "any"])),
            "max_connections": draw(st.integers(1, 10_000_000)), "scope": draw(st.sampled_from(["port", "remote_ip"])),
            **match}


def full_policy_rules(seed: int) -> list[dict]:
    """MAX_RULES_PER_POLICY distinct rules of every type (distinct service ports)."""
    out = []
    for i in range(MAX_RULES_PER_POLICY):
        port = 1000 + seed * 100 + i
        out.append([
            {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20,
             "protocol": "tcp", "port_range_min": port},
            {"type": "connection_limit", "direction": "any", "max_connections": 50, "protocol": "udp", "port_range_min": port},
            {"type": "syn_flood", "port_range_min": port, "max_syn_rate": 500, "synproxy": i % 8 == 2},
            {"type": "brute_force", "profile": "custom", "protocol": "tcp", "port_range_min": port},
        ][i % 4])
    return out


@st.composite
def adversarial_state(draw):
    npol = draw(st.integers(1, 4))
    policies = []
    for i in range(npol):
        full = i == 0 and draw(st.integers(0, 3)) == 0
        rules = full_policy_rules(draw(st.integers(0, 5))) if full else unique_rules(draw(st.lists(adversarial_rule(), max_size=8)))
        policies.append({"name": f"adv-{i}", "enforcement": draw(st.sampled_from(["enforce", "monitor"])), "rules": rules})
    nports = draw(st.integers(0, 12))
    # IPv4-only, IPv6-only, dual-stack and address-less ports, most of them on one or two policies
    families = draw(st.lists(st.sampled_from(["4", "6", "46", ""]), min_size=nports, max_size=nports))
    ports = [{"interface_name": f"tapa{i}", "fixed_ips": ([f"10.8.0.{i + 1}"] if "4" in fam else [])
              + ([f"fd08::{i + 1}"] if "6" in fam else []),
              "policy": draw(st.sampled_from([None, policies[0]["name"], policies[-1]["name"]]))}
             for i, fam in enumerate(families)]
    allow = draw(st.lists(st.sampled_from(NESTED4 + NESTED6), max_size=6, unique=True))
    bans = [{"ip_address": p, "seconds": 60} for p in draw(st.lists(st.sampled_from(NESTED4 + NESTED6), max_size=3, unique=True))]
    if ports and draw(st.booleans()):
        bans.append({"ip_address": "10.1.2.3", "interface_name": ports[-1]["interface_name"]})
    return parse_state({"policies": policies, "ports": ports, "allowlist": [{"remote_ip_prefix": a} for a in allow],
                        "default_policy": draw(st.sampled_from([None, policies[-1]["name"]])), "bans": bans})


states = st.one_of(adversarial_state(), host_state())


def note(state) -> None:
    """What kind of state this is (``pytest --hypothesis-show-statistics`` counts them)."""
    if any(len(p.rules) == MAX_RULES_PER_POLICY for p in state.policies):
        event("a policy with the maximum number of rules")
    if any(p.name.startswith("adv-") for p in state.policies):
        event("adversarial")
    if len({p.enforcement for p in state.policies}) == 2:
        event("monitor and enforce policies together")
    if len(state.allowlist) > 1:
        event("several allowlist entries")


@pytest.fixture(scope="module")
def netns():
    yield from private_netns("cgprop")


# CI runs a fixed (derandomized) set of examples so that a run is repeatable; explore more with
# CONNGUARD_PROPERTY_EXAMPLES=1000 CONNGUARD_PROPERTY_RANDOM=1. 36 examples (half adversarial)
# and the 4 full-set examples below take the time the 60 plain examples took before.
@settings(max_examples=int(os.environ.get("CONNGUARD_PROPERTY_EXAMPLES", "32")), deadline=None,
          derandomize=not os.environ.get("CONNGUARD_PROPERTY_RANDOM"), suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(first=states, second=states)
def test_kernel_accepts_every_rendering(netns, first, second):
    note(first)
    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)
    ex = NftCli(netns)
    # a full load of `first`, checked then applied for real
    Applier(ex).apply(compile_host(first), check=True)
    applier = Applier(ex)
    applier.apply(compile_host(first))
    # a delta to `second`, checked by the kernel, then applied
    applier.apply(compile_host(second), check=True)
    applier.apply(compile_host(second))
    # and a full resync of `second` over what is there (an agent restart)
    Applier(ex).apply(compile_host(second))


FILL = 24  # elements per dynamic set: the sets are declared this small so that they can be filled


def small_sets(ruleset):
    """The ruleset with every long-lived (dynamic) set declared FILL elements large: the same
    batches as in production but for that number, so a test can fill every set to the brim."""
    import dataclasses

    sets = tuple(dataclasses.replace(s, size=FILL) if s.long_lived else s for s in ruleset.sets)
    return dataclasses.replace(ruleset, sets=sets)


def _fill_key(typ: tuple[str, ...], i: int) -> str:
    parts = {"ifname": f'"zfill{i}"', "ipv4_addr": f"100.64.{i // 250}.{i % 250 + 1}",
             "ipv6_addr": f"3fff:1::{i + 1:x}", "inet_service": str(1 + i)}
    return " . ".join(parts[t] for t in typ)


def _listed(netns) -> dict[str, list]:
    import json

    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "connguard"],
                         capture_output=True, text=True, check=True).stdout
    return {i["set"]["name"]: i["set"].get("elem", []) or [] for i in json.loads(out)["nftables"] if "set" in i}


def fill_dynamic_sets(netns, ruleset) -> dict[str, int]:
    """Fill every long-lived set to its size with elements of its own type (one nft bulk add);
    return how many fill elements each holds as the kernel lists it."""
    have = _listed(netns)
    lines = []
    for s in ruleset.sets:
        if s.long_lived:
            assert not s.map, f"map {s.name}: a long-lived map needs fill values"
            room = FILL - len(have.get(s.name, []))  # state-file bans are already in
            lines.append(f"add element inet connguard {s.name} {{ "
                         + ", ".join(_fill_key(s.type, i) for i in range(room)) + " }")
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input="\n".join(lines) + "\n", text=True,
                   check=True, capture_output=True)
    return dynamic_counts(netns, ruleset)


def dynamic_counts(netns, ruleset) -> dict[str, tuple[int, int]]:
    """(fill elements, all elements) of each long-lived set of ``ruleset``."""
    import json

    names = {s.name for s in ruleset.sets if s.long_lived}
    out = {}
    for name, elems in _listed(netns).items():
        if name in names:
            text = [json.dumps(e) for e in elems]
            out[name] = (sum(1 for t in text if "zfill" in t or "100.64." in t or "3fff:1::" in t), len(elems))
    return out


@settings(max_examples=int(os.environ.get("CONNGUARD_PROPERTY_FULL_EXAMPLES", "4")), deadline=None,
          derandomize=not os.environ.get("CONNGUARD_PROPERTY_RANDOM"), suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(first=adversarial_state(), second=adversarial_state())
def test_full_dynamic_sets_block_neither_a_delta_nor_a_resync(netns, first, second):
    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)
    ex = NftCli(netns)
    one, two = small_sets(compile_host(first)), small_sets(compile_host(second))
    applier = Applier(ex)
    applier.apply(one)
    filled = fill_dynamic_sets(netns, one)
    assert filled and {total for _, total in filled.values()} == {FILL}, filled
    # full for real: the kernel refuses one element more
    name, typ = next((s.name, s.type) for s in one.sets if s.long_lived)
    more = subprocess.run(["ip", "netns", "exec", netns, "nft", "add", "element", "inet", "connguard", name,
                           "{ " + _fill_key(typ, FILL) + " }"], capture_output=True, text=True)
    assert more.returncode != 0, f"set {name} took a {FILL + 1}th element"
    kept = {s.name for s in two.sets if s.long_lived} & set(filled)
    assert kept, "no full set stays from one state to the other"
    # a delta to `second`: checked by the kernel, applied; then a full resync (an agent restart)
    applier.apply(two, check=True)
    applier.apply(two)
    after_delta = dynamic_counts(netns, two)
    Applier(ex).apply(two)
    after_resync = dynamic_counts(netns, two)
    lost = {n: (filled[n][0], after_delta.get(n), after_resync.get(n)) for n in kept
            if after_delta.get(n, (0,))[0] != filled[n][0] or after_resync.get(n, (0,))[0] != filled[n][0]}
    assert not lost, f"elements flushed from full sets (filled, after delta, after resync): {lost}"
