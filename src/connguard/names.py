"""Names of connguard's kernel objects, their sizes and set roles: the on-kernel contract in one
place (agent/DESIGN.md, "Ownership"; docs/dataplane.md).

The compiler builds every table, chain, set and counter name through this module; the applier,
the read-back, the observer, the agent, ``connguard status`` and the lab find them through it
(or through what a compiled ruleset declares). It imports nothing of connguard and nothing but
the standard library, so that reading the kernel (``connguard status``) does not pay for the
model's validation library.

Per-rule names carry the rule's id (``rid``: ``short_id`` of the policy name and the rule's
identity) and, for families, the IP version; sets whose numbers are part of their identity
(aggregates, SYN budgets, conntrack caps) also carry a short id of those numbers, so a changed
number makes a new set rather than silently keeping the old one in existing elements.
"""

from __future__ import annotations

import hashlib
import re

TABLE = "connguard"
FAMILY = "inet"

# --- host-wide sets (per IP version where keyed by an address) ---
BAN = {4: "ban4", 6: "ban6"}               # ifname . remote: port and remote may not talk
HOST_BAN = {4: "hostban4", 6: "hostban6"}  # prefix: banned from every protected port
OFFENDERS = {4: "offenders4", 6: "offenders6"}  # monitor mode: who would have been refused
ALLOW = {4: "allow4", 6: "allow6"}
SYNPROXY = {4: "synproxy4", 6: "synproxy6"}
BAN_SETS = frozenset(BAN.values()) | frozenset(HOST_BAN.values())
PORTS = "ports"
FROM_VM = "from_vm"   # iifname -> jump out_<policy>: flows the VM starts
TO_VM = "to_vm"       # oifname -> jump in_<policy>: flows towards the VM
# Bridged ports (docs/dataplane.md, "Bridged ports"): with br_netfilter the inet hooks see the
# port's bridge, not its tap, so a bridged port is keyed by its (per-port) bridge, and the
# direction comes from a meta mark bit set in the bridge family, where the tap is visible.
FROM_BR = "from_br"   # bridge -> jump out_<policy>, for packets carrying META_FROM_PORT
TO_BR = "to_br"       # bridge -> jump in_<policy>, for packets without it
BRIDGE_FAMILY = "bridge"
BRIDGE_CHAIN = "ports"  # bridge prerouting: marks packets that enter a bridge from a protected tap
BRIDGE_TAPS = "taps"    # the protected taps enslaved to bridges
# One bit of the packet's meta mark (not the ct mark): set when the packet entered its bridge
# from a protected tap, cleared when it enters any bridge from another port.
META_FROM_PORT = 0x08000000

# --- named counters ---
BANNED = "banned"     # packets dropped by bans
SET_FULL = "set_full"  # packets that found a per-remote limiter's set full (fail-open)
# packets that placed a ban (every ban rule counts here): the agent reads this one counter each
# pass instead of the ban sets, and reads those only when it moved (agent/banwatch.py)
BANS_PLACED = "bans_placed"
COUNTERS = (BANNED, BANS_PLACED, SET_FULL)

# --- base chains ---
FORWARD = "forward"
HOST_IN = "host_in"
HOST_OUT = "host_out"
RAW_PRE = "raw_pre"
HANDSHAKE = "handshake"
BAN_HIT = "ban_hit"   # what a ban does to a packet


def bans_chain(v: int) -> str:
    """The ban lookups of one IP version (entered by the forward chain's nfproto dispatch)."""
    return f"bans{v}"


# --- sizes and lifetimes ---
# A per-source limiter whose set is full fails open (the kernel skips the rest of the rule);
# the canary counter ``set_full`` counts that.
REMOTE_SET_SIZE = 1_048_576
PORT_SET_SIZE = 65_536
MAX_PORTS = PORT_SET_SIZE // 2  # per host; the model refuses more (model.state.MAX_PORTS)
BAN_SET_SIZE = 262_144
RATE_SET_TIMEOUT = 60        # seconds a per-remote bucket lives after its creation
OFFENDER_TIMEOUT = 3600      # monitor mode remembers an offender this long
OFFENCE_MEMORY = 86_400      # a brute-force offence escalates the next one until a day after its ban

# --- set roles (NftSet.role) ---
ROLE_BF_METER = "bf_meter"    # brute-force meters, cleared by the packet path on a ban
ROLE_BF_PREFIX = "bf_prefix"  # brute-force IPv6 /48 meters
ROLE_BF_TIER = "bf_tier"      # brute-force offender memory, one set per escalation step
ROLE_PER_PORT = "per_port"    # keyed by the interface alone, cleared for a port leaving the policy

# --- ct mark bits owned by connguard ---
# Masked: every other bit of the mark is left alone. A brute-force rule marks a new connection
# to its service "pending" in its direction; the forward and input chains send packets of marked
# connections to the ``handshake`` chain, which meters the connection once its source has proven
# its address and then clears the pending bits. "refused" is set on a connection a brute-force
# rule turned away (ban, per-port budget, /48 meter): the handshake chain drops what its source
# still sends, except resets.
CT_PENDING = {"ingress": 0x01000000, "egress": 0x02000000}
CT_REFUSED = 0x04000000
CT_PENDING_BITS = CT_PENDING["ingress"] | CT_PENDING["egress"]
CT_BITS = CT_PENDING_BITS | CT_REFUSED


def short_id(*parts: object, n: int = 16) -> str:
    # 64 bits: names are derived from operator-chosen text; compile_host refuses a collision
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:n]


# --- policy chains ---
def policy_chain(direction: str, pid: str) -> str:
    """The chain of a policy (``pid``: short id of its name) for one direction."""
    return ("in_" if direction == "ingress" else "out_") + pid


def remote_chain(chain: str) -> str:
    """The per-remote stages of a policy chain, when the allowlist has entries."""
    return "remote_" + chain


# --- per-rule sets and chains ---
def hit_set(rid: str) -> str:
    """Per-port counter of what the rule refused (or would have, in monitor mode)."""
    return f"h{rid}"


def admitted_set(rid: str) -> str:
    """Per-port counter of connections that reached the rule and went on (monitor: all)."""
    return f"n{rid}"


def bypass_set(rid: str) -> str:
    """Per-port counter of connections admitted because a set the rule writes was full."""
    return f"u{rid}"


def refuse_chain(direction: str, kind: str) -> str:
    """Where enforce-mode refusals end (``kind`` drop or reset): the offender is recorded first."""
    return f"refuse_{'in' if direction == 'ingress' else 'out'}_{kind}"


def rate_remote_set(rid: str, v: int) -> str:
    """Per (port, remote) connection-rate buckets."""
    return f"r{rid}{v}"


def rate_aggregate_set(rid: str, max_cps: int, max_burst: int | None) -> str:
    """Per-port connection-rate bucket; its numbers are part of its name."""
    return f"a{rid}{short_id(max_cps, max_burst, n=4)}"


def syn_budget_set(rid: str, max_syn_rate: int) -> str:
    """Per-port SYN budget; its rate is part of its name."""
    return f"s{rid}{short_id(max_syn_rate, n=4)}"


def conncount_set(rid: str, max_connections: int, v: int | None = None) -> str:
    """Conntrack count per port (``v`` None) or per (port, remote) of family ``v``; the cap is
    part of the name."""
    return f"c{rid}{short_id(max_connections, n=4)}{'' if v is None else v}"


def bf_meter_set(rid: str, v: int) -> str:
    """Brute-force attempts per (port, remote)."""
    return f"b{rid}{v}"


def bf_budget_set(rid: str) -> str:
    """Brute-force attempts per port (a budget spoofers cannot exhaust into a ban)."""
    return f"q{rid}"


def bf_prefix_set(rid: str) -> str:
    """Brute-force attempts per (port, IPv6 /48)."""
    return f"g{rid}6"


def punish_chain(rid: str, v: int) -> str:
    """Where a brute-force meter jumps when a remote is over it."""
    return f"x{rid}{v}"


def escalate_chain(rid: str, v: int) -> str:
    """The escalation steps of a brute-force rule and family."""
    return f"e{rid}{v}"


def tier_set(rid: str, v: int, step: int) -> str:
    """The offender memory of escalation step ``step`` (1-based) of rule ``rid``, family ``v``."""
    return f"t{rid}{v}_{step}"


_TIER = re.compile(r"t(.+)([46])_([0-9]+)")


def parse_tier(name: str) -> tuple[str, int, int] | None:
    """(rid, version, step) of an offender memory set's name; None for any other name."""
    m = _TIER.fullmatch(name)
    return None if m is None else (m.group(1), int(m.group(2)), int(m.group(3)))


def same_tier_family(a: str, b: str) -> bool:
    """Whether two offender memory sets are steps of the same rule and family."""
    pa, pb = parse_tier(a), parse_tier(b)
    return pa is not None and pb is not None and pa[:2] == pb[:2]
