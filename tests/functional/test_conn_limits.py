"""Concurrent-connection caps (conntrack count) with real held TCP connections, both directions."""

import pytest

from nsenforce import enforce, module_lab

pytestmark = pytest.mark.netns

N = 5


lab = module_lab(vms=1, clients=1, sources=2, vm_tcp=(80,), client_tcp=(8080,))
FRESH_CONNGUARD = True




@pytest.mark.parametrize("direction", ["ingress", "any"])
def test_ingress_cap_refuses_n_plus_one_while_n_stay_open(lab, direction):
    enforce(lab, [{"type": "connection_limit", "direction": direction, "scope": "port", "max_connections": N}])
    vm, cl = lab.vms[0], lab.clients[0]
    with cl.hold(vm, 80, N) as held:
        assert held.connected == N
        assert held.open_one() == "refused"  # a TCP reset, at once
        assert held.alive() == N
    # once they are closed the quota is free again
    with cl.hold(vm, 80, N) as held:
        assert held.connected == N


@pytest.mark.parametrize("direction", ["egress", "any"])
def test_egress_cap_refuses_n_plus_one_while_n_stay_open(lab, direction):
    enforce(lab, [{"type": "connection_limit", "direction": direction, "scope": "port", "max_connections": N}])
    vm, cl = lab.vms[0], lab.clients[0]
    with vm.hold(cl, 8080, N) as held:
        assert held.connected == N
        assert held.open_one() == "refused"
        assert held.alive() == N


def test_any_direction_shares_the_ports_quota(lab):
    enforce(lab, [{"type": "connection_limit", "direction": "any", "scope": "port", "max_connections": N}])
    vm, cl = lab.vms[0], lab.clients[0]
    with cl.hold(vm, 80, 3) as inbound, vm.hold(cl, 8080, 2) as outbound:
        assert (inbound.connected, outbound.connected) == (3, 2)
        assert outbound.open_one() == "refused"
        assert inbound.open_one() == "refused"


def test_per_remote_cap_leaves_other_remotes_alone(lab):
    enforce(lab, [{"type": "connection_limit", "direction": "ingress", "scope": "remote_ip", "max_connections": N}])
    vm, cl = lab.vms[0], lab.clients[0]
    with cl.hold(vm, 80, N, source=cl.extra_ipv4[0]) as first:
        assert first.connected == N and first.open_one() == "refused"
        with cl.hold(vm, 80, N, source=cl.extra_ipv4[1]) as second:
            assert second.connected == N


def test_closed_connections_free_their_slot_under_churn(lab):
    """The kernel's count keeps a closed connection until its next list walk (at most once per
    jiffy, or after 64 additions: nf_conncount), so a slot must be free again for paced churn,
    and the cap must still be exact afterwards: nothing leaked in either direction."""
    enforce(lab, [{"type": "connection_limit", "direction": "ingress", "scope": "port", "max_connections": N}])
    vm, cl = lab.vms[0], lab.clients[0]
    with cl.hold(vm, 80, N - 1) as held:
        assert held.connected == N - 1
        churn = cl.flood(vm, 80, rate=40, duration=2)   # 80 short connections through the last slot
        assert churn.admitted == churn.attempted and churn.refused == 0, (
            f"{churn.admitted} of {churn.attempted} short connections admitted ({churn.refused} refused, "
            f"{churn.timeout} timed out) with {N - 1} of {N} slots held")
        assert held.open_one() == "connected"            # the N-th slot is free again
        assert held.open_one() == "refused"              # and the cap still counts N
        assert held.alive() == N


@pytest.mark.parametrize("scope", ["port", "remote_ip"])
def test_a_changed_cap_applies_to_ports_already_counted(lab, scope):
    """Each count element copies the number of the rule that created it: after a policy change
    from 2 to 4 (a delta apply), a port that had been counted under 2 must take 4, and after a
    change back to 2 it must refuse the third again."""
    rule = {"type": "connection_limit", "direction": "ingress", "scope": scope, "max_connections": 2}
    applier = enforce(lab, [rule])
    vm, cl = lab.vms[0], lab.clients[0]
    with cl.hold(vm, 80, 2) as held:
        assert held.connected == 2 and held.open_one() == "refused"
    enforce(lab, [{**rule, "max_connections": 4}], applier=applier)
    with cl.hold(vm, 80, 4) as held:
        assert held.connected == 4, f"{held.connected} of 4 connected after the cap was raised to 4"
        assert held.open_one() == "refused"
    enforce(lab, [rule], applier=applier)
    with cl.hold(vm, 80, 2) as held:
        assert held.connected == 2 and held.open_one() == "refused", "the cap lowered back to 2 did not apply"
