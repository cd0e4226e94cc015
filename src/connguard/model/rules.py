"""The four QoS rule types. One class per type; field names, defaults and ranges are the API
contract's (DESIGN.md, "API contract") and are used unchanged by the state file, the API and
the compiler.

Match fields are the security-group rule's: ``protocol``, ``ethertype``, ``port_range_min``,
``port_range_max`` (the service port: the VM's for ingress, the remote's for egress) and
``remote_ip_prefix``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from connguard.model.common import (
    Direction,
    DirectionAny,
    Ethertype,
    Frozen,
    IPPrefix,
    L4Port,
    Protocol,
    Scope,
    prefix_version,
)
from connguard.model.profiles import (
    DEFAULT_BAN_MULTIPLIER,
    DEFAULT_MAX_BAN_SECONDS,
    PROFILE_NAMES,
    PROFILES,
    Service,
)

MAX_RATE = 1_000_000
MAX_CONNECTIONS = 10_000_000
MAX_WINDOW = 86_400
MAX_BAN = 30 * 86_400
# Escalation steps a brute-force rule may have (each is one offender-memory set per family in
# the kernel): 1 s to 30 days at multiplier 2 takes 23.
MAX_BAN_TIERS = 24

Rate = Annotated[int, Field(ge=1, le=MAX_RATE)]


def _single_port(data: Any) -> Any:
    """``port_range_min`` alone means that one port, as in Neutron's security-group rules."""
    if isinstance(data, dict) and data.get("port_range_min") is not None and data.get("port_range_max") is None:
        data = {**data, "port_range_max": data["port_range_min"]}
    return data


class MatchFields(Frozen):
    protocol: Protocol | None = None
    ethertype: Ethertype | None = None
    port_range_min: L4Port | None = None
    port_range_max: L4Port | None = None
    remote_ip_prefix: IPPrefix | None = None

    # Whether ports may be given without a protocol (brute force takes it from its profile).
    _protocol_from_profile: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _default_port_max(cls, data: Any) -> Any:
        return _single_port(data)

    @model_validator(mode="after")
    def _check_match(self) -> "MatchFields":
        if self.port_range_max is not None and self.port_range_min is None:
            raise ValueError("port_range_max requires port_range_min")
        if self.port_range_min is not None:
            if self.port_range_min > self.port_range_max:  # type: ignore[operator]
                raise ValueError("port_range_min must be <= port_range_max")
            if self.protocol is None and not self._protocol_from_profile:
                raise ValueError("port_range_min/port_range_max require protocol tcp, udp or sctp")
        if self.remote_ip_prefix is not None and self.ethertype is not None:
            want = 4 if self.ethertype == "IPv4" else 6
            if prefix_version(self.remote_ip_prefix) != want:
                raise ValueError(f"remote_ip_prefix {self.remote_ip_prefix} does not match ethertype {self.ethertype}")
        return self

    def families(self) -> tuple[int, ...]:
        """IP versions this rule applies to."""
        if self.remote_ip_prefix is not None:
            return (prefix_version(self.remote_ip_prefix),)
        if self.ethertype == "IPv4":
            return (4,)
        if self.ethertype == "IPv6":
            return (6,)
        return (4, 6)

    def match_key(self) -> tuple:
        return (self.protocol, self.ethertype, self.port_range_min, self.port_range_max, self.remote_ip_prefix)


class ConnectionRateLimitRule(MatchFields):
    """New connections per second, per port in total (scope=port) or per remote (remote_ip)."""

    type: Literal["connection_rate_limit"] = "connection_rate_limit"
    direction: Direction = "egress"
    max_cps: Rate
    max_burst_cps: Rate | None = None
    scope: Scope = "port"

    @model_validator(mode="before")
    @classmethod
    def _default_burst(cls, data: Any) -> Any:
        # A burst of one second of the rate admits the configured rate within 3% when clients
        # retry in step (DESIGN.md, "Burst"); smaller bursts admit about half.
        if isinstance(data, dict) and data.get("max_burst_cps") is None and isinstance(data.get("max_cps"), int) and data["max_cps"] >= 1:
            data = {**data, "max_burst_cps": data["max_cps"]}
        return data

    def key(self) -> tuple:
        return (self.type, self.direction, self.scope, *self.match_key())


class ConnectionLimitRule(MatchFields):
    """Concurrent connections (conntrack count) per port or per remote address."""

    type: Literal["connection_limit"] = "connection_limit"
    direction: DirectionAny = "any"
    max_connections: Annotated[int, Field(ge=1, le=MAX_CONNECTIONS)]
    scope: Scope = "port"

    def key(self) -> tuple:
        return (self.type, self.direction, self.scope, *self.match_key())


class SynFloodRule(Frozen):
    """SYN flood protection for the VM's TCP services: an aggregate SYN budget per port and,
    on routed ports, synproxy (SYN cookies answered by the host, no conntrack entry per SYN)."""

    type: Literal["syn_flood"] = "syn_flood"
    direction: Literal["ingress"] = "ingress"
    ethertype: Ethertype | None = None
    port_range_min: L4Port
    port_range_max: L4Port | None = None
    max_syn_rate: Rate
    synproxy: bool = True
    # Must match what the guest would have announced; the host answers the handshake for it.
    mss: Annotated[int, Field(ge=536, le=65495)] = 1460
    wscale: Annotated[int, Field(ge=0, le=14)] = 7

    @model_validator(mode="before")
    @classmethod
    def _default_port_max(cls, data: Any) -> Any:
        return _single_port(data)

    @model_validator(mode="after")
    def _check(self) -> "SynFloodRule":
        if self.port_range_min > self.port_range_max:  # type: ignore[operator]
            raise ValueError("port_range_min must be <= port_range_max")
        return self

    protocol: ClassVar[str] = "tcp"

    def families(self) -> tuple[int, ...]:
        return {"IPv4": (4,), "IPv6": (6,), None: (4, 6)}[self.ethertype]

    def key(self) -> tuple:
        return (self.type, self.direction, self.ethertype, self.port_range_min, self.port_range_max)


class BruteForceRule(MatchFields):
    """Ban a source after ``max_attempts`` TCP connections (completed handshakes) to a login
    service within ``window`` seconds; ``protocol`` may only be tcp (or left to the profile). Ingress bans the remote's access to the VM; egress bans the VM's
    access to the remote (a compromised VM attacking others). Each repeat offence multiplies
    the ban by ``ban_multiplier`` up to ``max_ban_seconds``."""

    _protocol_from_profile: ClassVar[bool] = True

    type: Literal["brute_force"] = "brute_force"
    profile: Literal[PROFILE_NAMES]  # type: ignore[valid-type]
    direction: Direction = "ingress"
    max_attempts: Annotated[int, Field(ge=1, le=100_000)]
    window: Annotated[int, Field(ge=1, le=MAX_WINDOW)]
    ban_seconds: Annotated[int, Field(ge=1, le=MAX_BAN)]
    ban_multiplier: Annotated[float, Field(ge=1.0, le=100.0)] = DEFAULT_BAN_MULTIPLIER
    max_ban_seconds: Annotated[int, Field(ge=1, le=MAX_BAN)] = DEFAULT_MAX_BAN_SECONDS
    share: Literal["port", "project", "cloud"] = "port"

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("profile") in PROFILES:
            prof = PROFILES[data["profile"]]
            filled = dict(data)
            for name in ("max_attempts", "window", "ban_seconds"):
                if filled.get(name) is None:
                    filled[name] = getattr(prof, name)
            return filled
        return data

    @field_validator("protocol")
    @classmethod
    def _connection_oriented(cls, value: str | None) -> str | None:
        # A ban must rest on a source that proved its address by completing a handshake
        # (docs/dataplane.md, "Brute force"). UDP has none: whatever counts as an attempt can be
        # sent with anyone's address, so the ban could be aimed at anyone. SCTP's handshake is
        # real, but its proof in conntrack is not tested here (no SCTP sockets in the lab).
        if value == "udp":
            raise ValueError(
                "brute_force counts connection-oriented (tcp) logins only: a udp source address is a "
                "claim anyone can make, so a ban on it can be aimed at anyone; use connection_rate_limit "
                "for UDP floods")
        if value == "sctp":
            raise ValueError(
                "brute_force counts tcp logins only: a ban must rest on a completed handshake, and the "
                "sctp one is not supported; use connection_rate_limit or connection_limit for sctp")
        return value

    @model_validator(mode="after")
    def _check_profile(self) -> "BruteForceRule":
        if self.profile == "custom" and (self.protocol is None or self.port_range_min is None):
            raise ValueError("profile custom requires protocol and port_range_min (the login service)")
        if self.max_ban_seconds < self.ban_seconds:
            raise ValueError("max_ban_seconds must be >= ban_seconds")
        if len(self.ban_tiers()) > MAX_BAN_TIERS:
            raise ValueError(f"ban_multiplier {self.ban_multiplier} takes more than {MAX_BAN_TIERS} escalation "
                             f"steps from ban_seconds {self.ban_seconds} to max_ban_seconds "
                             f"{self.max_ban_seconds}; raise ban_multiplier or lower max_ban_seconds")
        return self

    def services(self) -> tuple[Service, ...]:
        """The login service(s): the rule's own ports when given, else the profile's."""
        prof = PROFILES[self.profile]
        if self.port_range_min is not None:
            protos = [self.protocol] if self.protocol else sorted({s.protocol for s in prof.services})
            return tuple(Service(p, self.port_range_min, self.port_range_max) for p in protos)  # type: ignore[arg-type]
        if self.protocol is not None:
            return tuple(s for s in prof.services if s.protocol == self.protocol)
        return prof.services

    def ban_for(self, offence: int) -> int:
        """Ban length in seconds for the ``offence``-th offence (1-based)."""
        seconds = float(self.ban_seconds)
        for _ in range(max(offence - 1, 0)):  # stops at the cap: no overflow however many offences
            if seconds >= self.max_ban_seconds:
                break
            seconds *= self.ban_multiplier
        return int(min(seconds, self.max_ban_seconds))

    def ban_tiers(self) -> tuple[int, ...]:
        """The ban lengths of the escalation steps, ``ban_for(1)`` .. ``ban_for(n)``: every later
        offence is banned for the last one. Stops one past ``MAX_BAN_TIERS`` (the validator then
        refuses the rule), so a multiplier close to 1 cannot make it loop for long."""
        out: list[int] = []
        seconds = float(self.ban_seconds)
        while True:
            out.append(int(min(seconds, self.max_ban_seconds)))
            if seconds >= self.max_ban_seconds or self.ban_multiplier == 1.0 or len(out) > MAX_BAN_TIERS:
                return tuple(out)
            seconds *= self.ban_multiplier

    def key(self) -> tuple:
        return (self.type, self.direction, self.profile, *self.match_key())


Rule = Annotated[
    Union[ConnectionRateLimitRule, ConnectionLimitRule, SynFloodRule, BruteForceRule],
    Field(discriminator="type"),
]

# The explicit registry of rule types: API discovery, the compiler registry and the tests all
# start from here.
RULE_TYPES: dict[str, type[Frozen]] = {
    "connection_rate_limit": ConnectionRateLimitRule,
    "connection_limit": ConnectionLimitRule,
    "syn_flood": SynFloodRule,
    "brute_force": BruteForceRule,
}
