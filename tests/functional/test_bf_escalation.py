"""Brute-force escalation against an attacker who retries the moment a ban expires (issue 8,
item 7): the kernel decides each ban's length from the rule's own offender memory, so the
agent's sampling (or its absence) changes nothing.

The attacker is one process in the client namespace connecting to sshd in a loop (100 ms
connect timeout, so while banned a new SYN leaves every 100 ms and the first one after the
expiry gets through): tighter than "poll the kernel for the ban's disappearance, then
connect". Meanwhile the test samples the kernel's ban set and reads each ban's timeout."""

import ipaddress
import json
import subprocess
import sys
import threading
import time

import pytest

from nsenforce import RunningAgent, bans_of, enforce, module_lab, state_dict, wait_for

from connguard.compiler.punishment import tier_set
from connguard.compiler.context import BAN_SET_SIZE, RuleContext
from connguard.model import parse_state
from connguard.nft import NftCli
from connguard.nft import readback
from connguard.nft.observe import port_bans

pytestmark = pytest.mark.netns

ATTEMPTS = 2
BF = {"type": "brute_force", "profile": "ssh", "max_attempts": ATTEMPTS, "window": 60,
      "ban_seconds": 1, "ban_multiplier": 2, "max_ban_seconds": 16}

lab = module_lab(vms=1, clients=1, sources=4, vm_tcp=(80,), login=True)
FRESH_CONNGUARD = True

# Connect in a loop until ``bans`` ban periods (a refused attempt after a connected one, until
# the next connected one) have been seen whole; print every attempt as (start, connected).
ATTACKER = r"""
import json, socket, sys, time
target, port, bans, timeout, deadline, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
rows, seen, banned = [], 0, False
end = time.monotonic() + deadline
while time.monotonic() < end:
    s = socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    start = time.monotonic()
    try:
        s.connect((target, port))
        # an attempt over the meter completes its handshake (attempts are counted once the
        # source has proven its address) and is then cut: served means sshd's banner came back
        ok = bool(s.recv(64))
    except OSError:
        ok = False
    finally:
        s.close()
    rows.append((start, ok))
    if not ok and not banned and len(rows) > 1 and rows[-2][1]:
        banned = True
    elif ok and banned:
        banned, seen = False, seen + 1
        if seen == bans:
            break
    if not ok:
        time.sleep(max(0.0, start + timeout - time.monotonic()))  # refused at once: keep the pace
print(json.dumps(rows))
"""


def served(result) -> list[bool]:
    """Which attempts reached the login service: an attempt over the meter completes its
    handshake (it is counted once the source has proven its address) and is then cut."""
    return [bool(a.banner) for a in result.attempts]


def attack(cl, vm, bans, *, deadline, source="", ipv6=False):
    target = vm.ipv6 if ipv6 else vm.ipv4
    proc = subprocess.run(["ip", "netns", "exec", cl.netns, sys.executable, "-c", ATTACKER, target, "22",
                           str(bans), "0.1", str(deadline), source], capture_output=True, text=True,
                          timeout=deadline + 30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ban_periods(rows):
    """(start of the refused attempt that was banned, start of the next connected attempt)."""
    out, begun = [], None
    for (start, ok), prev in zip(rows[1:], rows):
        if not ok and begun is None and prev[1]:
            begun = start
        elif ok and begun is not None:
            out.append((begun, start))
            begun = None
    return out


def read_bans(cli, name):
    """One ban set, read over netlink (as the agent and status read it)."""
    elems, _ = readback.elements(cli, name, limit=None)
    return port_bans(elems, 6 if name.endswith("6") else 4)


class BanSampler:
    """Samples ``ban4``/``ban6`` for one address (IPv6: its /64) in a thread; a ban is new when
    its time left grows."""

    def __init__(self, lab, ip):
        self.cli = NftCli(lab.host)
        self.set = "ban6" if ":" in ip else "ban4"
        self.ip = str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address) if ":" in ip else ip
        self.bans: list[tuple[float, int]] = []  # (first seen, timeout)
        self._stop = threading.Event()
        self._last = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            bans = read_bans(self.cli, self.set)
            now = time.monotonic()
            mine = [b for b in bans if b.ip_address == self.ip]
            if mine:
                b = mine[0]
                if self._last is None or b.expires > self._last.expires or b.timeout != self._last.timeout:
                    self.bans.append((now, int(b.timeout)))
                self._last = b
            else:
                self._last = None
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def memory(lab, name):
    """The elements (port, remote) of an offender memory set, with their timeouts."""
    body = next(i["set"] for i in NftCli(lab.host).query("list", "set", "inet", "connguard", name)["nftables"]
                if "set" in i)
    out = {}
    for e in body.get("elem", []) or []:
        val = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
        out[tuple(val["concat"])] = e["elem"].get("timeout") if isinstance(e, dict) and "elem" in e else None
    return out


def rid_of(lab, rules, index=0):
    policy = parse_state(state_dict(lab, rules)).policies[0]
    return RuleContext(policy, index, False, ()).rid


def assert_escalated(rows, sampled, expected):
    kernel = [t for _, t in sampled]
    assert kernel[:len(expected)] == expected, f"kernel ban timeouts {kernel}, expected {expected}"
    periods = ban_periods(rows)
    assert len(periods) >= len(expected), f"attacker saw {len(periods)} bans: {periods}"
    measured = [round(b - a, 2) for a, b in periods[:len(expected)]]
    for seconds, lasted in zip(expected, measured):
        # held at least its length; released within one retry (0.1 s) plus scheduling
        assert seconds - 0.05 <= lasted <= seconds + 0.6, f"bans lasted {measured} s, expected {expected}"
    # the attacker re-offended at once: from a ban's end to the next ban, a few connections
    gaps = [round(nxt[0] - cur[1], 3) for cur, nxt in zip(periods, periods[1:])]
    return measured, gaps


def test_immediate_retries_get_six_escalating_bans(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    expected = [1, 2, 4, 8, 16, 16]
    with RunningAgent(lab, state_dict(lab, [BF]), tmp_path) as ra:
        with BanSampler(lab, cl.ipv4) as sampled:
            rows = attack(cl, vm, len(expected), deadline=90)
        measured, gaps = assert_escalated(rows, sampled.bans, expected)
        assert max(gaps) < 0.5, f"re-offences {gaps} s after each ban ended: the attacker did not retry at once"
        print(f"ban lengths {measured} s; re-offence {gaps} s after each expiry")
        # the last ban is the top step again, and the kernel remembers it a day past the ban
        rid = rid_of(lab, [BF])
        top = memory(lab, tier_set(rid, 4, 5))
        assert list(top) == [(vm.tap, cl.ipv4)] and 86_400 + 16 == top[(vm.tap, cl.ipv4)], top
        assert all(not memory(lab, tier_set(rid, 4, k)) for k in range(1, 5)), "a remote is in one step set"
        # the agent only recorded what the kernel did: the top step, which a flushed table
        # would get back (the ban itself has ended: the attacker stopped after it)
        mine = wait_for(lambda: [k.split("|")[0] for k in ra.agent.book.memory if k.endswith(f"|{vm.tap}|{cl.ipv4}")],
                        5, what="the offence in the book")
        assert mine == [tier_set(rid, 4, 5)], mine


def test_ipv6_per_64_escalates_too(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    # One /48 gets 4 x max_attempts attempts per window (its meter is not cleared by a ban: it
    # bounds rotation across /64s): with max_attempts 4, three offences (15 attempts) fit
    # within it, so every refusal here is a ban of the per-/64 meter.
    with RunningAgent(lab, state_dict(lab, [{**BF, "max_attempts": 4, "max_ban_seconds": 4}]), tmp_path):
        with BanSampler(lab, cl.ipv6) as sampled:
            rows = attack(cl, vm, 3, deadline=30, ipv6=True)
    measured, gaps = assert_escalated(rows, sampled.bans, [1, 2, 4])
    print(f"IPv6: ban lengths {measured} s; re-offence {gaps} s after each expiry")


def test_two_rules_on_one_port_escalate_with_their_own_parameters(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    ssh = {**BF, "ban_seconds": 2}                               # 2, 4, 8, 16
    web = {"type": "brute_force", "profile": "custom", "protocol": "tcp", "port_range_min": 80,
           "max_attempts": ATTEMPTS, "window": 60, "ban_seconds": 3, "ban_multiplier": 3,
           "max_ban_seconds": 27}                                 # 3, 9, 27
    attacker = cl.extra_ipv4[0]
    seen = []
    with RunningAgent(lab, state_dict(lab, [ssh, web]), tmp_path):
        for port in (22, 80, 22, 80):
            wait_for(lambda: not bans_of(lab, attacker), 15, what="the previous ban to end")
            result = cl.bruteforce(vm, port, attempts=ATTEMPTS + 1, timeout=0.3, source=attacker)
            # port 80 is an echo service (no banner): connected is what can be told here
            assert [a.outcome for a in result.attempts][:ATTEMPTS] == ["connected"] * ATTEMPTS, result.attempts
            [ban] = wait_for(lambda: bans_of(lab, attacker), 3, what=f"a ban after port {port}")
            seen.append(int(ban.timeout))
    assert seen == [2, 3, 4, 9], f"ban lengths {seen}: each rule escalates on its own steps"


def test_kernel_escalates_with_no_agent_at_all(lab):
    vm, cl = lab.vms[0], lab.clients[0]
    rule = {**BF, "max_ban_seconds": 4}
    enforce(lab, [rule])  # one apply; nothing runs afterwards
    with BanSampler(lab, cl.ipv4) as sampled:
        rows = attack(cl, vm, 4, deadline=40)
    measured, gaps = assert_escalated(rows, sampled.bans, [1, 2, 4, 4])
    print(f"no agent: ban lengths {measured} s; re-offence {gaps} s after each expiry")


def test_restart_and_drift_repair_keep_the_steps(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    attacker = cl.extra_ipv4[1]
    rule = {**BF, "ban_seconds": 2}  # 2, 4, 8, 16
    rid = rid_of(lab, [rule])
    with RunningAgent(lab, state_dict(lab, [rule]), tmp_path):
        cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.3, source=attacker)
        [ban] = bans_of(lab, attacker)
        assert ban.timeout == 2
    # a restarted agent does a full sync: the step sets are long-lived, never flushed
    with RunningAgent(lab, state_dict(lab, [rule]), tmp_path) as ra:
        assert ra.agent.last_apply["mode"] == "full"
        assert (vm.tap, attacker) in memory(lab, tier_set(rid, 4, 1))
        wait_for(lambda: not bans_of(lab, attacker), 5, what="the first ban to end")
        cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.3, source=attacker)
        [ban] = bans_of(lab, attacker)
        assert ban.timeout == 4, f"second offence banned {ban.timeout} s after a restart"
        # a drift repair (full sync) does not reset them either
        asked = time.time()
        ra.agent.applier.invalidate()
        wait_for(lambda: ra.agent.last_apply["mode"] == "full" and ra.agent.last_apply["at"] >= asked, 3,
                 what="a full sync")
        wait_for(lambda: not bans_of(lab, attacker), 6, what="the second ban to end")
        assert (vm.tap, attacker) in memory(lab, tier_set(rid, 4, 2))
        cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.3, source=attacker)
        [ban] = bans_of(lab, attacker)
        assert ban.timeout == 8, f"third offence banned {ban.timeout} s after a full sync"


def test_flushed_table_gets_bans_and_steps_back_from_the_book(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    attacker = cl.extra_ipv4[2]
    rule = {**BF, "ban_seconds": 5}  # 5, 10, 16
    rid = rid_of(lab, [rule])
    with RunningAgent(lab, state_dict(lab, [rule]), tmp_path, drift_interval=1) as ra:
        cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.3, source=attacker)
        wait_for(lambda: ra.agent.book.memory, 3, what="the offence in the book")
        lab.exec(lab.host, ["nft", "flush", "ruleset"])  # someone wipes everything (in the lab host)
        [ban] = wait_for(lambda: bans_of(lab, attacker), 5, what="the ban restored")
        assert ban.timeout <= 5
        restored = wait_for(lambda: memory(lab, tier_set(rid, 4, 1)), 5, what="the step memory restored")
        assert 86_400 - 5 < restored[(vm.tap, attacker)] <= 86_400 + 5, restored
        wait_for(lambda: not bans_of(lab, attacker), 8, what="the restored ban to end")
        cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.3, source=attacker)
        [ban] = bans_of(lab, attacker)
        assert ban.timeout == 10, f"the offence after a flush was banned {ban.timeout} s, not the second step's 10"


def fill(lab, name, n=BAN_SET_SIZE):
    """Fill a set keyed ``ifname . ipv4_addr`` to its size with elements of no real port."""
    elems = ", ".join(f'"fill0" . {ipaddress.IPv4Address(0x64400000 + i)}' for i in range(n))
    proc = subprocess.run(["ip", "netns", "exec", lab.host, "nft", "-f", "-"], capture_output=True, text=True,
                          input=f"add element inet connguard {name} {{ {elems} }}\n", timeout=120)
    assert proc.returncode == 0, proc.stderr


def ban_in(lab, ip):
    """The bans of ``ip`` read from ``ban4`` alone (with a full set elsewhere in the table, a
    whole-table listing takes tens of seconds: issue 8, item 10)."""
    return [b for b in read_bans(NftCli(lab.host), "ban4") if b.ip_address == ip]


def set_full(lab):
    # (slow with a full set in the table: nft loads every element to list a counter)
    [c] = [i["counter"] for i in NftCli(lab.host).query("list", "counter", "inet", "connguard", "set_full")["nftables"]
           if "counter" in i]
    return c["packets"]


def test_full_memory_set_is_counted_and_bans_at_the_first_step(lab):
    """Fail-open for escalation only: every offence is still banned, for ban_seconds."""
    vm, cl = lab.vms[0], lab.clients[0]
    attacker = cl.extra_ipv4[3]
    rule = {**BF, "ban_seconds": 3}  # 3, 6, 12, 16
    enforce(lab, [rule])
    first = tier_set(rid_of(lab, [rule]), 4, 1)
    fill(lab, first)
    for n in (1, 2):
        wait_for(lambda: not ban_in(lab, attacker), 6, what="the previous ban to end")
        result = cl.bruteforce(vm, 22, attempts=ATTEMPTS + 1, timeout=0.3, source=attacker)
        # the meter was cleared by the ban: a fresh window each time
        assert served(result)[:ATTEMPTS] == [True] * ATTEMPTS, result.attempts
        assert not served(result)[ATTEMPTS], result.attempts
        [ban] = wait_for(lambda: ban_in(lab, attacker), 3, what=f"ban {n}")
        assert ban.timeout == 3, f"offence {n} banned {ban.timeout} s with the memory full (not remembered)"
    assert set_full(lab) == 2, f"set_full {set_full(lab)} after 2 offences"


def test_full_ban_set_costs_the_ban_never_the_drop(lab):
    vm, cl = lab.vms[0], lab.clients[0]
    attacker = cl.extra_ipv4[3]
    enforce(lab, [BF])
    fill(lab, "ban4")
    result = cl.bruteforce(vm, 22, attempts=ATTEMPTS + 3, timeout=0.3, source=attacker)
    outcomes = served(result)
    assert outcomes[:ATTEMPTS] == [True] * ATTEMPTS, result.attempts
    # no ban could be added, so the meter was not cleared either: every later attempt is over
    # it and refused (reset at once: the client does not wait for its timeout)
    assert True not in outcomes[ATTEMPTS:], result.attempts
    took = [round(nxt.start - cur.start, 3) for cur, nxt in zip(result.attempts[ATTEMPTS:], result.attempts[ATTEMPTS + 1:])]
    assert max(took) < 0.25, f"refused attempts took {took} s (timeout 0.3): not reset at once"
    assert set_full(lab) == 3, f"set_full {set_full(lab)} for 3 refused attempts"
    rid = rid_of(lab, [BF])
    assert not memory(lab, tier_set(rid, 4, 1)), "no memory without a ban"
