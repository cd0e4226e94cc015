"""The standalone agent never enforces a half-written state file (issue 8, item 9b).

A state file rewritten in place is, between the writer's first and last write, a prefix of the
new file; cut before ``ports:`` it is a valid state that protects no port, and the agent used
to load it and unprotect the port until the rest arrived (~2 s). Here a running agent watches a
lab VM whose port is capped at 2 concurrent connections; the file is rewritten in place in two
writes with a pause between them (less than the agent's settle time, several agent passes
long); throughout, the kernel's dispatch map is polled and a third connection is tried again
and again: the port must stay in the map and the cap must hold, and the new state (a cap of 3)
must be applied once the file is complete.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time

import pytest
import yaml

from connguard.agent.standalone import SETTLE_SECONDS
from nsenforce import RunningAgent, state_dict, wait_for

pytestmark = pytest.mark.netns


def dispatch(lab) -> dict:
    """The to_vm verdict map as the kernel holds it now: {ifname: jump target}."""
    out = subprocess.run(["ip", "netns", "exec", lab.host, "nft", "-j", "list", "map", "inet", "connguard", "to_vm"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    body = next(i["map"] for i in json.loads(out.stdout)["nftables"] if "map" in i)
    return {e[0]: e[1]["jump"]["target"] for e in body.get("elem", []) or []}


CAP = {"type": "connection_limit", "direction": "ingress", "max_connections": 2}
RATE = {"type": "connection_rate_limit", "direction": "ingress", "max_cps": 1000}


def chain_comments(lab, chain: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", lab.host, "nft", "-j", "list", "chain", "inet", "connguard", chain],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return [i["rule"].get("comment", "") for i in json.loads(out.stdout)["nftables"] if "rule" in i]


def test_a_state_file_rewritten_in_place_is_never_enforced_half_written(lab, tmp_path):
    vm, client = lab.vms[0], lab.clients[0]
    # the new state adds a rate limit; the cap of 2 concurrent connections stays
    new_text = yaml.safe_dump(state_dict(lab, [CAP, RATE]))
    cut = new_text.index("ports:")
    half = new_text[:cut]
    # the first write alone is a valid state that protects nothing: what the old agent loaded
    assert yaml.safe_load(half)["policies"] and "ports" not in yaml.safe_load(half)
    with vm.serve(tcp=[80]), RunningAgent(lab, state_dict(lab, [CAP]), tmp_path) as ra:
        agent = ra.agent
        assert agent.settle == SETTLE_SECONDS
        chain = dispatch(lab).get(vm.tap)
        assert chain, dispatch(lab)
        new_rule = "policy p rule 1 connection_rate_limit ingress"
        assert new_rule not in chain_comments(lab, chain)
        with client.hold(vm, 80, n=2, timeout=0.5) as held:
            assert held.connected == 2, vars(held)
            assert held.open_one() != "connected", "the cap of 2 does not hold before the rewrite"

            samples: list[tuple[float, bool]] = []   # (time, port in the dispatch map)
            probes: list[tuple[float, str]] = []     # (time the attempt started, outcome)
            stop = threading.Event()

            def watch_map():
                while not stop.is_set():
                    samples.append((time.monotonic(), vm.tap in dispatch(lab)))
                    time.sleep(0.02)

            def probe():  # a third connection, again and again: the cap must refuse every one
                while not stop.is_set():
                    started = time.monotonic()
                    probes.append((started, held.open_one()))
                    time.sleep(0.05)

            threads = [threading.Thread(target=watch_map, daemon=True), threading.Thread(target=probe, daemon=True)]
            for t in threads:
                t.start()
            inode = os.stat(ra.path).st_ino
            pause = SETTLE_SECONDS / 2  # several agent passes (interval 0.2 s), less than the settle time
            with open(ra.path, "w") as f:  # in place: truncate, write half, pause, write the rest
                f.write(half)
                f.flush()
                os.fsync(f.fileno())
                started = time.monotonic()
                time.sleep(pause)
                f.write(new_text[cut:])
            complete = time.monotonic()
            assert os.stat(ra.path).st_ino == inode, "the file was not rewritten in place"
            try:
                wait_for(lambda: new_rule in chain_comments(lab, chain), SETTLE_SECONDS + 10,
                         what="the complete new state to be applied")
                applied = time.monotonic()
                time.sleep(0.3)  # and a few samples after it
            finally:
                stop.set()
                for t in threads:
                    t.join(10)

            during = [t for t, _ in samples if started <= t <= complete]
            missing = [round(t - started, 2) for t, ok in samples if not ok]
            assert len(during) >= 3, f"only {len(during)} map samples while the file was half written"
            assert not missing, f"the port left the dispatch map at {missing} s after the first write"
            admitted = [(round(t - started, 2), o) for t, o in probes if o == "connected"]
            half_written = [o for t, o in probes if started <= t <= complete]
            assert half_written, "no connection was tried while the file was half written"
            assert not admitted, f"{len(admitted)} of {len(probes)} connections over the cap got in: {admitted[:5]}"
            assert held.alive() == 2
            took = applied - complete
            assert took < SETTLE_SECONDS + 5, f"the new state took {took:.1f} s to apply once complete"
        assert agent.last_error is None, agent.last_error
        assert len(agent.loaded.state.policies[0].rules) == 2


def test_a_file_renamed_into_place_is_applied_and_a_bad_one_changes_nothing(lab, tmp_path, caplog):
    """Writing by rename (the recommended way) is applied within the settle time plus a pass;
    a complete but invalid file is reported and the last good state stays enforced."""
    vm = lab.vms[0]
    with RunningAgent(lab, state_dict(lab, [CAP]), tmp_path) as ra:
        agent = ra.agent
        before = dispatch(lab)
        assert before.get(vm.tap), before
        written = time.monotonic()
        ra.write(state_dict(lab, [CAP, RATE]))
        wait_for(lambda: len(agent.loaded.state.policies[0].rules) == 2 and agent.applier.applied == agent.loaded.ruleset,
                 SETTLE_SECONDS + 10, what="the renamed file to be applied")
        took = time.monotonic() - written
        assert took >= SETTLE_SECONDS * 0.9, f"applied after {took:.2f} s, before the file settled"
        applied = agent.applier.applied
        # (the agent logs the rejection; its last_error is cleared by the next good apply of the
        # old state in the same pass)
        with caplog.at_level(logging.ERROR, logger="connguard.agent"):
            with open(ra.path, "w") as f:
                f.write(yaml.safe_dump(state_dict(lab, [CAP])).replace("interface_name: ", "interface_name: bad name "))
            wait_for(lambda: [r for r in caplog.records if "state file rejected" in r.getMessage()],
                     SETTLE_SECONDS + 10, what="the bad file to be reported")
        [record] = [r for r in caplog.records if "state file rejected" in r.getMessage()]
        assert "ports[0].interface_name" in record.getMessage(), record.getMessage()
        assert agent.applier.applied == applied and dispatch(lab).get(vm.tap), dispatch(lab)
