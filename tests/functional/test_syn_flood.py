"""SYN floods with random spoofed sources (hping3) at one VM: synproxy keeps them out of
conntrack, and the neighbour VM's admitted rate stays within 10% of its unflooded rate."""

import threading

import pytest

from nsenforce import enforce, kernel, module_lab, within

pytestmark = pytest.mark.netns

CAP = 300
PPS = 5000


def tracked_towards(lab, ip: str) -> int:
    proc = lab.exec(lab.host, ["conntrack", "-L", "-d", ip], capture_output=True, text=True)
    return sum(1 for line in proc.stdout.splitlines() if line.strip())


lab = module_lab(vms=2, clients=1, sources=2, vm_tcp=(80,))
FRESH_CONNGUARD = True




def flood_during_syn_flood(lab, target_vm, neighbour, seconds=6):
    peak = {"tracked": 0}
    done = threading.Event()
    errors = []

    def attack():
        try:
            lab.clients[0].syn_flood(target_vm, 80, duration=seconds + 2, rate_pps=PPS)
        except Exception as exc:  # reported by the test
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=attack)
    t.start()
    try:
        result = lab.clients[0].flood(neighbour, 80, rate=100, duration=seconds)
        peak["tracked"] = tracked_towards(lab, target_vm.ipv4)
    finally:
        t.join(seconds + 20)
    assert not errors, errors
    return result, peak["tracked"]


@pytest.mark.parametrize("synproxy", [True, False])
def test_neighbour_unaffected_and_conntrack_bounded(lab, synproxy):
    rules = [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": 1000, "synproxy": synproxy},
             {"type": "connection_limit", "direction": "ingress", "scope": "port", "max_connections": CAP}]
    enforce(lab, rules, vms=(0, 1))
    vm0, vm1 = lab.vms
    baseline = lab.clients[0].flood(vm1, 80, rate=100, duration=6).admitted_rate(skip=1)
    flooded, tracked = flood_during_syn_flood(lab, vm0, vm1)
    assert within(flooded.admitted_rate(skip=1), baseline), (baseline, flooded.series)
    # without synproxy the port's ct count cap is what bounds the table (max_connections means
    # at most that many); with synproxy spoofed SYNs never reach conntrack at all
    assert tracked <= (CAP // 10 if synproxy else CAP), f"{tracked} conntrack entries towards the flooded VM"
    hits = {port: n for (_, port), n in kernel(lab).hits.items()}
    assert hits.get(vm0.tap, 0) > 0, "the SYN budget dropped part of the flood"


def test_synproxy_completes_real_handshakes(lab):
    enforce(lab, [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": 1000}])
    with lab.clients[0].hold(lab.vms[0], 80, 3) as held:
        assert held.connected == 3
        assert held.alive() == 3
    # the SYNs were answered by the host: nothing was tracked for them before the handshake
    assert lab.exec(lab.host, ["nft", "list", "set", "inet", "connguard", "synproxy4"]).stdout.count(lab.vms[0].ipv4) == 1
