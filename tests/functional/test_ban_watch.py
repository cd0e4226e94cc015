"""The agent learns of bans without reading the ban sets every pass (agent/banwatch.py), with
real brute-force traffic against sshd in a lab: an idle agent holding 2,000 state-file bans
reads the ban sets whole only at its audits; bans the kernel places for several attackers at
once (each real source, concurrently) are all in the ban book, with their rule, within 2 s of
the kernel placing them; a flushed ban set is whole again within 2 s, and one element deleted
by hand is back within the audit interval."""

from __future__ import annotations

import threading
import time

import pytest

from nsenforce import RunningAgent, bans_of, module_lab, state_dict, wait_for

from connguard.agent.banwatch import AUDIT_MIN
from connguard.nft import NftCli
from connguard.nft import readback as rb

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

lab = module_lab(vms=1, clients=1, sources=4, vm_tcp=(80,), login=True)
FRESH_CONNGUARD = True

ATTEMPTS = 2
BF = {"type": "brute_force", "profile": "ssh", "max_attempts": ATTEMPTS, "window": 60, "ban_seconds": 120}
STATE_BANS = 2000


def _state(lab):
    vm = lab.vms[0]
    bans = [{"ip_address": f"10.250.{i // 250}.{i % 250 + 1}", "interface_name": vm.tap, "seconds": 3600}
            for i in range(STATE_BANS)]
    return state_dict(lab, [BF], bans=bans)


def _ban4(lab) -> int:
    elems, _ = rb.elements(NftCli(lab.host), "ban4")
    return len(elems)


def test_idle_agent_does_not_read_the_ban_sets_and_every_attackers_ban_is_recorded(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    with RunningAgent(lab, _state(lab), tmp_path) as ra:
        agent = ra.agent
        wait_for(lambda: len(agent.book.bans) >= STATE_BANS, 20, what="the state file's bans in the book")
        wait_for(lambda: _ban4(lab) >= STATE_BANS, 10, what="the state file's bans in the kernel")
        # idle: 0.2 s passes for 4 s (20 passes; the old loop read the sets whole at each one)
        time.sleep(1)
        reads, start = agent.watch.reads, time.monotonic()
        time.sleep(4)
        idle_reads = agent.watch.reads - reads
        allowed = int((time.monotonic() - start) / max(AUDIT_MIN, agent.watch.audit_interval())) + 1
        assert idle_reads <= allowed, f"{idle_reads} whole reads of the ban sets in 4 idle s (audits: {allowed})"

        # every extra address of the client attacks at once: real handshakes, real bans
        attackers = list(cl.extra_ipv4[:4])
        banned_at: dict[str, float] = {}
        results = {}

        def attack(src: str) -> None:
            results[src] = cl.bruteforce(vm, 22, attempts=ATTEMPTS + 2, timeout=0.5, source=src)

        threads = [threading.Thread(target=attack, args=(a,)) for a in attackers]
        for t in threads:
            t.start()
        # watch the kernel for each ban (the book must follow within 2 s of each)
        deadline = time.monotonic() + 60
        while len(banned_at) < len(attackers) and time.monotonic() < deadline:
            for a in attackers:
                if a not in banned_at and bans_of(lab, a):
                    banned_at[a] = time.monotonic()
            time.sleep(0.05)
        for t in threads:
            t.join(60)
        assert set(banned_at) == set(attackers), f"the kernel banned {sorted(banned_at)} of {attackers}: {results}"
        for a in attackers:
            key = (vm.tap, a)
            wait_for(lambda: key in agent.book.bans, max(0.0, banned_at[a] + 2 - time.monotonic()) + 0.01,
                     what=f"{a}'s ban in the book within 2 s of the kernel's (last whole read took "
                          f"{agent.watch.cost:.3f} s, {agent.watch.reads} reads)")
            ban = agent.book.bans[key]
            assert ban.origin == "detected" and ban.offence == 1, ban
            assert 100 < ban.expires_at - time.time() <= 120, f"expiry {ban.expires_at - time.time():.0f} s away"
        detected = {d.ban.ip_address: d for d in agent.detected}
        assert set(attackers) <= set(detected), f"detections for the reporter: {sorted(detected)}"
        assert all(detected[a].policy == "p" and detected[a].rule_index == 0 for a in attackers), detected


def test_a_flushed_ban_set_is_whole_again_at_once_and_a_deleted_element_within_the_audit(lab, tmp_path):
    vm = lab.vms[0]
    ns = ["ip", "netns", "exec", lab.host, "nft"]
    import subprocess

    with RunningAgent(lab, _state(lab), tmp_path) as ra:
        wait_for(lambda: _ban4(lab) >= STATE_BANS, 20, what="the state file's bans in the kernel")
        subprocess.run([*ns, "flush", "set", "inet", "connguard", "ban4"], check=True)
        flushed = time.monotonic()
        assert _ban4(lab) < STATE_BANS
        wait_for(lambda: _ban4(lab) >= STATE_BANS, 5, what="the flushed ban set restored")
        took = time.monotonic() - flushed
        assert took < 2, f"a flushed ban set took {took:.1f} s to come back"

        # one element deleted by hand: the set is not empty, so only an audit sees it
        victim = "10.250.0.7"
        subprocess.run([*ns, "delete", "element", "inet", "connguard", "ban4", f"{{ {vm.tap} . {victim} }}"],
                       check=True)
        deleted = time.monotonic()
        bound = ra.agent.watch.audit_interval() + 1
        wait_for(lambda: bans_of(lab, victim), bound + 2, what=f"a deleted ban back within {bound:.1f} s")
        took = time.monotonic() - deleted
        assert took <= bound + 1, f"a deleted ban came back after {took:.1f} s (audit interval {bound - 1:.1f} s)"
        [b] = bans_of(lab, victim)
        assert 3000 < b.timeout <= 3600, f"restored with {b.timeout} s: not its remaining time"
