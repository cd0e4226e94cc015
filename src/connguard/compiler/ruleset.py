"""A small backend-neutral model of what connguard puts in the kernel.

Everything lives in one table. Values inside expressions are libnftables JSON fragments built by
``connguard.compiler.fragments`` from validated, typed values; nothing here is nft text.

Ownership classes (see agent/DESIGN.md):
- ``NftSet.elements is None``: a *long-lived* set whose contents belong to the packet path and
  the agent (limiter buckets, bans, offenders). Created if missing, never flushed by an apply.
- ``NftSet.elements`` is a tuple: the set's whole desired content; the applier makes the kernel
  match it element by element.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from connguard.names import FAMILY, TABLE  # noqa: F401  (re-exported: the table's name)

Json = Any



@dataclass(frozen=True)
class Element:
    key: Json
    value: Json = None          # map data (verdict or object name)
    timeout: int | None = None  # seconds

    def ident(self) -> str:
        if isinstance(self.key, str):  # interface names: most elements, on the hot path
            return self.key
        return json.dumps(self.key, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class NftSet:
    name: str
    type: tuple[str, ...]
    flags: tuple[str, ...] = ()
    size: int | None = None
    timeout: int | None = None     # default element timeout, seconds
    counter: bool = False          # a counter on every element
    map: str | None = None         # for maps: "verdict", "limit"
    elements: tuple[Element, ...] | None = None
    # connguard.names.ROLE_*: "bf_meter": brute-force meters, cleared by the packet path on a
    # ban; "bf_tier": brute-force offender memory, one set per escalation step (punishment.py);
    # "per_port": long-lived state keyed by the interface alone, cleared for a port that leaves
    # the policy using it
    role: str = ""

    def key_is_port(self) -> bool:
        return self.type == ("ifname",) and self.map is not None

    @property
    def long_lived(self) -> bool:
        return self.elements is None


@dataclass(frozen=True)
class Hook:
    hook: str
    priority: int
    type: str = "filter"
    policy: str = "accept"


@dataclass(frozen=True)
class Rule:
    expr: tuple[Json, ...]
    origin: str  # stored as the rule's comment; names the policy and rule it came from


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    hook: Hook | None = None


@dataclass(frozen=True)
class Ruleset:
    sets: tuple[NftSet, ...] = ()
    counters: tuple[str, ...] = ()
    chains: tuple[Chain, ...] = ()
    # elements added to long-lived sets if missing (state-file bans); never removed by an apply
    seeds: tuple[tuple[str, Element], ...] = ()
    # taps of bridged ports (keyed in this table by their bridge): the bridge-family marking
    # table lists them (nft/bridge.py)
    bridge_taps: tuple[str, ...] = ()
    # where each port's objects come from, for error messages: interface -> policy name
    port_policy: dict[str, str] = field(default_factory=dict, compare=False)
    # per-port hit counter set -> the rule it counts for ("policy web rule 0 brute_force")
    hit_sets: dict[str, str] = field(default_factory=dict, compare=False)
    # bridged ports: the bridge they are keyed by -> their tap, for status (bridge_taps decides)
    bridged: dict[str, str] = field(default_factory=dict, compare=False)

    def set(self, name: str) -> NftSet:
        return next(s for s in self.sets if s.name == name)

    def chain(self, name: str) -> Chain:
        return next(c for c in self.chains if c.name == name)
