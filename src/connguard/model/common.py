"""Shared field types and validators for the model."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Direction = Literal["ingress", "egress"]
DirectionAny = Literal["ingress", "egress", "any"]
Protocol = Literal["tcp", "udp", "sctp"]
Ethertype = Literal["IPv4", "IPv6"]
Scope = Literal["port", "remote_ip"]
Enforcement = Literal["enforce", "monitor"]

L4Port = Annotated[int, Field(ge=1, le=65535)]

# Linux interface names: at most 15 bytes, no '/', whitespace or ':'; we are stricter
# (the names reach the kernel inside nft sets and chain names). Matched with fullmatch: `$`
# also matches before a trailing newline, and "tapvm0\n" names no interface, so a port
# written that way would be accepted and protect nothing.
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}")


def _check_ifname(value: str) -> str:
    if not _IFNAME.fullmatch(value):
        shown = repr(value) if len(value) <= 40 else f"{value[:40]!r}..."
        raise ValueError(
            f"{shown} is not an interface name: must be 1-15 characters of letters, digits, "
            "'_', '.', '-', starting with a letter or digit"
        )
    return value


def _no_scope(value: str) -> None:
    # ipaddress accepts IPv6 scope ids ("fe80::1%eth0") and keeps them in str(): nft would
    # then try to resolve the text as a host name. Addresses on the wire never carry one.
    if "%" in value:
        raise ValueError(f"{value!r}: a zone/scope id (%...) is not allowed")


def _check_prefix(value: str) -> str:
    addr, slash, plen = value.partition("/")
    if plen in ("", "32"):  # one IPv4 address, the common case (100,000 bans), in C
        try:
            return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, addr)) + "/32"
        except (OSError, TypeError):
            pass
    _no_scope(value)
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address or CIDR prefix") from None
    # Host bits set (10.0.0.5/24) are almost always a typo; refuse instead of guessing.
    if "/" in value and net.network_address != ipaddress.ip_interface(value).ip:
        raise ValueError(f"{value!r} has host bits set; did you mean {net}?")
    return str(net)


def _check_address(value: str) -> str:
    # Hosts carry thousands of ports: the C parser takes the common IPv4 case (it refuses
    # leading zeros and short forms as ipaddress does, and prints the same dotted quad).
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value))
    except (OSError, TypeError):
        pass
    _no_scope(value)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def _check_text(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


InterfaceName = Annotated[str, AfterValidator(_check_ifname)]
Text = Annotated[str, AfterValidator(_check_text)]
IPPrefix = Annotated[str, AfterValidator(_check_prefix)]
IPAddress = Annotated[str, AfterValidator(_check_address)]


class Frozen(BaseModel):
    """Base of every value object: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def prefix_version(prefix: str) -> int:
    return ipaddress.ip_network(prefix).version
