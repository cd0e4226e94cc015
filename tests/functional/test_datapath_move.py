"""A port that changes datapath while the agent runs: its tap moves from routed into the hybrid
layout (a qbr bridge of its own), and the agent protects it again at its next drift check."""

import time

import pytest

from connguard.lab import build
from nsenforce import RunningAgent, state_dict, wait_for

pytestmark = pytest.mark.netns

N = 3
DRIFT = 1.0


def reaches(cl, vm) -> bool:
    # port 81 is outside the cap's match: the probe's own connection must not count against it
    with cl.hold(vm, 81, 1, timeout=0.5) as one:
        return one.connected == 1


def test_tap_moved_from_routed_to_hybrid_is_protected_again(lab_factory, tmp_path):
    lab = lab_factory(vms=1, clients=1, sources=0)
    vm, cl = lab.vms[0], lab.clients[0]
    cap = [{"type": "connection_limit", "direction": "ingress", "scope": "port", "max_connections": N,
            "protocol": "tcp", "port_range_min": 80, "port_range_max": 80}]
    with vm.serve(tcp=[80, 81]), RunningAgent(lab, state_dict(lab, cap), tmp_path, drift_interval=DRIFT) as ra:
        with cl.hold(vm, 80, N) as held:
            assert held.connected == N and held.open_one() == "refused", "the routed port's cap"
        build.replug_hybrid(lab, vm)
        moved = time.monotonic()
        wait_for(lambda: reaches(cl, vm), 5, what="the VM to answer through its new bridges")
        wait_for(lambda: ra.agent.applier.applied is not None and ra.agent.applier.applied.bridge_taps == (vm.tap,),
                 DRIFT + 5, what="the agent to recompile the moved port as bridged")
        took = time.monotonic() - moved
        print(f"moved port recompiled as bridged after {took:.2f}s (drift interval {DRIFT}s)")
        assert took <= DRIFT + 2, f"protected again {took:.1f}s after the move, drift interval {DRIFT}s"
        with cl.hold(vm, 80, N) as held:
            assert held.connected == N, held.connected
            assert held.open_one() == "refused", "the cap does not hold on the bridged port"
