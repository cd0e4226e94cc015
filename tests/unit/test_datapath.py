"""Datapath per port (agent/datapath.py) and how bridged ports compile (compiler, nft/bridge.py)."""

import pytest

from connguard.agent.datapath import bridges, classify
from connguard.compiler import compile_host
from connguard.exceptions import CompileError
from connguard.model import parse_state
from connguard.names import FROM_BR, FROM_VM, PORTS, TO_BR, TO_VM
from connguard.nft import Applier, FakeExecutor
from connguard.nft.bridge import SYSCTLS


def state(*taps):
    return parse_state({"policies": [{"name": "p", "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "max_cps": 10},
        {"type": "syn_flood", "port_range_min": 80, "port_range_max": 80, "max_syn_rate": 100}]}],
        "ports": [{"interface_name": t, "fixed_ips": [f"10.0.0.{i + 2}"], "policy": "p"} for i, t in enumerate(taps)]})


def test_mode_from_the_taps_master():
    found = {"tapa": (None, None), "tapb": ("qbrb", "bridge"), "tapc": ("ovs-system", "openvswitch"),
             "tapd": ("brx", "bridge"), "tape": ("brx", "bridge"), "qbrb": (None, None)}
    paths = classify(["tapa", "tapb", "tapc", "tapd", "tape", "tapf"], found, {"tapa": "bridged"})
    assert {t: p.mode for t, p in paths.items()} == {"tapa": "routed", "tapb": "bridged", "tapc": "netdev",
                                                      "tapd": "bridged", "tape": "bridged", "tapf": "missing"}
    assert "Open vSwitch" in paths["tapc"].problem and "not supported" in paths["tapc"].problem
    assert "shared bridges are not supported" in paths["tapd"].problem
    assert "datapath bridged was asked" in paths["tapa"].problem
    assert bridges(paths) == {"tapb": "qbrb"}  # only a bridge of its own is protectable


def test_bridged_port_is_keyed_by_its_bridge_and_dispatched_by_the_mark():
    rs = compile_host(state("tapa", "tapb"), bridges={"tapb": "qbrb"})
    assert [e.key for e in rs.set(TO_VM).elements] == ["tapa"] and [e.key for e in rs.set(FROM_VM).elements] == ["tapa"]
    assert [e.key for e in rs.set(TO_BR).elements] == ["qbrb"] and [e.key for e in rs.set(FROM_BR).elements] == ["qbrb"]
    assert {e.key for e in rs.set(PORTS).elements} == {"tapa", "qbrb"}
    assert rs.bridge_taps == ("tapb",)
    assert rs.port_policy == {"tapa": "p", "qbrb": "p"}
    # synproxy only for the routed port's address
    assert [e.key["concat"][0] for e in rs.set("synproxy4").elements] == ["10.0.0.2"]


def test_routed_only_host_has_no_bridge_objects():
    rs = compile_host(state("tapa"))
    assert rs.bridge_taps == () and not any(s.name in (TO_BR, FROM_BR) for s in rs.sets)
    _, cmds = Applier(FakeExecutor()).plan(rs)
    assert not any("bridge" == next(iter(c.values()))[k].get("family") for c, _ in cmds
                   for k in next(iter(c.values())))


def test_two_ports_in_one_bridge_are_refused():
    with pytest.raises(CompileError, match="share one bridge"):
        compile_host(state("tapa", "tapb"), bridges={"tapa": "br0", "tapb": "br0"})


def test_apply_sends_the_bridge_table_and_switches_br_netfilter_on():
    ex = FakeExecutor()
    Applier(ex).apply(compile_host(state("tapb"), bridges={"tapb": "qbrb"}))
    sent = [c for b in ex.batches for c in b["nftables"]]
    assert {"add": {"table": {"family": "bridge", "name": "connguard"}}} in sent
    elems = [c["add"]["element"]["elem"] for c in sent if "element" in c.get("add", {})
             and c["add"]["element"]["family"] == "bridge"]
    assert elems == [["tapb"]], elems
    assert all(ex.sysctls.get(k) == "1" for k in SYSCTLS), ex.sysctls
