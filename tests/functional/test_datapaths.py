"""The core protections on every datapath the lab builds (lab/datapath.py): routed taps, taps in
one shared bridge, and the hybrid layout (a qbr bridge per tap, a veth pair into a shared
bridge standing in for br-int). Real floods and real connections; the bridged layouts go
through br_netfilter and the bridge-family marking table (nft/bridge.py)."""

import subprocess

import pytest

from nsenforce import bans_of, enforce, kernel, module_lab, port_key, within

pytestmark = pytest.mark.netns

RATE = 40
OFFERED = 5 * RATE
SECONDS = 7
N = 5
ATTEMPTS = 4
BF = {"type": "brute_force", "profile": "ssh", "max_attempts": ATTEMPTS, "window": 60,
      "ban_seconds": 30, "ban_multiplier": 1, "max_ban_seconds": 30}

lab = module_lab(vms=1, clients=1, sources=4, vm_tcp=(80,), client_tcp=(8080,), login=True,
                 datapaths=["routed", "bridged", "hybrid"])
FRESH_CONNGUARD = True


def check_rate(result):
    rate = result.admitted_rate(skip=1)
    assert len(result.series) - 2 >= 5, result.series
    assert within(rate, RATE), f"{result.series}: admitted {rate:.1f}/s, configured {RATE}/s"
    assert result.attempted >= 0.9 * OFFERED * SECONDS, f"the flood itself fell short: {result.attempted}"


def test_layout_is_what_the_lab_says(lab):
    want = {"routed": lab.vms[0].tap, "bridged": "brvm", "hybrid": "qbrvm0"}[lab.datapath]
    assert port_key(lab, lab.vms[0]) == want
    if lab.datapath != "routed":
        # conntrack sees bridged flows only with the namespace's br_netfilter switches on: the
        # applier turns them on (they are per namespace on this kernel)
        keys = ["net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"]
        subprocess.run(["ip", "netns", "exec", lab.host, "sysctl", "-q", "-w", *(f"{k}=0" for k in keys)], check=True)
        enforce(lab, [])
        out = subprocess.run(["ip", "netns", "exec", lab.host, "sysctl", "-n", *keys],
                             capture_output=True, text=True).stdout.split()
        assert out == ["1", "1"], out


def test_ingress_rate_per_remote(lab):
    enforce(lab, [{"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": RATE}])
    vm, cl = lab.vms[0], lab.clients[0]
    check_rate(cl.flood(vm, 80, rate=OFFERED, duration=SECONDS))
    hits = {port: n for (_, port), n in kernel(lab).hits.items()}
    assert hits.get(port_key(lab, vm), 0) > 0, hits


def test_egress_rate_per_port(lab):
    enforce(lab, [{"type": "connection_rate_limit", "direction": "egress", "scope": "port", "max_cps": RATE,
                   "protocol": "tcp"}])
    check_rate(lab.vms[0].flood(lab.clients[0], 8080, rate=OFFERED, duration=SECONDS))


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_concurrent_cap(lab, direction):
    enforce(lab, [{"type": "connection_limit", "direction": direction, "scope": "port", "max_connections": N}])
    vm, cl = lab.vms[0], lab.clients[0]
    src, dst, port = (cl, vm, 80) if direction == "ingress" else (vm, cl, 8080)
    with src.hold(dst, port, N) as held:
        assert held.connected == N, held.connected
        assert held.open_one() == "refused"
        assert held.alive() == N


def test_brute_force_ban_after_exactly_max_attempts_cuts_established_flow(lab):
    enforce(lab, [BF])
    vm, cl = lab.vms[0], lab.clients[0]
    attacker = cl.extra_ipv4[0]
    with cl.connect_and_hold(vm, 80, source=attacker) as conn:
        assert conn.passes_data()
        result = cl.bruteforce(vm, 22, attempts=ATTEMPTS + 2, timeout=0.8, source=attacker)
        served = [bool(a.banner) for a in result.attempts]
        assert served == [True] * ATTEMPTS + [False] * 2, served
        [ban] = bans_of(lab, attacker)
        assert ban.interface_name == port_key(lab, vm), ban
        assert not conn.passes_data(timeout=1.0), "the ban did not cut the established flow"
    # a neighbour source is untouched
    assert cl.bruteforce(vm, 22, attempts=1, timeout=0.8, source=cl.extra_ipv4[1]).attempts[0].banner


BUDGET = 200

COUNT_SYNS = """table inet probe {
  chain in {
    type filter hook input priority 0;
    tcp dport 80 tcp flags & (syn|ack) == syn counter
  }
}
"""


def syns_at(lab, vm) -> int:
    import json

    out = lab.exec(vm.netns, ["nft", "-j", "list", "table", "inet", "probe"], capture_output=True, text=True).stdout
    return next(i["rule"]["expr"][-1]["counter"]["packets"] for i in json.loads(out)["nftables"] if "rule" in i)


def test_syn_budget_holds_a_spoofed_flood(lab):
    import threading
    import time

    enforce(lab, [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": BUDGET, "synproxy": False}])
    vm, cl = lab.vms[0], lab.clients[0]
    lab.exec(vm.netns, ["nft", "-f", "-"], input=COUNT_SYNS, text=True, check=True)
    try:
        flood = threading.Thread(target=cl.syn_flood, args=(vm, 80), kwargs={"duration": 5, "rate_pps": 5 * BUDGET})
        flood.start()
        time.sleep(1.5)  # past the burst
        t0, c0 = time.monotonic(), syns_at(lab, vm)
        time.sleep(3)
        t1, c1 = time.monotonic(), syns_at(lab, vm)
        flood.join(20)
        rate = (c1 - c0) / (t1 - t0)
        assert within(rate, BUDGET), f"{rate:.0f} spoofed SYNs/s reached the VM, budget {BUDGET}/s"
        hits = {port: n for (_, port), n in kernel(lab).hits.items()}
        assert hits.get(port_key(lab, vm), 0) > 0, hits
    finally:
        lab.exec(vm.netns, ["nft", "delete", "table", "inet", "probe"], capture_output=True)


def test_bridge_table_drift_is_found_and_repaired(lab):
    rules = [{"type": "connection_rate_limit", "direction": "ingress", "max_cps": RATE}]
    applier = enforce(lab, rules)
    assert applier.drift() == [], applier.drift()
    listed = lab.exec(lab.host, ["nft", "list", "tables"], capture_output=True, text=True).stdout
    if lab.datapath == "routed":
        assert "bridge connguard" not in listed, listed  # a routed-only host gets no bridge table
        return
    assert "table bridge connguard" in listed, listed
    lab.exec(lab.host, ["nft", "delete", "table", "bridge", "connguard"], check=True)
    assert applier.drift() == ["table bridge connguard is missing"], applier.drift()
    applier.invalidate()  # what the agent does on drift: a full sync
    enforce(lab, rules, applier=applier)
    assert applier.drift() == [], applier.drift()
    lab.exec(lab.host, ["nft", "delete", "rule", "bridge", "connguard", "ports", "handle",
                        _first_handle(lab)], check=True)
    assert any("other rules" in p for p in applier.drift()), applier.drift()


def _first_handle(lab) -> str:
    import json

    out = lab.exec(lab.host, ["nft", "-j", "-a", "list", "chain", "bridge", "connguard", "ports"],
                   capture_output=True, text=True, check=True).stdout
    return str(next(i["rule"]["handle"] for i in json.loads(out)["nftables"] if "rule" in i))
