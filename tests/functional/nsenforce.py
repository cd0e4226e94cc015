"""Helpers for the functional tests: enforce a state inside a lab's host namespace."""

from __future__ import annotations

import subprocess
import time

from connguard.compiler import compile_host
from connguard.model import parse_state
from connguard.nft import Applier, NftCli, observe


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


def enforce(lab, rules, *, applier=None, **kw) -> Applier:
    applier = applier or Applier(NftCli(lab.host))
    applier.apply(compile_host(state_for(lab, rules, **kw)))
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
