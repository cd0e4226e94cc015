"""Drift repair sees every tampering, and observation cannot be stalled (issue 8, items 8, 10).

Someone with root in the host namespace rewrites our table the way an attacker would: rules
replaced by ``accept`` under the same comment, a dispatch verdict changed, a rule's number
changed, a chain deleted, a foreign rule inserted, an allowlist element added. Each time: real
TCP traffic shows the protection gone, ``connguard status`` still answers, and a running agent
puts the protection back within its drift interval (traffic refused again). Then every dynamic
set is filled to its size and ``status`` and a drift check are timed.
"""

import json
import os
import re
import resource
import subprocess
import time
from contextlib import contextmanager

import pytest

from nsenforce import RunningAgent, module_lab, state_dict, wait_for

pytestmark = pytest.mark.netns

CAP = 2  # concurrent connections per remote
CAP_RULE = {"type": "connection_limit", "direction": "ingress", "scope": "remote_ip", "max_connections": CAP}
DRIFT = 2.0  # seconds between the agent's drift checks
TRIES = 6

lab = module_lab(vms=1, clients=1, sources=4, vm_tcp=(80,))
FRESH_CONNGUARD = True


def nft(lab, *args, stdin=None):
    return lab.exec(lab.host, ["nft", *args], input=stdin)


def rules_of(lab, chain):
    """(handle, text without comment and handle, comment) of each rule of our chain."""
    out = nft(lab, "-a", "list", "chain", "inet", "connguard", chain).stdout
    found = []
    for line in out.splitlines():
        m = re.match(r'\s*(.*?)\s*comment "(.*)" # handle (\d+)$', line)
        if m:
            found.append((int(m.group(3)), m.group(1), m.group(2)))
    return found


def policy_chain(lab, prefix="in_"):
    out = nft(lab, "-j", "list", "chains").stdout
    names = [c["chain"]["name"] for c in json.loads(out)["nftables"]
             if "chain" in c and c["chain"]["table"] == "connguard" and c["chain"]["name"].startswith(prefix)]
    assert len(names) == 1, names
    return names[0]


def replace_rules(lab, chain, pick, rewrite) -> int:
    """Replace the rules ``pick(comment, text)`` chooses by ``rewrite(text)``, same comment."""
    batch = [f'replace rule inet connguard {chain} handle {h} {rewrite(text)} comment "{c}"'
             for h, text, c in rules_of(lab, chain) if pick(c, text)]
    assert batch, f"no rule of {chain} picked: {rules_of(lab, chain)}"
    done = nft(lab, "-f", "-", stdin="\n".join(batch) + "\n")
    assert done.returncode == 0, done.stderr
    return len(batch)


def connected(lab, source=None) -> int:
    cl, vm = lab.clients[0], lab.vms[0]
    with cl.hold(vm, 80, TRIES, timeout=0.8, source=source) as h:
        return h.connected


def status(lab, data_dir):
    env = {**os.environ, "CONNGUARD_DATA_DIR": str(data_dir)}
    proc = subprocess.run(["connguard", "status", "--netns", lab.host, "-f", "json"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"status failed on a tampered table: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


@contextmanager
def agent(lab, tmp_path, state):
    """A running agent whose status file ``connguard status`` finds (CONNGUARD_DATA_DIR)."""
    data = tmp_path / "data"
    (data / "agent").mkdir(parents=True)
    os.symlink(tmp_path / "agent", data / "agent" / lab.host)
    with RunningAgent(lab, state, tmp_path, drift_interval=DRIFT) as ra:
        yield ra, data


@contextmanager
def drift_checks_held(ra):
    """Hold the agent's drift check while the tampering is verified with traffic (the agent
    would otherwise repair it before the test could see it work); on leaving, the next check
    comes at most one drift interval later, as in normal running."""
    ra.agent._next_drift = float("inf")
    time.sleep(ra.agent.interval)  # a pass that had already started its check has ended
    ra.agent._next_drift = float("inf")
    try:
        yield
    finally:
        ra.agent._next_drift = ra.agent.clock() + DRIFT


def repaired(ra, lab, check, what):
    """Time from releasing the drift check until traffic shows the protection back."""
    started = time.monotonic()
    before = ra.agent.last_apply and ra.agent.last_apply["at"]
    wait_for(lambda: ra.agent.last_apply and ra.agent.last_apply["at"] != before, DRIFT + 5,
             what=f"a full sync after {what}")
    took = time.monotonic() - started
    assert ra.agent.last_apply["mode"] == "full", ra.agent.last_apply
    assert took <= DRIFT + 1.5, f"{what}: repaired {took:.2f} s after checks resumed, drift interval {DRIFT} s"
    assert check(), f"{what}: protection not back after repair"
    return took


def _ban_rules(lab):
    return replace_rules(lab, "bans4", lambda c, t: c.startswith("ban "), lambda t: "accept")


def _refusals(lab):
    # with allowlist entries the per-remote stages live in the policy's remote_ chain
    # (enforce-mode refusals end in a jump to the refuse chains, which record the offender)
    return replace_rules(lab, policy_chain(lab, "remote_in_"),
                         lambda c, t: "connection_limit" in c and ("reject" in t or "drop" in t or "jump refuse_" in t),
                         lambda t: "accept")


def _numbers(lab):
    return replace_rules(lab, policy_chain(lab, "remote_in_"), lambda c, t: "ct count over" in t,
                         lambda t: re.sub(r"ct count over \d+", "ct count over 50", t))


def _dispatch(lab):
    tap = lab.vms[0].tap
    done = nft(lab, "-f", "-", stdin=f'delete element inet connguard to_vm {{ "{tap}" }}\n'
                                     f'add element inet connguard to_vm {{ "{tap}" : accept }}\n')
    assert done.returncode == 0, done.stderr


def _chain_deleted(lab):
    done = nft(lab, "-f", "-", stdin="flush chain inet connguard forward\ndelete chain inet connguard forward\n")
    assert done.returncode == 0, done.stderr


def _foreign_rule(lab):
    done = nft(lab, "insert", "rule", "inet", "connguard", "forward", "accept")
    assert done.returncode == 0, done.stderr


def _allowlisted(lab):
    done = nft(lab, "add", "element", "inet", "connguard", "allow4", f"{{ {lab.clients[0].ipv4} }}")
    assert done.returncode == 0, done.stderr


# (tampering, who is tested: None = the client's own address under the cap, "banned" = a
# state-file-banned source that must get 0 connections, "fresh" = remotes new to the buckets)
TAMPERINGS = {
    "ban rules replaced by accept": (_ban_rules, "banned"),
    "cap rules replaced by accept": (_refusals, None),
    "cap number changed": (_numbers, "fresh"),
    "dispatch element set to accept": (_dispatch, None),
    "base chain deleted": (_chain_deleted, None),
    "foreign accept inserted": (_foreign_rule, None),
    "allowlist element added": (_allowlisted, None),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_tampering_is_repaired_within_the_drift_interval(lab, tmp_path, name):
    tamper, who = TAMPERINGS[name]
    cl, vm = lab.clients[0], lab.vms[0]
    banned = cl.extra_ipv4[0]
    state = state_dict(lab, [CAP_RULE], allowlist=[{"remote_ip_prefix": "192.0.2.0/24"}],
                       bans=[{"ip_address": banned, "interface_name": vm.tap, "seconds": 600}])
    # A conncount or rate bucket carries the numbers of the rule that created it: a tampered
    # number shows on a remote that gets its bucket while the rule is tampered, and that bucket
    # would keep it after the repair, had the repair not emptied the rule's bucket sets.
    during, after = (cl.extra_ipv4[1], cl.extra_ipv4[2]) if who == "fresh" else (None, None)
    source = banned if who == "banned" else during
    protected = (lambda: connected(lab, banned) == 0) if who == "banned" else (lambda: connected(lab) == CAP)
    repaired_check = (lambda: connected(lab, during) == CAP and connected(lab, after) == CAP) \
        if who == "fresh" else protected
    with agent(lab, tmp_path, state) as (ra, data):
        assert protected(), f"{name}: not protected before the tampering"
        with drift_checks_held(ra):
            tamper(lab)
            through = connected(lab, source)
            assert through > (0 if who == "banned" else CAP), \
                f"{name}: the tampering did not open anything ({through}/{TRIES} connected), the test proves nothing"
            seen = status(lab, data)  # a tampered table is shown, not a traceback
            assert seen["enforcing"] is True and [p["interface_name"] for p in seen["ports"]] == [vm.tap], seen
            assert [(b["ip_address"], b["interface_name"]) for b in seen["bans"]] == [(banned, vm.tap)], seen["bans"]
            if name == "dispatch element set to accept":
                assert any(vm.tap in p and "accept" in p for p in seen["problems"]), seen["problems"]
        took = repaired(ra, lab, repaired_check, name)
        assert ra.agent.applier.drift() == [], "drift remains after the repair"
        after = status(lab, data)
        assert after["enforcing"] is True and after["problems"] == [], after["problems"]
        assert [p["interface_name"] for p in after["ports"]] == [vm.tap]
        print(f"{name}: {through}/{TRIES} through while tampered; repaired {took:.2f} s after drift checks resumed (interval {DRIFT} s)")


def test_traffic_and_full_sets_cause_no_false_drift(lab, tmp_path):
    """Counters, meters and bans the packet path writes are not drift: no repair while traffic
    flows and a ban is added."""
    state = state_dict(lab, [CAP_RULE, {"type": "brute_force", "profile": "custom", "protocol": "tcp",
                                        "port_range_min": 80, "max_attempts": 1, "window": 60, "ban_seconds": 60},
                             {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 2},
                             {"type": "connection_rate_limit", "direction": "ingress", "scope": "port", "max_cps": 50}])
    with agent(lab, tmp_path, state) as (ra, _):
        first = ra.agent.last_apply["at"]
        # each source completes CAP handshakes (the rest are refused at the cap, and a refused SYN
        # is no login attempt): over max_attempts 1, so each is banned
        through = [connected(lab, source) for source in lab.clients[0].extra_ipv4[:3]]
        assert ra.agent.book.bans, f"no ban from {through} connections: the ban path was not exercised"
        assert ra.agent.applier.drift() == []
        time.sleep(2 * DRIFT + 0.5)
        assert ra.agent.last_apply["at"] == first, f"a repair ran without tampering: {ra.agent.last_apply}"


def fill(lab, name, n, key) -> int:
    """Bulk-add ``n`` elements to a set with nft (a size test; the packet path is not needed
    to make a set hold elements), or until the kernel refuses more (ENFILE: the set is full)."""
    for start in range(0, n, 50_000):
        elems = ", ".join(key(i) for i in range(start, min(n, start + 50_000)))
        done = nft(lab, "-f", "-", stdin=f"add element inet connguard {name} {{ {elems} }}\n")
        if "Too many open files in system" in done.stderr and start > n // 2:
            return start  # the set is at its size: what is in it came from elsewhere
        assert done.returncode == 0, f"{name} at {start}: {done.stderr[:300]}"
    return n


def _ip(i):
    return f"10.{100 + (i >> 16) % 100}.{(i >> 8) & 255}.{i & 255}"


def test_status_and_drift_stay_under_a_second_with_every_dynamic_set_full(lab, tmp_path):
    vm = lab.vms[0]
    rules = [{"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20},
             CAP_RULE, {"type": "brute_force", "profile": "ssh"}]
    state = state_dict(lab, rules, enforcement="enforce")
    with agent(lab, tmp_path, state) as (ra, data):
        # The agent's ban loop reads the ban sets whole every pass (not this helper's to
        # change): stopped here so that what is timed is status and the drift check alone.
        ra.agent.stop()
        ra.thread.join(30)
        sets = {s.name: s for s in ra.agent.loaded.ruleset.sets}
        full = {}
        for s in sets.values():
            if s.long_lived and s.size and s.size > 65_536 and "ipv4_addr" in s.type and len(s.type) == 2:
                timeout = " timeout 1h" if "timeout" in s.flags or s.timeout else ""
                full[s.name] = fill(lab, s.name, s.size, lambda i: f'"{vm.tap}" . {_ip(i)}{timeout}')
        roles = {"ban4", "offenders4"} | {n for n, s in sets.items() if s.role == "bf_meter" and "ipv4_addr" in s.type}
        assert roles <= set(full), f"not filled: {roles - set(full)}"
        assert any(n.startswith("r") for n in full) and any(n.startswith("c") for n in full), full

        start = time.monotonic()
        problems = ra.agent.applier.drift()
        drift_s = time.monotonic() - start
        assert problems == [], problems

        walls, cpus = [], []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.monotonic()
            seen = status(lab, data)
            walls.append(time.monotonic() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        assert seen["enforcing"] and "ban4" in seen["truncated"], seen["truncated"]
        assert 0 < len(seen["bans"]) < 5_000, len(seen["bans"])

        from connguard.nft import NftCli
        from connguard.nft.applier import read_inventory

        start = time.monotonic()
        inv = read_inventory(NftCli(lab.host))
        inventory_s = time.monotonic() - start
        assert set(full) <= set(inv.sets)
        load = os.getloadavg()[0]
        figures = (f"sets full: {full}; drift check {drift_s:.3f} s; status -f json (whole process, 3 runs) "
                   f"{', '.join(f'{w:.2f}' for w in walls)} s wall, {', '.join(f'{c:.2f}' for c in cpus)} s CPU; "
                   f"full-sync inventory {inventory_s:.3f} s; load average {load:.1f} on {os.cpu_count()} CPUs")
        print(figures)
        assert drift_s < 1.0, figures
        assert inventory_s < 1.0, figures
        # The whole process, best of three: what it costs itself (CPU) is under a second
        # whatever the machine; its wall time also counts every other process on the CPUs.
        assert min(cpus) < 1.0, figures
        assert min(walls) < 1.0 or load > os.cpu_count(), figures
