"""Brute force against a real login service (OpenSSH's sshd when installed) in a VM namespace:
exact ban threshold, expiry, escalation, allowlist, cutting established flows, and bans and
meters that survive policy changes, agent restarts and a flushed table."""

import time

import pytest

from nsenforce import RunningAgent, bans_of, module_lab, state_dict, wait_for

pytestmark = pytest.mark.netns

ATTEMPTS = 4
BF = {"type": "brute_force", "profile": "ssh", "max_attempts": ATTEMPTS, "window": 60,
      "ban_seconds": 3, "ban_multiplier": 2, "max_ban_seconds": 60}


lab = module_lab(vms=1, clients=1, sources=4, vm_tcp=(80,), client_tcp=(2222, 8080), login=True)
FRESH_CONNGUARD = True




def outcomes(result):
    return [a.outcome for a in result.attempts]


def served(result):
    """Which attempts the login service answered. An attempt is counted when its handshake
    completes, so the (max_attempts + 1)-th connects and is then cut before any data."""
    return [bool(a.banner) for a in result.attempts]


def test_ban_after_exactly_max_attempts_expiry_and_escalation(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    with RunningAgent(lab, state_dict(lab, [BF]), tmp_path):
        first = cl.bruteforce(vm, 22, attempts=ATTEMPTS + 2, timeout=0.8)
        assert outcomes(first)[:ATTEMPTS] == ["connected"] * ATTEMPTS
        assert served(first) == [True] * ATTEMPTS + [False] * 2, served(first)
        assert all(a.banner for a in first.attempts[:ATTEMPTS]), "the login service answered"
        [ban] = bans_of(lab, cl.ipv4)
        assert ban.interface_name == vm.tap and ban.timeout == 3
        banned_at = time.monotonic() - (3 - ban.expires)
        wait_for(lambda: not bans_of(lab, cl.ipv4), 10, what="ban expiry")
        assert 2.0 <= time.monotonic() - banned_at <= 4.5
        # a second offence: a fresh window of ATTEMPTS, then a ban twice as long
        second = cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.8)
        assert outcomes(second)[:ATTEMPTS] == ["connected"] * ATTEMPTS
        assert served(second) == [True] * ATTEMPTS + [False], served(second)
        ban = wait_for(lambda: [b for b in bans_of(lab, cl.ipv4) if b.timeout == 6], 5, what="escalated ban")[0]
        assert ban.expires > 3


def test_allowlisted_source_is_never_banned(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    trusted = cl.extra_ipv4[0]
    state = state_dict(lab, [BF], allowlist=[{"remote_ip_prefix": trusted}])
    with RunningAgent(lab, state, tmp_path):
        result = cl.bruteforce(vm, 22, attempts=3 * ATTEMPTS, timeout=0.8, source=trusted)
        assert outcomes(result) == ["connected"] * (3 * ATTEMPTS)
        assert bans_of(lab, trusted) == []


def test_ban_cuts_established_connection(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    attacker = cl.extra_ipv4[1]
    with RunningAgent(lab, state_dict(lab, [BF]), tmp_path):
        with cl.connect_and_hold(vm, 80, source=attacker) as conn:
            assert conn.passes_data()
            cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.8, source=attacker)
            assert bans_of(lab, attacker)
            assert not conn.passes_data(timeout=1.0)


def test_policy_change_restart_and_flush_keep_bans_and_meters(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    long_ban = {**BF, "ban_seconds": 120, "max_ban_seconds": 600}
    victim, counted = cl.extra_ipv4[2], cl.extra_ipv4[3]
    with RunningAgent(lab, state_dict(lab, [long_ban]), tmp_path) as ra:
        cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.8, source=victim)
        [ban] = bans_of(lab, victim)
        # two attempts of `counted` are on its meter
        assert outcomes(cl.bruteforce(vm, 22, attempts=2, timeout=0.8, source=counted)) == ["connected"] * 2
        # a policy change: another rule, and a different threshold would not reset state
        ra.write(state_dict(lab, [long_ban, {"type": "connection_rate_limit", "direction": "ingress",
                                             "scope": "remote_ip", "max_cps": 100}]))
        wait_for(lambda: len(ra.agent.loaded.state.policies[0].rules) == 2, 5, what="reload")
        wait_for(lambda: ra.agent.last_apply and ra.agent.last_apply["mode"] == "delta", 5, what="delta apply")
        assert bans_of(lab, victim)
    # agent restart: a new agent adopts the table with a full sync
    with RunningAgent(lab, state_dict(lab, [long_ban]), tmp_path) as ra:
        assert ra.agent.last_apply["mode"] == "full"
        [after] = bans_of(lab, victim)
        assert after.expires <= ban.expires  # not reset
        # the meter kept its two attempts: two more connect, the third is banned
        assert outcomes(cl.bruteforce(vm, 22, attempts=3, timeout=0.8, source=counted))[:2] == ["connected"] * 2
        assert bans_of(lab, counted)


def test_flushed_table_is_repaired_and_bans_restored(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    victim = cl.extra_ipv4[2]
    with RunningAgent(lab, state_dict(lab, [{**BF, "ban_seconds": 120, "max_ban_seconds": 600}]), tmp_path, drift_interval=1) as ra:
        cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.8, source=victim)
        wait_for(lambda: ra.agent.book.bans, 5, what="ban in the book")
        lab.exec(lab.host, ["nft", "flush", "ruleset"])  # someone wipes everything (in the lab host)
        wait_for(lambda: bans_of(lab, victim), 10, what="ban restored after flush")
        [ban] = bans_of(lab, victim)
        assert 100 < ban.expires <= 120
        result = cl.bruteforce(vm, 22, attempts=1, timeout=0.8, source=victim)
        assert outcomes(result) != ["connected"]


def test_egress_brute_force_bans_the_vms_access_to_that_remote(lab, tmp_path):
    """A compromised VM hammering someone else's login service loses its access to that
    remote (the ban is port . remote, both directions); other remotes are unaffected."""
    vm, cl = lab.vms[0], lab.clients[0]
    rule = {"type": "brute_force", "profile": "custom", "direction": "egress", "protocol": "tcp",
            "port_range_min": 2222, "max_attempts": 3, "window": 60, "ban_seconds": 60}
    with RunningAgent(lab, state_dict(lab, [rule]), tmp_path):
        result = vm.bruteforce(cl, 2222, attempts=5, timeout=0.8)
        assert outcomes(result)[:3] == ["connected"] * 3
        # the 4th completes its handshake (that is what counts) and is cut; the 5th is banned
        assert "connected" not in outcomes(result)[4:], outcomes(result)
        [ban] = bans_of(lab, cl.ipv4)
        assert ban.interface_name == vm.tap
        with vm.hold(cl, 8080, 1, timeout=0.8) as other_service:
            assert other_service.connected == 0  # the VM may not talk to that remote at all
        with cl.hold(vm, 80, 1, timeout=0.8, source=cl.extra_ipv4[0]) as unrelated:
            assert unrelated.connected == 1  # another remote still reaches the VM


def test_state_file_ban_is_applied_once_and_never_escalated(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    banned = cl.extra_ipv4[1]
    state = state_dict(lab, [BF], bans=[{"ip_address": banned, "interface_name": vm.tap, "seconds": 2}])
    with RunningAgent(lab, state, tmp_path) as ra:
        [ban] = bans_of(lab, banned)
        assert ban.timeout == 2
        wait_for(lambda: not bans_of(lab, banned), 6, what="the state ban to expire")
        assert ra.agent.book.bans.get((vm.tap, banned)) is None or \
            ra.agent.book.bans[(vm.tap, banned)].origin == "manual"
    # a restart (full sync) does not put the expired ban back, let alone escalate it
    with RunningAgent(lab, state, tmp_path) as ra:
        assert ra.agent.last_apply["mode"] == "full"
        assert bans_of(lab, banned) == []
        assert all(b.origin == "manual" for b in ra.agent.book.bans.values() if b.ip_address == banned)


def test_emptied_dispatch_map_is_repaired(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    with RunningAgent(lab, state_dict(lab, [BF]), tmp_path, drift_interval=1) as ra:
        lab.exec(lab.host, ["nft", "flush", "map", "inet", "connguard", "to_vm"])
        wait_for(lambda: vm.tap in lab.exec(lab.host, ["nft", "list", "map", "inet", "connguard", "to_vm"]).stdout,
                 10, what="to_vm repaired")
        assert ra.agent.last_apply["mode"] == "full"
        assert served(cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.8))[-1] is False
