"""Digests of what the kernel holds in our table, for drift checks; and bounded element reads.

A digest is a hash of the kernel's own netlink encoding of an object, minus what the packet
path changes (counter values, quota use, ``last`` timestamps, element expiry) and what has no
meaning (handles, positions, use counts). Drift is "the kernel's digests differ from the ones it
gave right after our last successful apply": the kernel is only ever compared with itself, so
nothing depends on how nft or the kernel spell an expression we sent (``ip saddr 10.0.0.0/8``
comes back as a bitwise and a compare; a one-port range as an equality) — whatever the
compiler emits is covered, with no list of known rules.

The executor's ``dump`` is the only I/O (``netlink.dump`` for the real kernel), so the pure
functions here are tested against the fake executor with hand-built messages.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from connguard.names import TABLE
from connguard.nft import netlink as nl
from connguard.nft.executor import NftFailure

# Expressions whose data the packet path rewrites: their values are not part of a rule.
STATEFUL = {"counter", "quota", "last"}


def _h(*parts: bytes) -> str:
    d = hashlib.sha256()
    for p in parts:
        d.update(len(p).to_bytes(4, "big") + p)
    return d.hexdigest()[:32]


def expr_bytes(expressions: bytes) -> list[bytes]:
    """Each expression of a rule as name + data, the data of stateful ones left out."""
    out = []
    for _, e in nl.parse(expressions):
        attrs = nl.parse(e)
        name = nl.first(attrs, nl.EXPR_NAME) or b""
        data = b"" if nl.string(name) in STATEFUL else (nl.first(attrs, nl.EXPR_DATA) or b"")
        out.append(name + b"\0" + data)
    return out


def comment_of(userdata: bytes | None) -> str:
    """The rule comment from libnftnl's user data (type-length-value, one byte each)."""
    off, buf = 0, userdata or b""
    while off + 2 <= len(buf):
        kind, length = buf[off], buf[off + 1]
        if kind == nl.USERDATA_COMMENT:
            return buf[off + 2:off + 2 + length].split(b"\0", 1)[0].decode(errors="replace")
        off += 2 + length
    return ""


@dataclass(frozen=True)
class KernelRule:
    comment: str
    digest: str


def rule_of(msg: nl.Attrs) -> KernelRule:
    exprs = expr_bytes(nl.first(msg, nl.RULE_EXPRESSIONS) or b"")
    userdata = nl.first(msg, nl.RULE_USERDATA) or b""
    return KernelRule(comment_of(userdata), _h(userdata, *exprs))


def chain_digest(msg: nl.Attrs) -> str:
    skip = {nl.CHAIN_HANDLE, nl.CHAIN_USE, nl.CHAIN_COUNTERS, nl.CHAIN_ID}
    return _h(*(k.to_bytes(2, "big") + p for k, p in msg if k not in skip))


def element_digest(elem: bytes) -> str:
    """An element's key, data, flags and timeout; not its expiry, nor its counter values."""
    keep = []
    for k, p in nl.parse(elem):
        if k in (nl.ELEM_EXPIRATION, nl.ELEM_EXPR, nl.ELEM_EXPRESSIONS):
            continue
        keep.append(k.to_bytes(2, "big") + p)
    return _h(*sorted(keep))


def elements_of(msg: nl.Attrs) -> list[bytes]:
    return [e for _, e in nl.parse(nl.first(msg, nl.SET_ELEM_LIST_ELEMENTS) or b"")]


@dataclass
class Snapshot:
    """Digests of our table: chains, the rules of each chain in order, the owned sets' contents."""

    chains: dict[str, str] = field(default_factory=dict)
    rules: dict[str, list[KernelRule]] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)


def table_exists(executor) -> bool:
    msgs, _ = executor.dump(nl.GETTABLE)
    return any(nl.string(nl.first(m, nl.TABLE_NAME)) == TABLE for m in msgs)


def chains(executor) -> dict[str, str]:
    msgs, _ = executor.dump(nl.GETCHAIN)
    return {nl.string(nl.first(m, nl.CHAIN_NAME)) or "": chain_digest(m)
            for m in msgs if nl.string(nl.first(m, nl.CHAIN_TABLE)) == TABLE}


def rules(executor) -> dict[str, list[KernelRule]]:
    msgs, _ = executor.dump(nl.GETRULE, nl.attr(nl.RULE_TABLE, TABLE))
    out: dict[str, list[KernelRule]] = {}
    for m in msgs:  # the kernel dumps each chain's rules in order
        if nl.string(nl.first(m, nl.RULE_TABLE)) == TABLE:
            out.setdefault(nl.string(nl.first(m, nl.RULE_CHAIN)) or "", []).append(rule_of(m))
    return out


def elements(executor, name: str, *, limit: int | None = None) -> tuple[list[bytes], bool]:
    """The elements of one set as netlink payloads; at most about ``limit`` (then complete is
    False). Raises ``NftFailure`` (No such file or directory) when the set does not exist."""
    req = nl.attr(nl.SET_ELEM_LIST_TABLE, TABLE) + nl.attr(nl.SET_ELEM_LIST_SET, name)
    msgs, complete = executor.dump(nl.GETSETELEM, req, limit=limit, count=lambda m: len(elements_of(m)))
    return [e for m in msgs for e in elements_of(m)], complete


def set_digest(executor, name: str) -> str:
    elems, _ = elements(executor, name)
    return _h(*sorted(element_digest(e).encode() for e in elems))


def set_names(executor) -> set[str]:
    """The names of our sets and maps (declarations only, no elements)."""
    msgs, _ = executor.dump(nl.GETSET, nl.attr(nl.SET_TABLE, TABLE))
    return {nl.string(nl.first(m, nl.SET_NAME)) or "" for m in msgs if nl.string(nl.first(m, nl.SET_TABLE)) == TABLE}


def objects(executor) -> dict[str, tuple[int, int | None]]:
    """Named objects of our table: name -> (type, packets if a counter)."""
    msgs, _ = executor.dump(nl.GETOBJ, nl.attr(nl.OBJ_TABLE, TABLE))
    out = {}
    for m in msgs:
        if nl.string(nl.first(m, nl.OBJ_TABLE)) != TABLE:
            continue
        kind = nl.u32(nl.first(m, nl.OBJ_TYPE)) or 0
        packets = nl.u64(nl.first(nl.parse(nl.first(m, nl.OBJ_DATA) or b""), nl.COUNTER_PACKETS)) \
            if kind == nl.OBJECT_COUNTER else None
        out[nl.string(nl.first(m, nl.OBJ_NAME)) or ""] = (kind, packets)
    return out


def snapshot(executor, owned_sets) -> Snapshot:
    """What drift compares; ``owned_sets`` are the sets whose whole content we write (bounded
    by the number of ports, allowlist entries and proxied services, never by traffic)."""
    names = chains(executor)
    found = rules(executor)
    snap = Snapshot(names, {c: found.get(c, []) for c in set(names) | set(found)})
    for name in owned_sets:
        try:
            snap.sets[name] = set_digest(executor, name)
        except NftFailure:
            snap.sets[name] = "missing"
    return snap


def compare(baseline: Snapshot, now: Snapshot) -> list[str]:
    problems = []
    for name, digest in baseline.chains.items():
        if name not in now.chains:
            problems.append(f"chain {name} is missing")
        elif now.chains[name] != digest:
            problems.append(f"chain {name} changed (hook, type or policy)")
    problems += [f"chain {n} is not ours" for n in sorted(set(now.chains) - set(baseline.chains))]
    for name, want in baseline.rules.items():
        have = now.rules.get(name, [])
        if name in now.chains and have != want:
            changed = [w.comment for w, h in zip(want, have) if w != h]
            problems.append(f"chain {name} has {len(have)} rules for {len(want)} applied"
                            + (f", changed: {', '.join(changed[:3])}" if changed else ""))
    for name, digest in baseline.sets.items():
        if now.sets.get(name) != digest:
            problems.append(f"set {name} has other elements than applied")
    return problems
