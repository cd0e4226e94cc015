"""Value objects and validation: the one source of truth for field names, ranges and defaults,
used by the state file, the compiler and (later) the API."""

from connguard.model.objects import AllowlistEntry, Ban, Policy, Port
from connguard.model.profiles import PROFILES, Profile, Service
from connguard.model.rules import (
    RULE_TYPES,
    BruteForceRule,
    ConnectionLimitRule,
    ConnectionRateLimitRule,
    Rule,
    SynFloodRule,
)
from connguard.model.state import HostState, load_state_file, parse_state

__all__ = [
    "AllowlistEntry",
    "Ban",
    "BruteForceRule",
    "ConnectionLimitRule",
    "ConnectionRateLimitRule",
    "HostState",
    "PROFILES",
    "Policy",
    "Port",
    "Profile",
    "RULE_TYPES",
    "Rule",
    "Service",
    "SynFloodRule",
    "load_state_file",
    "parse_state",
]
