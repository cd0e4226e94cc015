"""Which datapath each port's tap is on, from its master device (docs/dataplane.md,
"Bridged ports"): no master -> ``routed``; a Linux bridge -> ``bridged``; an Open vSwitch
master -> ``netdev``, which connguard does not protect yet (reported, never guessed).

A port's state-file ``datapath`` (``auto`` by default) can force ``routed`` or ``bridged``; a
forced mode that contradicts the tap's master is reported, and the port is compiled as the
kernel has it (a rule keyed on a device the packets do not show would protect nothing).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PortPath:
    tap: str
    mode: str               # routed | bridged | netdev | missing
    master: str | None = None
    problem: str | None = None  # why the port is not (fully) protected, for status


def masters(netns: str | None) -> dict[str, tuple[str | None, str | None]]:
    """tap -> (master device, master kind) for every link of the namespace."""
    argv = ["ip", "-j", "-d", *(["-n", netns] if netns else []), "link", "show"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    links = json.loads(out) if out.strip() else []
    kind = {l["ifname"]: (l.get("linkinfo") or {}).get("info_kind") for l in links}
    return {l["ifname"]: (l.get("master"), kind.get(l.get("master"))) for l in links}


def classify(taps: Iterable[str], found: Mapping[str, tuple[str | None, str | None]],
             wanted: Mapping[str, str] | None = None) -> dict[str, PortPath]:
    """Pure: each tap's datapath from its master. ``wanted``: per-tap override (auto|routed|bridged)."""
    wanted = wanted or {}
    out: dict[str, PortPath] = {}
    taps = list(taps)
    users: dict[str, list[str]] = {}
    for tap in taps:
        master, kind = found.get(tap, (None, None))
        if master is not None and kind == "bridge":
            users.setdefault(master, []).append(tap)
    for tap in taps:
        if tap not in found:
            out[tap] = PortPath(tap, "missing")
            continue
        master, kind = found[tap]
        if master is None:
            mode, problem = "routed", None
        elif kind == "bridge":
            mode, problem = "bridged", None
            if len(users[master]) > 1:
                problem = (f"bridge {master} holds {len(users[master])} protected taps: a bridged port needs "
                           "a bridge of its own (shared bridges are not supported yet); not protected")
        elif kind == "openvswitch":
            mode, problem = "netdev", f"tap is attached to Open vSwitch ({master}): not supported yet; not protected"
        else:
            mode, problem = "unknown", f"tap's master {master} is a {kind or 'device of unknown kind'}: not protected"
        force = wanted.get(tap, "auto")
        if force not in ("auto", mode) and problem is None:
            problem = f"datapath {force} was asked, but the tap is {mode} (master {master}): compiled as {mode}"
        out[tap] = PortPath(tap, mode, master, problem)
    return out


def bridges(paths: Mapping[str, PortPath]) -> dict[str, str]:
    """tap -> bridge for the ports compile_host can protect as bridged."""
    return {t: p.master for t, p in paths.items() if p.mode == "bridged" and p.problem is None and p.master}


def unprotectable(paths: Mapping[str, PortPath]) -> set[str]:
    """Taps that must be left out of the compiled state (their packets never show their tap)."""
    return {t for t, p in paths.items() if p.mode in ("netdev", "unknown") or
            (p.mode == "bridged" and p.master is not None and p.problem is not None and "shared" in p.problem)}


def plan(state, paths: Mapping[str, PortPath]):  # noqa: ANN001, ANN201 - HostState in and out
    """(state to compile, tap -> bridge, problems): ports whose packets never show their tap
    (Open vSwitch, a shared bridge) are left out, each with its reason, rather than compiled
    into rules that would match nothing while status called them protected."""
    drop = unprotectable(paths)
    problems = [f"port {t}: {p.problem}" for t, p in sorted(paths.items()) if p.problem]
    if drop:
        state = state.model_copy(update={"ports": tuple(p for p in state.ports if p.interface_name not in drop)})
    return state, bridges(paths), problems


def detect(executor: object, state) -> dict[str, PortPath]:  # noqa: ANN001
    """Each port's datapath, read from the kernel when the executor is the real one (a test's
    fake executor has no links: every port is then routed). A tap moved to another master
    changes the compiled ruleset, which the next reconcile applies like any change."""
    from connguard.nft.executor import NftCli

    if not isinstance(executor, NftCli):
        return {}
    try:
        found = masters(executor.netns)
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}
    return classify([p.interface_name for p in state.ports], found)


def compile_detected(executor: object, state):  # noqa: ANN001, ANN201 - HostState -> (Ruleset, key, problems)
    """Compile ``state`` with each port's datapath as the kernel has it now; ``key`` changes
    when a tap moves to another master (the reconciler compares it at each drift check)."""
    from connguard.compiler import compile_host

    wanted, found, problems = plan(state, detect(executor, state))
    return compile_host(wanted, bridges=found), detected_key(executor, state, (wanted, found)), problems


def detected_key(executor: object, state, planned=None) -> tuple:  # noqa: ANN001
    wanted, found, _ = planned + (None,) if planned else plan(state, detect(executor, state))
    return tuple(sorted(found.items())), tuple(p.interface_name for p in wanted.ports)
