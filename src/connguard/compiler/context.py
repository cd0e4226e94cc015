"""What a rule compiler receives and what it contributes.

A rule compiler is a pure function ``(RuleContext) -> Contribution``. The policy compiler sorts
the contributed rules by stage, so the order of protections inside a policy chain is decided in
one place (``Stage``), not by the order of rules in the policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import IntEnum

from connguard.compiler.ruleset import Chain, NftSet, Rule
from connguard.model.objects import Policy

# Sizes of the shared dynamic sets. A per-source limiter whose set is full fails open
# (the kernel skips the rest of the rule); the canary counter ``set_full`` counts that.
REMOTE_SET_SIZE = 1_048_576
PORT_SET_SIZE = 65_536
MAX_PORTS = PORT_SET_SIZE // 2  # per host; the model refuses more (model.state.MAX_PORTS)
BAN_SET_SIZE = 262_144
RATE_SET_TIMEOUT = 60        # seconds a per-remote bucket lives after its creation
OFFENDER_TIMEOUT = 3600      # monitor mode remembers an offender this long
OFFENCE_MEMORY = 86_400      # a brute-force offence escalates the next one until a day after its ban


class Stage(IntEnum):
    SYN_BUDGET = 10
    BRUTE_FORCE = 20
    RATE_PER_REMOTE = 30
    RATE_PER_PORT = 40
    CONN_PER_REMOTE = 50
    CONN_PER_PORT = 60
    SYNPROXY = 90
    INVALID = 95


def short_id(*parts: object, n: int = 16) -> str:
    # 64 bits: names are derived from operator-chosen text; compile_host refuses a collision
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class RuleContext:
    policy: Policy
    index: int            # position of the rule in its policy
    monitor: bool
    synproxy: tuple[tuple[int, int], ...]  # TCP port ranges the policy proxies (ACK stage is "new")

    @property
    def rule(self):
        return self.policy.rules[self.index]

    @property
    def rid(self) -> str:
        """Stable id of the rule: its policy and its identity (type, direction, match), not its
        numbers, so changing a rate keeps the sets (and the buckets in them)."""
        return short_id(self.policy.name, self.rule.key())

    def origin(self, direction: str) -> str:
        return f"policy {self.policy.name} rule {self.index} {self.rule.type} {direction}"


def per_port_set(name: str, *, timeout: bool = False) -> NftSet:
    """Long-lived per-port state (an aggregate bucket, a conntrack count, hit counters) in one
    set keyed by interface name. Only ports dispatched to the policy reach its rules and the
    host is limited to ``MAX_PORTS``, half the size, so these sets cannot fill up: the
    aggregate limits behind every per-remote limiter fail closed. ``timeout``: elements carry
    their own lifetime (a fixed window)."""
    return NftSet(name, ("ifname",), flags=("timeout",) if timeout else (), size=PORT_SET_SIZE, role="per_port")


@dataclass
class Contribution:
    ingress: list[tuple[int, Rule]] = field(default_factory=list)
    egress: list[tuple[int, Rule]] = field(default_factory=list)
    sets: list[NftSet] = field(default_factory=list)
    chains: list[Chain] = field(default_factory=list)  # jumped to from the rule's own rules
    # (version, port range) of services this rule proxies: becomes synproxy set elements
    synproxy_services: list[tuple[int, int, int]] = field(default_factory=list)

    def add(self, direction: str, stage: int, rule: Rule) -> None:
        (self.ingress if direction == "ingress" else self.egress).append((stage, rule))
