"""The namespace lab and its traffic tools, with real traffic (root only)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from connguard.exceptions import LabError
from connguard.lab import Lab
from connguard.lab import netns as nsx
from connguard.lab.topology import STATE_DIR

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


def ours(prefix: str) -> list[str]:
    return [n for n in nsx.list_netns() if n.startswith(prefix + "-")]


def nft(lab: Lab, ruleset: str) -> None:
    """Load a small ruleset into THIS lab's host namespace only."""
    proc = subprocess.run(["ip", "netns", "exec", lab.host, "nft", "-f", "-"], input=ruleset,
                          text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


def test_up_builds_namespaces_and_routes_ipv4_and_ipv6(lab_factory):
    lab = lab_factory(vms=2, clients=2, sources=3)
    assert sorted(ours(lab.prefix)) == sorted(lab.namespaces())
    assert len(lab.namespaces()) == 5
    assert os.path.exists(os.path.join(STATE_DIR, f"{lab.prefix}.json"))
    loaded = Lab.load(lab.prefix)
    assert loaded.vms[1].ipv6 == "fd77:0:1::2" and loaded.clients[1].extra_ipv4[2] == "10.88.1.12"
    # the taps live in the host namespace, not in the root namespace
    links = subprocess.run(["ip", "-n", lab.host, "-o", "link"], capture_output=True,
                           text=True, check=True).stdout
    assert "tapvm0" in links and "tapvm1" in links and "ext1" in links
    # IPv6 extra sources sit in distinct /64s
    nets = {ipaddress.ip_network(f"{a}/64", strict=False) for a in lab.clients[0].extra_ipv6}
    assert len(nets) == 3 and ipaddress.ip_network("fd88:0:0::/64") not in nets

    vm0, vm1, cl0, cl1 = lab.vms[0], lab.vms[1], lab.clients[0], lab.clients[1]
    with vm0.serve(tcp=[80, 8080]), vm1.serve(tcp=[80]):
        for client, vm, port in ((cl0, vm0, 80), (cl1, vm1, 80), (cl0, vm0, 8080)):
            for ipv6 in (False, True):
                # 0.5 s: the very first handshake must not need a SYN retransmit (1 s)
                with client.connect_and_hold(vm, port, ipv6=ipv6, timeout=0.5) as conn:
                    assert conn.is_connected, (client.netns, vm.netns, ipv6)
                    assert conn.passes_data()
        # extra source addresses are routed back by the host
        for src in (cl1.extra_ipv4[2], cl1.extra_ipv6[2]):
            with cl1.connect_and_hold(vm0, 80, ipv6=":" in src, source=src) as conn:
                assert conn.passes_data(), src
        # nothing listens on 81: the VM answers with an RST
        with cl0.hold(vm0, 81, 1) as h:
            assert (h.connected, h.refused) == (0, 1)
    # egress: VM to a server in a client
    with cl0.serve(tcp=[9000]):
        with vm1.connect_and_hold(cl0, 9000, ipv6=True) as conn:
            assert conn.passes_data()


def test_down_removes_everything_even_when_the_body_raises():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(RuntimeError):
        with Lab.up(vms=1, clients=1, sources=1) as lab:
            prefix = lab.prefix
            assert len(ours(prefix)) == 3
            raise RuntimeError("test body failed")
    assert ours(prefix) == []
    assert not os.path.exists(os.path.join(STATE_DIR, f"{prefix}.json"))


def test_failed_up_removes_the_partial_topology(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    prefix = "cglab" + os.urandom(3).hex()
    real = nsx.ip_batch
    calls = []

    def failing(netns, commands):
        calls.append(netns)
        if len(calls) == 2:
            raise LabError("injected failure")
        return real(netns, commands)

    monkeypatch.setattr(nsx, "ip_batch", failing)
    with pytest.raises(LabError, match="injected"):
        Lab.up(vms=2, clients=1, prefix=prefix)
    assert ours(prefix) == []
    with pytest.raises(LabError):
        Lab.up(prefix="notalab")


def test_flood_without_ruleset_admits_everything(lab):
    with lab.vms[0].serve(tcp=[80]) as srv:
        r = lab.clients[0].flood(lab.vms[0], 80, rate=200, duration=3)
    assert r.attempted == 600
    assert r.admitted >= 0.9 * r.attempted
    assert [s.t for s in r.series] == [0, 1, 2]
    assert r.admitted_rate(skip=1) >= 180
    assert srv.stats["accepted"] >= r.admitted


def test_flood_measures_a_kernel_limit(lab):
    # 50 new connections/s towards the VM, in this lab's host namespace only
    nft(lab, """table inet cglabtest {
  chain cgfwd {
    type filter hook forward priority 0; policy accept;
    oifname "tapvm0" ct state new limit rate over 50/second drop
  }
}""")
    with lab.vms[0].serve(tcp=[80]):
        r = lab.clients[0].flood(lab.vms[0], 80, rate=250, duration=5)
    assert abs(r.admitted_rate(skip=1) - 50) <= 5, r.series
    assert r.timeout > 700  # dropped SYNs are counted once, as timeouts
    assert r.refused == 0


def test_flood_many_sources_over_ipv6(lab):
    # a counting rule makes conntrack track the flows, so their sources can be read back
    nft(lab, """table inet cglabtest {
  chain cgfwd {
    type filter hook forward priority 0; policy accept;
    ct state new counter
  }
}""")
    cl = lab.clients[0]
    with lab.vms[0].serve(tcp=[80]):
        r = cl.flood(lab.vms[0], 80, rate=100, duration=1, sources=4, ipv6=True)
    assert r.admitted == 100
    listing = lab.exec(lab.host, ["conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--dport", "80"])
    seen = {f.split("=", 1)[1] for line in listing.stdout.splitlines()
            for f in line.split() if f.startswith("src=fd88")}
    assert seen == set(cl.extra_ipv6[:4])
    assert lab.conntrack_count() >= 100


def test_hold_keeps_connections_and_detects_a_cap(lab):
    cl, vm = lab.clients[0], lab.vms[0]
    with vm.serve(tcp=[80, 8080]):
        with cl.hold(vm, 80, 30) as h:
            assert (h.connected, h.refused) == (30, 0)
            assert h.open_one() == "connected"
            assert h.alive() == 31
        # a concurrent cap of 5 with reset: the 6th is refused while the 5 stay open
        nft(lab, """table inet cglabtest {
  chain cgfwd {
    type filter hook forward priority 0; policy accept;
    oifname "tapvm0" tcp dport 8080 ct state new ct count over 5 reject with tcp reset
  }
}""")
        with cl.hold(vm, 8080, 5, ipv6=True) as h:
            assert h.connected == 5
            assert h.open_one() == "refused"
            assert h.alive() == 5


def test_bruteforce_talks_to_the_login_service(lab):
    cl, vm = lab.clients[0], lab.vms[0]
    kinds = [False] + ([True] if os.path.exists("/usr/sbin/sshd") else [])
    for fallback in kinds[::-1]:
        with vm.login_service(22, force_fallback=fallback) as svc:
            r = cl.bruteforce(vm, 22, attempts=4, source=cl.extra_ipv4[1])
            r6 = cl.bruteforce(vm, 22, attempts=2, ipv6=True)
        assert r.connected == 4 and r.banners == 4 and r6.banners == 2
        expected = "connguard-lab" if svc.kind == "fallback" else "SSH-2.0-"
        assert all(expected in a.banner for a in r.attempts + r6.attempts)
        assert [a.index for a in r.attempts] == [0, 1, 2, 3]
    r = cl.bruteforce(vm, 22, attempts=2)  # service stopped: refused
    assert r.refused == 2 and r.banners == 0


@pytest.mark.skipif(not shutil.which("hping3"), reason="hping3 is not installed")
def test_syn_flood_sends_packets(lab):
    r = lab.clients[0].syn_flood(lab.vms[0], 80, duration=1, rate_pps=500)
    assert r.sent is not None and 300 <= r.sent <= 600
    with pytest.raises(LabError, match="IPv6"):
        lab.clients[0].syn_flood(lab.vms[0], 80, duration=1, ipv6=True)


def test_cli_up_list_attack_down():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from connguard.cli.main import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["lab", "up", "--vms", "1", "--clients", "1", "--sources", "2",
                              "-f", "json"])
    assert res.exit_code == 0, res.output
    prefix = json.loads(res.output)["prefix"]
    try:
        assert len(ours(prefix)) == 3
        res = runner.invoke(cli, ["lab", "list"])
        assert res.exit_code == 0 and prefix in res.output
        res = runner.invoke(cli, ["lab", "attack", "flood-many", "--prefix", prefix,
                                  "--rate", "100", "--duration", "1", "-f", "json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["admitted"] == 100 and out["series"][0]["admitted"] == 100
        res = runner.invoke(cli, ["lab", "attack", "flood", "--prefix", prefix, "--vm", "3"])
        assert res.exit_code == 1 and "no vm 3" in res.output
        res = runner.invoke(cli, ["lab", "down", prefix])
        assert res.exit_code == 0 and "removed 3" in res.output
        assert ours(prefix) == []
        res = runner.invoke(cli, ["lab", "attack", "flood", "--prefix", prefix])
        assert res.exit_code == 1 and "no lab" in res.output
        assert "Traceback" not in res.output
    finally:
        Lab(prefix, [], []).down()
