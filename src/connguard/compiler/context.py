"""What a rule compiler receives and what it contributes.

A rule compiler is a pure function ``(RuleContext) -> Contribution``. The policy compiler sorts
the contributed rules by stage, so the order of protections inside a policy chain is decided in
one place (``Stage``), not by the order of rules in the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from connguard.compiler.ruleset import Chain, NftSet, Rule
from connguard.model.objects import Policy

# Sizes and lifetimes of the shared dynamic sets, and the short ids in names: connguard.names.
from connguard.names import (  # noqa: E402,F401  (re-exported)
    BAN_SET_SIZE,
    MAX_PORTS,
    OFFENCE_MEMORY,
    OFFENDER_TIMEOUT,
    PORT_SET_SIZE,
    RATE_SET_TIMEOUT,
    REMOTE_SET_SIZE,
    ROLE_PER_PORT,
    short_id,
)


class Stage(IntEnum):
    SYN_BUDGET = 10
    BRUTE_FORCE = 20
    RATE_PER_REMOTE = 30
    RATE_PER_PORT = 40
    CONN_PER_REMOTE = 50
    CONN_PER_PORT = 60
    SYNPROXY = 90
    INVALID = 95


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
    return NftSet(name, ("ifname",), flags=("timeout",) if timeout else (), size=PORT_SET_SIZE, role=ROLE_PER_PORT)


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
