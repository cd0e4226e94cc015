"""The typed report an agent sends on ``POST /v2.0/connguard/hosts/{host}/report``.

A report is a *delta* (``full: false``: only what changed since the last report the server
accepted) or a *full resync* (``full: true``: the agent's whole view, which replaces the
server's view of that host: ports it does not mention lose their counters and offenders,
discovered interfaces it does not list are marked DOWN). Counters are the agent's monotonic
raw totals since it started, never increments, so a lost or repeated report cannot make the
server count twice. Every list is bounded here, and the body as a whole by
``MAX_REPORT_BYTES`` (413 beyond it): the contract is in docs/api.md, "Agent channel".
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, Field

from connguard.model.common import Frozen, InterfaceName, IPAddress, IPPrefix

MAX_REPORT_BYTES = 8 * 1024 * 1024  # a full resync of 10,000 ports with four rules each fits (docs/api.md)
MAX_PORTS = 10_000
MAX_RULES_PER_PORT = 64
MAX_OFFENDERS_PER_PORT = 10
MAX_BANS = 1_000
MAX_INTERFACES = 10_000
MAX_ADDRESSES = 16

Uuid = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
Message = Annotated[str, Field(max_length=1024)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]


def _one_source(value: str) -> str:
    net = ipaddress.ip_network(value)
    if net.prefixlen < (32 if net.version == 4 else 64):
        raise ValueError("a detected ban is one source: an IPv4 address or at most an IPv6 /64")
    return value


class Heartbeat(Frozen):
    started_at: AwareDatetime  # when the agent process started: a change means it restarted
    version: Annotated[str, Field(max_length=64)] = ""
    configurations: Annotated[dict[str, Any], Field(max_length=64)] = {}


class RuleCounters(Frozen):
    """Raw totals of one rule on one port since the agent started."""

    rule_id: Uuid
    admitted: Count = 0
    refused: Count = 0
    would_refuse: Count = 0  # monitor mode: what enforce mode would have refused
    set_full: Count = 0  # admitted because a meter set was full (the fail-open bypass)


class Offender(Frozen):
    ip_address: IPPrefix  # an address, or the /64 an IPv6 source is counted by
    rule_id: Uuid | None = None
    count: Count


class PortReport(Frozen):
    port_id: Uuid
    status: Literal["ACTIVE", "ERROR"] | None = None  # None: unchanged
    status_message: Message = ""  # the kernel's message when status is ERROR
    counters: Annotated[list[RuleCounters], Field(max_length=MAX_RULES_PER_PORT)] = []
    offenders: Annotated[list[Offender], Field(max_length=MAX_OFFENDERS_PER_PORT)] | None = None  # None: unchanged


class DetectedBan(Frozen):
    """A ban the agent's kernel placed (brute force detected): one source, an IPv4 address or
    the IPv6 /64 it is counted by, never a wider prefix."""

    ip_address: Annotated[IPPrefix, AfterValidator(_one_source)]
    port_id: Uuid
    rule_id: Uuid | None = None
    banned_at: AwareDatetime
    expires_at: AwareDatetime
    offence_count: Annotated[int, Field(ge=1, le=1_000_000)] = 1  # the agent's own count on this host
    # Informative: the server takes the scope from the rule (``rule_id``), "port" without one.
    share: Literal["port", "project", "cloud"] = "port"
    reason: Annotated[str, Field(max_length=255)] = ""


class Interface(Frozen):
    """An interface matching the agent's pattern (default ``tap*``)."""

    name: InterfaceName
    addresses: Annotated[list[IPAddress], Field(max_length=MAX_ADDRESSES)] = []
    state: Literal["UP", "DOWN", "UNKNOWN"] = "UNKNOWN"


class Conntrack(Frozen):
    count: Count
    max: Count


class Apply(Frozen):
    latency_seconds: Annotated[float, Field(ge=0, le=86_400)] | None = None  # the last apply
    errors_total: Count = 0  # since the agent started
    last_error: Message = ""


class Queue(Frozen):
    """The agent's on-disk queue of reports made while the server was unreachable."""

    length: Count = 0
    overflow_total: Count = 0  # reports dropped because the queue was full, since the agent started


class Slice(Frozen):
    """Port ids (or interface names) ``after < x <= until``, compared as Python compares
    strings (code points); ``None`` leaves that end open."""

    after: Annotated[str, Field(max_length=255)] | None = None
    until: Annotated[str, Field(max_length=255)] | None = None

    def __contains__(self, value: str) -> bool:
        return (self.after is None or value > self.after) and (self.until is None or value <= self.until)


class Part(Frozen):
    """One part of a full report the agent split in bounded parts (agent/report_parts.py):
    it replaces the server's view of the slices it names only; ``None``: nothing of that kind."""

    index: Annotated[int, Field(ge=0, le=10_000)]
    count: Annotated[int, Field(ge=1, le=10_000)]
    ports: Slice | None = None
    interfaces: Slice | None = None


class Report(Frozen):
    full: bool = False
    part: Part | None = None  # full reports only: which slice of the host this part replaces
    heartbeat: Heartbeat
    ports: Annotated[list[PortReport], Field(max_length=MAX_PORTS)] = []
    bans: Annotated[list[DetectedBan], Field(max_length=MAX_BANS)] = []
    interfaces: Annotated[list[Interface], Field(max_length=MAX_INTERFACES)] | None = None  # None: unchanged
    interfaces_gone: Annotated[list[InterfaceName], Field(max_length=MAX_INTERFACES)] = []  # deltas only
    conntrack: Conntrack | None = None
    apply: Apply | None = None
    queue: Queue | None = None


__all__ = ["MAX_REPORT_BYTES", "Part", "Report", "Slice"]
