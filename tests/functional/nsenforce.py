"""Helpers for the functional tests: enforce a state inside a lab's host namespace."""

from __future__ import annotations

import subprocess
import time

from connguard.compiler import compile_host
from connguard.model import parse_state
from connguard.nft import Applier, NftCli, observe


def module_lab(*, vms=1, clients=1, sources=2, vm_tcp=(80,), client_tcp=(), login=False, datapaths=None):
    """A module-scoped ``lab`` fixture: a lab with echo servers (and sshd on VM 0 when
    ``login``), always removed. Modules using it also set ``FRESH_CONNGUARD = True`` so that
    every test starts and ends without connguard state (tests/functional/conftest.py)."""
    import contextlib

    import pytest

    from connguard.lab import Lab

    # ``datapaths``: build the lab once per layout (routed, bridged, hybrid: lab/datapath.py),
    # the module's tests then run on each
    # (without it the fixture is not parametrised, so the other modules' test ids stay as they were)
    @pytest.fixture(scope="module", **({"params": datapaths} if datapaths else {}))
    def lab(request):
        datapath = getattr(request, "param", "routed")
        built = Lab.up(vms=vms, clients=clients, sources=sources, datapath=datapath)
        try:
            with contextlib.ExitStack() as stack:
                for node, ports in [(v, vm_tcp) for v in built.vms] + [(c, client_tcp) for c in built.clients]:
                    if ports:
                        stack.enter_context(node.serve(tcp=list(ports)))
                if login:
                    stack.enter_context(built.vms[0].login_service(22))
                yield built
        finally:
            built.down()

    return lab


def reset(lab) -> None:
    """Remove connguard's table and conntrack state from the lab host (ours only)."""
    subprocess.run(["ip", "netns", "exec", lab.host, "nft", "delete", "table", "inet", "connguard"],
                   capture_output=True)
    lab.conntrack_flush()


def state_for(lab, rules, *, enforcement="enforce", vms=(0,), **extra):
    return parse_state({
        "policies": [{"name": "p", "enforcement": enforcement, "rules": rules}],
        "ports": [{"interface_name": lab.vms[i].tap, "fixed_ips": [lab.vms[i].ipv4, lab.vms[i].ipv6], "policy": "p"}
                  for i in vms],
        **extra,
    })


def host_bridges(lab) -> dict[str, str]:
    """tap -> bridge for the lab host's bridged ports, as the agent detects them."""
    from connguard.agent.datapath import bridges, classify, masters

    return bridges(classify([v.tap for v in lab.vms], masters(lab.host)))


def port_key(lab, vm) -> str:
    """The interface a port is keyed by in the kernel: its tap, or its bridge when bridged."""
    return host_bridges(lab).get(vm.tap, vm.tap)


def enforce(lab, rules, *, applier=None, **kw) -> Applier:
    applier = applier or Applier(NftCli(lab.host))
    applier.apply(compile_host(state_for(lab, rules, **kw), bridges=host_bridges(lab)))
    return applier


def kernel(lab):
    return observe(NftCli(lab.host))


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def within(measured: float, expected: float, tolerance: float = 0.10) -> bool:
    return abs(measured - expected) <= tolerance * expected


class RunningAgent:
    """A standalone agent on a state file, in a thread, against the lab host namespace."""

    def __init__(self, lab, state: dict, workdir, *, drift_interval: float = 10.0):
        import threading

        import yaml

        from connguard.agent.standalone import StandaloneAgent

        self.path = workdir / "state.yaml"
        self.write(state)
        self.agent = StandaloneAgent(self.path, NftCli(lab.host), workdir / "agent", interval=0.2,
                                     drift_interval=drift_interval)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self._yaml = yaml

    def write(self, state: dict) -> None:
        import os

        import yaml

        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(state))
        os.replace(tmp, self.path)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.agent.applier.applied is not None or self.agent.last_error, 10, what="first apply")
        assert self.agent.last_error is None, self.agent.last_error
        return self

    def __exit__(self, *exc):
        self.agent.stop()
        self.thread.join(10)


def state_dict(lab, rules, *, enforcement="enforce", vms=(0,), **extra) -> dict:
    return {
        "policies": [{"name": "p", "enforcement": enforcement, "rules": rules}],
        "ports": [{"interface_name": lab.vms[i].tap, "fixed_ips": [lab.vms[i].ipv4, lab.vms[i].ipv6], "policy": "p"}
                  for i in vms],
        **extra,
    }


def bans_of(lab, ip: str):
    return [b for b in kernel(lab).bans if b.ip_address == ip]


def private_netns(prefix: str):
    """A bare network namespace with a unique name, always deleted (a generator for fixtures)."""
    import uuid

    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
