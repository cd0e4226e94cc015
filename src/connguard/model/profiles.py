"""Brute-force profiles: which TCP service a protocol's login lives on, and defaults drawn from
how its legitimate clients connect. Every service is tcp: brute force counts completed
handshakes, and model/rules.py refuses udp and sctp. The rationale for every number is in docs/profiles.md;
keep the two in step (tests/unit/test_profiles.py checks every profile is documented).
"""

from __future__ import annotations

from dataclasses import dataclass

from connguard.model.common import Protocol


@dataclass(frozen=True)
class Service:
    protocol: Protocol
    port_min: int
    port_max: int


@dataclass(frozen=True)
class Profile:
    name: str
    services: tuple[Service, ...]
    max_attempts: int      # completed TCP handshakes per source admitted within the window
    window: int            # seconds; a fixed window from the source's first attempt
    ban_seconds: int       # first ban
    guesses_per_connection: str  # what one connection can carry; stated, not enforced


def _tcp(*ports: int | tuple[int, int]) -> tuple[Service, ...]:
    out = []
    for p in ports:
        lo, hi = p if isinstance(p, tuple) else (p, p)
        out.append(Service("tcp", lo, hi))
    return tuple(out)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("ssh", _tcp(22), 10, 600, 600, "up to MaxAuthTries (OpenSSH default 6)"),
        Profile("rdp", _tcp(3389), 10, 600, 600, "one NLA/CredSSP exchange"),
        Profile("ftp", _tcp(21), 12, 60, 600, "unbounded USER/PASS pairs unless the server limits them"),
        Profile("telnet", _tcp(23), 6, 600, 900, "usually 3 (login's retry limit)"),
        Profile("smtp", _tcp(587, 465), 10, 60, 600, "several AUTH commands unless the server limits them"),
        Profile("imap", _tcp(143, 993), 20, 60, 600, "several LOGIN commands unless the server limits them"),
        Profile("pop3", _tcp(110, 995), 10, 60, 600, "several USER/PASS pairs unless the server limits them"),
        Profile("mysql", _tcp(3306), 30, 60, 600, "one (the server closes after a failed handshake)"),
        Profile("postgresql", _tcp(5432), 30, 60, 600, "one (the server closes after a failed authentication)"),
        Profile("mssql", _tcp(1433), 30, 60, 600, "one per login packet; the server closes on failure"),
        Profile("redis", _tcp(6379), 30, 60, 600, "unbounded: AUTH can be pipelined on one connection"),
        Profile("vnc", _tcp((5900, 5906)), 6, 600, 900, "one (RFB security handshake)"),
        # tcp only: a UDP source is a claim anyone can make (docs/profiles.md, "sip")
        Profile("sip", _tcp((5060, 5061)), 20, 60, 600,
                "several REGISTERs per connection unless the registrar limits them"),
        # custom: the rule's match fields name the service; defaults are a middle ground.
        Profile("custom", (), 10, 60, 600, "depends on the protocol"),
    )
}

PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)

DEFAULT_BAN_MULTIPLIER = 2.0
DEFAULT_MAX_BAN_SECONDS = 86400
