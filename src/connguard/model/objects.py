"""Policies, ports, allowlist entries and bans."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from connguard.model.common import Enforcement, Frozen, InterfaceName, IPAddress, IPPrefix, Text
from connguard.model.rules import Rule

Name = Annotated[Text, Field(min_length=1, max_length=255)]

# Rules per policy. A policy needs one rule per kind, direction, scope and service (a rich
# one has ten to twenty); each rule costs the kernel chains, sets and rules on every apply, and
# 10,000 rules took 41.5 s to apply. Checked before the rules are validated one by one, so an
# oversized policy is refused at once. docs/api.md states the bound; the API checks it too.
MAX_RULES_PER_POLICY = 64


class Policy(Frozen):
    name: Name
    description: Annotated[str, Field(max_length=1024)] = ""
    enforcement: Enforcement = "enforce"
    rules: tuple[Rule, ...] = ()

    @field_validator("rules", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) > MAX_RULES_PER_POLICY:
            raise ValueError(f"at most {MAX_RULES_PER_POLICY} rules per policy, got {len(value)}")
        return value

    @model_validator(mode="after")
    def _unique_rules(self) -> "Policy":
        seen: dict[tuple, int] = {}
        for i, rule in enumerate(self.rules):
            k = rule.key()
            if k in seen:
                raise ValueError(
                    f"rules[{i}] duplicates rules[{seen[k]}]: one {rule.type} rule per direction, scope and match"
                )
            seen[k] = i
        return self


class Port(Frozen):
    interface_name: InterfaceName
    fixed_ips: tuple[IPAddress, ...] = ()
    policy: Name | None = None
    name: Annotated[str, Field(max_length=255)] = ""

    @field_validator("fixed_ips", mode="before")
    @classmethod
    def _plain_addresses(cls, value: Any) -> Any:
        # The API's form ({"ip_address": ..., "subnet_id": ...}) and plain strings both work.
        if isinstance(value, (list, tuple)):
            return [v.get("ip_address") if isinstance(v, dict) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique_ips(self) -> "Port":
        if len(set(self.fixed_ips)) != len(self.fixed_ips):
            raise ValueError("fixed_ips lists an address twice")
        return self


class AllowlistEntry(Frozen):
    remote_ip_prefix: IPPrefix
    description: Annotated[str, Field(max_length=1024)] = ""


class Ban(Frozen):
    """A ban as the dataplane knows it: the remote (``ip_address``, an address or, for
    manual and shared bans, a prefix) may not talk to ``interface_name`` (None: any
    protected port on the host) for ``seconds`` more."""

    ip_address: IPPrefix
    interface_name: InterfaceName | None = None
    seconds: Annotated[int, Field(ge=1, le=365 * 86400)] | None = None  # None: until removed
    reason: Annotated[str, Field(max_length=255)] = ""

    @model_validator(mode="after")
    def _port_ban_is_one_remote(self) -> "Ban":
        # Port bans live in a set keyed ifname . address (IPv6 per /64): no prefixes there.
        one_ipv4 = ":" not in self.ip_address and self.ip_address.endswith("/32")  # without ipaddress's cost
        if self.interface_name is not None and not one_ipv4:
            net = ipaddress.ip_network(self.ip_address)
            if net.prefixlen < (32 if net.version == 4 else 64):
                raise ValueError("a ban on one port takes one address (IPv6: at most a /64); "
                                 "leave interface_name out to ban a prefix host-wide")
        return self
