"""Read back what the packet path did: counters, per-port rule hits, bans and offenders.

Everything is read over netlink (``readback``), one object at a time, never through nft's
whole-table cache: with the limiter sets full, one ``nft list`` of anything but a single set
took minutes. Sets an attacker can grow (bans, offenders) are read up to ``limit`` elements
unless asked for all; the counters, the dispatch map and the hit sets are bounded by the number
of ports. What cannot be interpreted (a table we did not write, a verdict that is not a jump to
a policy chain) is reported in ``problems``, never raised.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field

from connguard.names import BAN, BANNED, BANS_PLACED, COUNTERS, FAMILY, HOST_BAN, OFFENDERS, SET_FULL, TABLE, TO_BR, TO_VM, hit_set
from connguard.nft import netlink as nl
from connguard.nft import readback as rb
from connguard.nft.executor import Executor, NftFailure

IFNAMSIZ = 16
INTERVAL_END = 1
VERDICTS = {0: "drop", 1: "accept", 0xFFFFFFFF: "continue", 0xFFFFFFFE: "break", 0xFFFFFFFD: "jump",
            0xFFFFFFFC: "goto", 0xFFFFFFFB: "return"}


@dataclass(frozen=True)
class KernelBan:
    ip_address: str
    interface_name: str | None  # None: host-wide
    expires: float | None       # seconds left; None: no timeout
    timeout: float | None


@dataclass
class Observation:
    present: bool = False
    counters: dict[str, int] = field(default_factory=dict)            # name -> packets
    hits: dict[tuple[str, str], int] = field(default_factory=dict)    # (hit set, port) -> packets
    bans: list[KernelBan] = field(default_factory=list)
    offenders: list[tuple[str, str]] = field(default_factory=list)    # (port, remote)
    ports: dict[str, str] = field(default_factory=dict)               # ifname -> chain (to_vm)
    truncated: list[str] = field(default_factory=list)                # sets read only in part
    problems: list[str] = field(default_factory=list)                 # what could not be read


def _value(elem: nl.Attrs, kind: int) -> bytes:
    return nl.first(nl.parse(nl.first(elem, kind) or b""), nl.DATA_VALUE) or b""


def _ifname(raw: bytes) -> str:
    return raw[:IFNAMSIZ].split(b"\0", 1)[0].decode(errors="replace")


def _addr(raw: bytes, version: int):
    return ipaddress.ip_address(raw[:4] if version == 4 else raw[:16])


def _seconds(elem: nl.Attrs, kind: int) -> int | None:
    ms = nl.u64(nl.first(elem, kind))
    return None if ms is None else ms // 1000  # as nft prints them: whole seconds


def _packets(elem: nl.Attrs) -> int:
    """The counter of a set element (``NFTA_SET_ELEM_EXPR`` or ``..._EXPRESSIONS``)."""
    exprs = [nl.first(elem, nl.ELEM_EXPR) or b""]
    exprs += [e for _, e in nl.parse(nl.first(elem, nl.ELEM_EXPRESSIONS) or b"")]
    for e in exprs:
        attrs = nl.parse(e)
        if nl.string(nl.first(attrs, nl.EXPR_NAME)) == "counter":
            return nl.u64(nl.first(nl.parse(nl.first(attrs, nl.EXPR_DATA) or b""), nl.COUNTER_PACKETS)) or 0
    return 0


def verdict(elem: nl.Attrs) -> str:
    """A verdict map element's data as ``jump CHAIN``, ``accept``, ..."""
    v = nl.parse(nl.first(nl.parse(nl.first(elem, nl.ELEM_DATA) or b""), nl.DATA_VERDICT) or b"")
    code = nl.u32(nl.first(v, nl.VERDICT_CODE))
    name = VERDICTS.get(code if code is not None else -1, f"verdict {code}")
    chain = nl.string(nl.first(v, nl.VERDICT_CHAIN))
    return f"{name} {chain}" if chain else name


def port_bans(elems: list[bytes], version: int) -> list[KernelBan]:
    """``ifname . remote`` ban elements. The agent reads 100,000 of them at its audits, so the
    attributes are walked in place rather than through ``netlink.parse`` (a third of the time)."""
    out = []
    unpack = struct.unpack_from
    size = 4 if version == 4 else 16
    for raw in elems:
        key, timeout, expires, off, end = b"", None, None, 0, len(raw)
        while off + 4 <= end:
            length, kind = unpack("=HH", raw, off)
            if length < 4:
                break
            kind &= 0x7FFF
            if kind == nl.ELEM_KEY:  # nested: its first attribute is the value
                key = raw[off + 8:off + 4 + unpack("=H", raw, off + 4)[0]]
            elif kind == nl.ELEM_TIMEOUT:
                timeout = unpack(">Q", raw, off + 4)[0] // 1000  # as nft prints them: whole seconds
            elif kind == nl.ELEM_EXPIRATION:
                expires = unpack(">Q", raw, off + 4)[0] // 1000
            off += (length + 3) & ~3
        addr = key[IFNAMSIZ:IFNAMSIZ + size]
        text = socket.inet_ntop(socket.AF_INET, addr) if version == 4 and len(addr) == 4 else str(_addr(addr, version))
        out.append(KernelBan(text, _ifname(key), expires, timeout))
    return out


def host_bans(elems: list[bytes], version: int) -> list[KernelBan]:
    """An interval set holds each range as a start element and an end element (the address
    after the range, flagged INTERVAL_END); a start whose end was not read is left out."""
    points = []
    for raw in elems:
        e = nl.parse(raw)
        end = bool((nl.u32(nl.first(e, nl.ELEM_FLAGS)) or 0) & INTERVAL_END)
        points.append((int(_addr(_value(e, nl.ELEM_KEY), version)), end, e))
    points.sort(key=lambda p: (p[0], not p[1]))  # at one address an end comes before a start
    top = (1 << (32 if version == 4 else 128)) - 1
    out = []
    for i, (start, end, e) in enumerate(points):
        if end:
            continue
        stop = next((a for a, is_end, _ in points[i + 1:] if is_end), None)
        last = top if stop is None and i == len(points) - 1 else (None if stop is None else stop - 1)
        if last is None:
            continue
        first = ipaddress.ip_address(start) if version == 4 else ipaddress.IPv6Address(start)
        nets = list(ipaddress.summarize_address_range(first, ipaddress.ip_address(last) if version == 4
                                                       else ipaddress.IPv6Address(last)))
        if len(nets) == 1:
            net = nets[0]
            text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        else:
            text = f"{first}-{ipaddress.ip_address(last) if version == 4 else ipaddress.IPv6Address(last)}"
        out.append(KernelBan(text, None, _seconds(e, nl.ELEM_EXPIRATION), _seconds(e, nl.ELEM_TIMEOUT)))
    return out


def _read(executor: Executor, obs: Observation, name: str, limit: int | None) -> list[bytes]:
    try:
        elems, complete = rb.elements(executor, name, limit=limit)
    except NftFailure as exc:
        missing = "No such file or directory" in exc.message
        obs.problems.append(f"set {name} is missing" if missing else f"set {name}: {exc.message.strip()}")
        return []
    if not complete:
        obs.truncated.append(name)
    return elems


def _hit_sets(executor: Executor) -> list[str]:
    """Per-port refusal counter sets (``h<rule>``; status's hits): of the sets keyed by the
    interface alone and declared with a counter on every element, from ``nft -t list sets``,
    which reads no elements, told apart from the admitted and set-full ones by the names module's
    prefix. The
    offender sets also count per element but are keyed by (port, remote) and can hold a
    million entries: they are read bounded, by ``read_offenders``, never here."""
    items = executor.query("list", "sets", "table", FAMILY, TABLE, terse=True).get("nftables", [])
    # refusals only: the admitted (n) and set-full (u) counter sets are declared alike and are
    # read by name, by the reporter
    refused = hit_set("")
    return [b["name"] for i in items if (b := i.get("set")) and b.get("stmt") and b.get("type") == "ifname"
            and b["name"].startswith(refused)]


def observe(executor: Executor, *, bans_only: bool = False, limit: int | None = None) -> Observation:
    """``limit``: at most about that many elements of each ban and offender set (None: all;
    the agent's ban loop reads all, ``connguard status`` a bounded number)."""
    obs = Observation()
    if not rb.table_exists(executor):
        return obs
    obs.present = True
    objects = rb.objects(executor)
    try:
        hit_sets = [] if bans_only else _hit_sets(executor)
    except NftFailure as exc:
        hit_sets = []
        obs.problems.append(f"sets: {exc.message.strip()}")
    for v in (4, 6):
        obs.bans += port_bans(_read(executor, obs, BAN[v], limit), v)
        obs.bans += host_bans(_read(executor, obs, HOST_BAN[v], limit), v)
    if bans_only:
        return obs
    obs.counters = {n: objects[n][1] or 0 for n in COUNTERS if n in objects}
    obs.problems += [f"counter {n} is missing" for n in COUNTERS if n not in objects]
    for v in (4, 6):
        for raw in _read(executor, obs, OFFENDERS[v], limit):
            key = _value(nl.parse(raw), nl.ELEM_KEY)
            obs.offenders.append((_ifname(key), str(_addr(key[IFNAMSIZ:], v))))
    try:  # bridged ports (keyed by their bridge): the map exists only on hosts that have them
        bridged, _ = rb.elements(executor, TO_BR, limit=None)
    except NftFailure:
        bridged = []
    for raw in _read(executor, obs, TO_VM, None) + bridged:  # at most one element per port
        e = nl.parse(raw)
        port, target = _ifname(_value(e, nl.ELEM_KEY)), verdict(e)
        if target.startswith("jump "):
            obs.ports[port] = target[5:]
        else:
            obs.ports[port] = target
            obs.problems.append(f"map {TO_VM}: port {port} is sent to '{target}', not to a policy chain")
    obs.hits = read_hits(executor, hit_sets, obs)
    return obs


def bans_placed(executor: Executor) -> int | None:
    """The ``bans_placed`` counter: how many bans the packet path placed (None: no such counter,
    or no table). One dump of the table's few named objects, whatever the number of bans."""
    try:
        found = rb.objects(executor).get(BANS_PLACED)
    except NftFailure:
        return None
    return None if found is None else found[1]


def empty_sets(executor: Executor, names) -> list[str]:
    """Of ``names``, the sets that hold no element (or are missing): one buffer of each is read,
    never the set whole."""
    out = []
    for name in names:
        try:
            elems, _ = rb.elements(executor, name, limit=1)
        except NftFailure:
            elems = []
        if not elems:
            out.append(name)
    return out


def read_offenders(executor: Executor, limit: int) -> tuple[list[tuple[str, str, int]], bool]:
    """(port, remote, packets refused or, in monitor mode, that would have been) of the
    offender sets, at most about ``limit`` per family (an attacker grows them: which ones a
    cut-short read gives is the kernel's hash order, not the largest); and whether both were
    read whole."""
    obs = Observation()
    out = []
    for v in (4, 6):
        for raw in _read(executor, obs, OFFENDERS[v], limit):
            e = nl.parse(raw)
            key = _value(e, nl.ELEM_KEY)
            out.append((_ifname(key), str(_addr(key[IFNAMSIZ:], v)), _packets(e)))
    return out, not obs.truncated


def read_hits(executor: Executor, names, obs: Observation | None = None) -> dict[tuple[str, str], int]:
    """(hit set, port) -> packets of the named per-port hit sets (bounded by the ports; the
    agent's reporter reads only these, never the sets an attacker grows)."""
    obs = obs or Observation()
    hits = {}
    for name in names:
        for raw in _read(executor, obs, name, None):
            e = nl.parse(raw)
            hits[(name, _ifname(_value(e, nl.ELEM_KEY)))] = _packets(e)
    return hits

