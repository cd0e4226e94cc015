"""Multi-host labs: N host namespaces behind a shared edge, real traffic (root, namespaces).

The module's lab has 3 hosts with 2 VMs each (VMs 0-1 on host 0, 2-3 on host 1, 4-5 on host 2)
and 2 clients, each VM running an echo server on port 80.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys

import pytest
import yaml

from connguard.exceptions import LabError
from connguard.lab import Lab
from connguard.lab import netns as nsx
from connguard.lab.build import plan
from connguard.lab.spawn import procs_dir
from connguard.lab.topology import STATE_DIR
from nsenforce import state_dict, wait_for, within

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

HOSTS, PER_HOST = 3, 2
TABLE = "cglabmh"  # our own counting table in the lab's host namespaces, never connguard's


def ip_netns_list(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix + "-")]


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")


CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]


def connguard(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real CLI, as its own process (inherits PYTHONPATH: this worktree's package)."""
    return subprocess.run([*CLI, *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def lab():
    needs_root()
    built = Lab.up(hosts=HOSTS, vms=PER_HOST, clients=2, sources=2)
    try:
        with contextlib.ExitStack() as stack:
            for vm in built.vms:
                stack.enter_context(vm.serve(tcp=[80]))
            yield built
    finally:
        built.down()


# ------------------------------------------------------------------ address plan (pure)
def test_plan_gives_unique_names_and_addresses_at_the_limits():
    hosts, vms, cl, edge = plan("cglab000000", 16, 12, 200, 240)
    assert (len(hosts), len(vms), len(cl), edge) == (16, 192, 200, "cglab000000-edge")
    addrs = [a for n in (*hosts[1:], *vms) for a in (n.ipv4, n.ipv6)]
    addrs += [a for c in cl for a in (c.ipv4, c.ipv6, *c.extra_ipv4, *c.extra_ipv6)]
    assert len(addrs) == len(set(addrs)), "an address is used twice"
    for a in addrs:
        ipaddress.ip_address(a)
    names = [n.netns for n in (*hosts, *vms, *cl)] + [edge]
    assert len(names) == len(set(names))
    taps = [v.tap for v in vms]
    assert len(taps) == len(set(taps)) and max(len(t) for t in taps) <= 15
    assert [v.host for v in vms[:13]] == [0] * 12 + [1]
    # one host keeps today's layout: no edge, "<prefix>-host", VM i on it
    hosts, vms, _, edge = plan("cglab000000", 1, 3, 1, 0)
    assert edge is None and [h.netns for h in hosts] == ["cglab000000-host"]
    assert [(v.tap, v.ipv4, v.host) for v in vms] == [("tapvm0", "10.77.0.2", 0), ("tapvm1", "10.77.1.2", 0),
                                                      ("tapvm2", "10.77.2.2", 0)]


@pytest.mark.parametrize("kw, field", [({"hosts": 0}, "hosts"), ({"hosts": 17}, "hosts"),
                                        ({"hosts": 3, "vms": 67}, "hosts x vms"),
                                        ({"hosts": 2, "vms": 0}, "vms")])
def test_limits_are_checked_before_anything_is_built(kw, field):
    needs_root()
    prefix = "cglab" + os.urandom(3).hex()
    with pytest.raises(LabError, match=field) as err:
        Lab.up(prefix=prefix, clients=1, sources=0, **kw)
    assert ip_netns_list(prefix) == [], str(err.value)


# ------------------------------------------------------------------ layout and reachability
def test_layout_hosts_vms_and_taps(lab):
    assert sorted(ip_netns_list(lab.prefix)) == sorted(lab.namespaces())
    assert len(lab.namespaces()) == 1 + HOSTS + HOSTS * PER_HOST + 2
    assert lab.host == lab.hosts[0].netns == f"{lab.prefix}-host0" and lab.edge == f"{lab.prefix}-edge"
    assert [[v.index for v in h.vms] for h in lab.hosts] == [[0, 1], [2, 3], [4, 5]]
    for h in lab.hosts:
        links = subprocess.run(["ip", "-n", h.netns, "-o", "link"], capture_output=True, text=True,
                               check=True).stdout
        present = {v.tap for v in lab.vms if f" {v.tap}@" in links}
        assert present == {v.tap for v in h.vms}, (h.netns, links)
        assert "uplink@" in links and "ext0" not in links  # clients hang off the edge
    loaded = Lab.load(lab.prefix)
    assert [(h.netns, h.ipv4) for h in loaded.hosts] == [(h.netns, h.ipv4) for h in lab.hosts]
    assert [v.host for v in loaded.vms] == [0, 0, 1, 1, 2, 2] and loaded.edge == lab.edge


def test_every_client_reaches_every_vm_over_ipv4_and_ipv6(lab):
    failures = []
    for cl in lab.clients:
        for vm in lab.vms:
            for ipv6 in (False, True):
                # 10 connections each; 0.5 s: no handshake may need a SYN retransmit (1 s)
                r = cl.flood(vm, 80, rate=20, duration=0.5, ipv6=ipv6, timeout=0.5)
                if r.admitted != r.attempted or r.attempted != 10:
                    failures.append((cl.netns, vm.netns, ipv6, r.attempted, r.admitted, r.timeout))
    src = lab.clients[1].extra_ipv6[1]  # extra sources are routed back through the edge
    r = lab.clients[1].flood(lab.vms[5], 80, rate=20, duration=0.5, sources=[src], ipv6=True)
    if r.admitted != 10:
        failures.append((src, lab.vms[5].netns, r.admitted))
    assert failures == [], f"(client, vm, ipv6, attempted, admitted, timeouts): {failures}"


def _load_counting_table(lab) -> None:
    ruleset = f"""table inet {TABLE} {{
  chain counting {{
    type filter hook forward priority 0; policy accept;
    meta nfproto ipv4 tcp dport 80 ct state new counter comment "v4"
    meta nfproto ipv6 tcp dport 80 ct state new counter comment "v6"
  }}
}}"""
    for h in lab.hosts:
        h.exec(["nft", "delete", "table", "inet", TABLE])
        proc = h.exec(["nft", "-f", "-"], input=ruleset)
        assert proc.returncode == 0, proc.stderr
        h.conntrack_flush()


def _counted(host) -> dict[str, int]:
    proc = host.exec(["nft", "-j", "list", "chain", "inet", TABLE, "counting"])
    assert proc.returncode == 0, proc.stderr
    out = {}
    for item in json.loads(proc.stdout)["nftables"]:
        rule = item.get("rule")
        if rule and rule.get("comment"):
            out[rule["comment"]] = sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return out


def _ct_entries(host, daddr: str) -> int:
    proc = host.exec(["conntrack", "-L", "-d", daddr, "-p", "tcp", "--dport", "80"])
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("tcp"))


@pytest.fixture
def counting(lab):
    _load_counting_table(lab)
    yield
    for h in lab.hosts:
        h.exec(["nft", "delete", "table", "inet", TABLE])


@pytest.mark.parametrize("k", range(HOSTS))
def test_traffic_to_a_vm_is_forwarded_by_its_host_only(lab, counting, k):
    vm = lab.hosts[k].vms[1]
    r4 = lab.clients[0].flood(vm, 80, rate=50, duration=1)
    r6 = lab.clients[1].flood(vm, 80, rate=30, duration=1, ipv6=True)
    assert (r4.admitted, r6.admitted) == (50, 30), (r4.series, r6.series)
    seen = {h.index: _counted(h) for h in lab.hosts}
    expected = {h.index: ({"v4": 50, "v6": 30} if h.index == k else {"v4": 0, "v6": 0}) for h in lab.hosts}
    assert seen == expected, f"new connections counted in each host's forward hook: {seen}"
    ct = {h.index: (_ct_entries(h, vm.ipv4), _ct_entries(h, vm.ipv6)) for h in lab.hosts}
    assert ct[k] == (50, 30) and all(ct[i] == (0, 0) for i in ct if i != k), f"conntrack entries: {ct}"


def test_vm_on_host1_reaches_vm_on_host2_through_the_edge(lab, counting):
    src, dst = lab.hosts[1].vms[0], lab.hosts[2].vms[0]
    r4 = src.flood(dst, 80, rate=40, duration=1)
    r6 = src.flood(dst, 80, rate=20, duration=1, ipv6=True)
    assert (r4.admitted, r6.admitted) == (40, 20), (r4.series, r6.series)
    seen = {h.index: _counted(h) for h in lab.hosts}
    # leaving host 1 (egress of its VM) and entering host 2; host 0 never sees it
    assert seen == {0: {"v4": 0, "v6": 0}, 1: {"v4": 40, "v6": 20}, 2: {"v4": 40, "v6": 20}}, seen
    route = lab.exec(lab.edge, ["ip", "route", "get", dst.ipv4]).stdout
    assert f"via {lab.hosts[2].ipv4}" in route, route


# ------------------------------------------------------------------ enforcement on one host
RATE, OFFERED, SECONDS = 40, 200, 7


def test_apply_in_host2_limits_host2s_vm_only(lab, tmp_path):
    h2 = lab.hosts[2]
    target = h2.vms[0]
    state = state_dict(lab, [{"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip",
                              "max_cps": RATE}], vms=(target.index,))
    path = tmp_path / "host2.yaml"
    path.write_text(yaml.safe_dump(state))
    try:
        proc = connguard("apply", str(path), "--netns", h2.netns, env={"CONNGUARD_DATA_DIR": str(tmp_path)})
        assert proc.returncode == 0, proc.stderr
        tables = {h.index: h.exec(["nft", "list", "table", "inet", "connguard"]).returncode == 0
                  for h in lab.hosts}
        assert tables == {0: False, 1: False, 2: True}, f"hosts holding connguard's table: {tables}"

        r = lab.clients[0].flood(target, 80, rate=OFFERED, duration=SECONDS)
        rate = r.admitted_rate(skip=1)
        print(f"host 2 {target.tap}: admitted {rate:.1f}/s of {r.offered_rate:.0f}/s offered, max_cps {RATE}")
        assert within(rate, RATE), f"admitted {rate:.1f}/s on {target.tap}, max_cps {RATE}: {r.series}"
        assert r.attempted >= 0.9 * OFFERED * SECONDS, f"the flood itself fell short: {r.attempted}"
        # the same flood at the VMs of hosts 0 and 1, and at host 2's unprotected VM: unlimited
        for vm in (lab.hosts[0].vms[0], lab.hosts[1].vms[1], h2.vms[1]):
            free = lab.clients[0].flood(vm, 80, rate=OFFERED, duration=2)
            print(f"host {vm.host} {vm.tap}: admitted {free.admitted} of {free.attempted}")
            assert free.admitted >= 0.9 * free.attempted, \
                f"{vm.tap} (host {vm.host}): admitted {free.admitted} of {free.attempted}: {free.series}"
    finally:
        h2.exec(["nft", "delete", "table", "inet", "connguard"])
        h2.conntrack_flush()


# ------------------------------------------------------------------ processes and removal
def _agent_state(lab, host) -> dict:
    return state_dict(lab, [{"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip",
                             "max_cps": 5}], vms=[v.index for v in host.vms])


def test_each_host_runs_its_own_agent_and_lab_down_from_another_process_reaps_them(tmp_path):
    needs_root()
    lab = Lab.up(hosts=2, vms=1, clients=0, sources=0)
    try:
        agents = []
        for h in lab.hosts:
            path = tmp_path / f"{h.name}.yaml"
            path.write_text(yaml.safe_dump(_agent_state(lab, h)))
            env = {"CONNGUARD_DATA_DIR": str(tmp_path / h.name)}
            argv = [*CLI, "agent", "--state-file", str(path),
                    "--interval", "0.2"]
            # host 0's agent runs inside its namespace; host 1's in ours with --netns (the way an
            # agent reaches a server on this machine's loopback)
            if h.index == 0:
                agents.append(h.spawn(argv, name="agent", env=env))
            else:
                agents.append(h.spawn([*argv, "--netns", h.netns], name="agent", inside=False, env=env))
        for h in lab.hosts:
            wait_for(lambda: h.vms[0].tap in h.exec(["nft", "list", "table", "inet", "connguard"]).stdout,
                     30, what=f"{h.name}'s agent to protect {h.vms[0].tap}")
            other = lab.hosts[1 - h.index].vms[0].tap
            assert other not in h.exec(["nft", "list", "table", "inet", "connguard"]).stdout
        assert sorted(r["pid"] for r in lab.processes()) == sorted(a.pid for a in agents)
        assert all(a.alive() for a in agents), [a.error_text() for a in agents]

        proc = connguard("lab", "down", lab.prefix)
        assert proc.returncode == 0 and "ended 2 processes" in proc.stdout, proc.stdout + proc.stderr
        for a in agents:
            wait_for(lambda: not a.alive(), 5, what=f"agent {a.pid} ({a.netns}) to end")
        assert ip_netns_list(lab.prefix) == []
        assert not os.path.exists(procs_dir(lab.prefix))
    finally:
        lab.down()


def test_a_server_in_the_edge_is_reached_by_every_host_at_its_edge_address():
    needs_root()
    with Lab.up(hosts=3, vms=1, clients=0, sources=0) as lab:
        server = lab.spawn([sys.executable, "-m", "http.server", "--bind", "0.0.0.0", "9696"],
                           name="server", netns=lab.edge)
        assert [r["name"] for r in lab.processes()] == ["server"]
        fetch = ("import sys, urllib.request; "
                 "print(urllib.request.urlopen(sys.argv[1], timeout=2).status)")
        for h in lab.hosts:
            url = f"http://{h.edge4}:9696/"
            wait_for(lambda: h.exec([sys.executable, "-c", fetch, url]).stdout.strip() == "200", 10,
                     what=f"{h.name} to fetch {url}")
        with pytest.raises(LabError, match="not a namespace of lab"):
            lab.spawn(["true"], name="x", netns="cglab000000-edge")
    assert server.proc.poll() is not None, "the edge's server outlived the lab"


def _links(host) -> str:
    return host.exec(["ip", "-o", "link"]).stdout


def test_a_vm_added_to_a_running_host_gets_a_tap_there_and_is_reachable():
    needs_root()
    with Lab.up(hosts=2, vms=1, clients=1, sources=0) as lab:
        vm = lab.add_vm(host=1)
        assert (vm.index, vm.tap, vm.host, vm.ipv6) == (2, "tapvm2", 1, "fd77:0:2::2")
        assert f" {vm.tap}@" in _links(lab.hosts[1]) and vm.tap not in _links(lab.hosts[0])
        assert [v.tap for v in Lab.load(lab.prefix).hosts[1].vms] == ["tapvm1", "tapvm2"]
        with vm.serve(tcp=[80]):
            for ipv6 in (False, True):
                r = lab.clients[0].flood(vm, 80, rate=20, duration=0.5, ipv6=ipv6, timeout=0.5)
                assert r.admitted == 10, (ipv6, r.series)
            r = lab.vms[0].flood(vm, 80, rate=20, duration=0.5)  # from host 0's VM
            assert r.admitted == 10, r.series
        lab.remove_vm(vm)
        assert vm.tap not in _links(lab.hosts[1]) and vm.netns not in ip_netns_list(lab.prefix)
        assert "10.77.2.0" not in lab.exec(lab.edge, ["ip", "route"]).stdout
        assert [v.index for v in Lab.load(lab.prefix).vms] == [0, 1]
        with pytest.raises(LabError, match="host must be between 0 and 1"):
            lab.add_vm(host=2)


def test_down_removes_every_namespace_even_when_the_body_raises():
    needs_root()
    with pytest.raises(RuntimeError):
        with Lab.up(hosts=3, vms=1, clients=1, sources=1) as lab:
            prefix = lab.prefix
            sleeper = lab.hosts[2].spawn(["sleep", "300"], name="sleeper", inside=False)
            assert len(ip_netns_list(prefix)) == 1 + 3 + 3 + 1
            raise RuntimeError("test body failed")
    assert ip_netns_list(prefix) == []
    assert sleeper.proc.poll() is not None, "a process spawned for the lab outlived it"
    assert not os.path.exists(os.path.join(STATE_DIR, f"{prefix}.json"))


def test_failed_multi_host_up_removes_the_partial_topology(monkeypatch):
    needs_root()
    prefix = "cglab" + os.urandom(3).hex()
    real = nsx.ip_batch

    def failing(netns, commands):
        if netns.endswith("-edge"):  # the very last step
            raise LabError("injected failure")
        return real(netns, commands)

    monkeypatch.setattr(nsx, "ip_batch", failing)
    with pytest.raises(LabError, match="injected"):
        Lab.up(hosts=2, vms=1, clients=1, sources=0, prefix=prefix)
    assert ip_netns_list(prefix) == []


def test_cli_up_list_attack_down_with_three_hosts():
    needs_root()
    proc = connguard("lab", "up", "--hosts", "3", "--vms", "2", "--clients", "1", "--sources", "1",
                     "--agent", "sleep 600", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    prefix = json.loads(proc.stdout)["prefix"]
    try:
        assert len(ip_netns_list(prefix)) == 1 + 3 + 6 + 1
        listed = connguard("lab", "list")
        row = next(line for line in listed.stdout.splitlines() if prefix in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:6] == [prefix, "3", "6", "1", "1", "3"], row  # hosts, vms, clients, sources, processes
        assert f"{prefix}-host2" in cells[6]
        shown = json.loads(connguard("lab", "list", "-f", "json").stdout)
        mine = next(lb for lb in shown if lb["prefix"] == prefix)
        assert [h["netns"] for h in mine["hosts"]] == [f"{prefix}-host{k}" for k in range(3)]
        # VM 5 lives on host 2: the attack crosses the edge and host 2
        attack = connguard("lab", "attack", "flood", "--prefix", prefix, "--vm", "5", "--rate", "50",
                           "--duration", "1", "-f", "json")
        assert attack.returncode == 0, attack.stderr
        assert json.loads(attack.stdout)["admitted"] == 50, attack.stdout
        bad = connguard("lab", "up", "--hosts", "4", "--vms", "51")
        assert bad.returncode != 0 and "hosts x vms" in bad.stderr and "Traceback" not in bad.stderr
        # an agent that cannot start fails `lab up`, and nothing of that lab is left
        other = "cglab" + os.urandom(3).hex()
        bad = connguard("lab", "up", "--hosts", "2", "--vms", "1", "--clients", "0", "--prefix", other,
                        "--agent", "sh -c 'echo no server for {host}; exit 3'")
        assert bad.returncode == 1 and "host0-agent" in bad.stderr and "status 3" in bad.stderr, bad.stderr
        assert "no server for host0" in bad.stderr and ip_netns_list(other) == []
        assert not os.path.exists(procs_dir(other)) and not os.path.exists(os.path.join(STATE_DIR, f"{other}.json"))
        down = connguard("lab", "down", prefix)
        assert down.returncode == 0, down.stderr
        assert "removed 11 namespaces" in down.stdout and "ended 3 processes" in down.stdout, down.stdout
        assert ip_netns_list(prefix) == []
        assert prefix not in connguard("lab", "list").stdout
    finally:
        Lab(prefix, [], []).down()
