"""``connguard ban delete ADDRESS --netns NS`` on a standalone host: the ban leaves the kernel
and the agent's ban book, so the running agent does not restore it, and real traffic from the
unbanned client gets through (and keeps getting through) while the other bans stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from connguard.cli.main import cli
from nsenforce import bans_of, state_dict, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]
RATE = {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 500}


def connects(client, vm) -> bool:
    with client.connect_and_hold(vm, 80, timeout=0.5) as conn:
        return conn.is_connected


def book(tmp_path, netns) -> set[tuple]:
    try:
        data = json.loads((tmp_path / "agent" / netns / "bans.json").read_text())
    except (OSError, ValueError):
        return set()
    return {(b["interface_name"], b["ip_address"]) for b in data["bans"]}


def test_ban_delete_netns_lifts_in_kernel_and_book(lab_factory, tmp_path):
    lab = lab_factory(vms=1, clients=2, sources=0)
    vm, cl0, cl1 = lab.vms[0], lab.clients[0], lab.clients[1]
    state = state_dict(lab, [RATE], bans=[{"ip_address": cl0.ipv4, "interface_name": vm.tap, "seconds": 600},
                                          {"ip_address": cl1.ipv4, "interface_name": vm.tap, "seconds": 600}])
    path = tmp_path / "state.yaml"
    path.write_text(yaml.safe_dump(state))
    os.utime(path, (time.time() - 5, time.time() - 5))  # settled: loaded at once
    env = {**os.environ, "CONNGUARD_DATA_DIR": str(tmp_path)}
    agent = subprocess.Popen([*CLI, "agent", "--state-file", str(path), "--netns", lab.host, "--interval", "0.2"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with vm.serve(tcp=[80]):
            wait_for(lambda: {(vm.tap, cl0.ipv4), (vm.tap, cl1.ipv4)} <= book(tmp_path, lab.host), 20,
                     what="both bans in the agent's book")
            assert not connects(cl0, vm) and not connects(cl1, vm), "the banned clients got through"

            # the problem: a ban deleted from the kernel alone comes back from the book
            subprocess.run(["ip", "netns", "exec", lab.host, "nft", "delete", "element", "inet", "connguard", "ban4",
                            f"{{ {vm.tap} . {cl1.ipv4} }}"], check=True)
            wait_for(lambda: bans_of(lab, cl1.ipv4), 5, what="the agent to restore a ban deleted in the kernel only")

            r = CliRunner().invoke(cli, ["ban", "delete", cl0.ipv4, "--netns", lab.host], env={"CONNGUARD_DATA_DIR": str(tmp_path)})
            assert r.exit_code == 0, r.output
            assert f"lifted {cl0.ipv4} on port {vm.tap} in netns {lab.host}" in r.output, r.output
            assert bans_of(lab, cl0.ipv4) == []
            wait_for(lambda: connects(cl0, vm), 5, what="the unbanned client to connect")
            time.sleep(2.0)  # ten agent passes
            assert bans_of(lab, cl0.ipv4) == [], "the agent restored the lifted ban"
            assert (vm.tap, cl0.ipv4) not in book(tmp_path, lab.host), book(tmp_path, lab.host)
            assert connects(cl0, vm), "the unbanned client is refused again"
            assert bans_of(lab, cl1.ipv4) and not connects(cl1, vm), "the other ban was lifted too"

            # with no agent running, the book is rewritten by the command itself, and a
            # restarted agent restores nothing
            agent.terminate()
            agent.wait(15)
            r = CliRunner().invoke(cli, ["ban", "delete", cl1.ipv4, "203.0.113.77", "--netns", lab.host],
                                   env={"CONNGUARD_DATA_DIR": str(tmp_path)})
            assert r.exit_code == 1, r.output
            assert f"Error: 203.0.113.77: no ban of it in netns {lab.host}" in r.output, r.output
            assert r.output.strip().endswith("Error: failed to delete 1 of 2 bans"), r.output
            assert (vm.tap, cl1.ipv4) not in book(tmp_path, lab.host)
            agent = subprocess.Popen([*CLI, "agent", "--state-file", str(path), "--netns", lab.host,
                                      "--interval", "0.2"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
            time.sleep(2.0)
            assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
            assert bans_of(lab, cl1.ipv4) == [] and bans_of(lab, cl0.ipv4) == [], "a restarted agent put a lifted ban back"
            assert connects(cl1, vm) and connects(cl0, vm)
    finally:
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
