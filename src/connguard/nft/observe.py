"""Read back what the packet path did: counters, per-port rule hits, bans and offenders."""

from __future__ import annotations

from dataclasses import dataclass, field

from connguard.compiler.common import BAN, HOST_BAN, OFFENDERS, SET_FULL
from connguard.compiler.dispatch import BANNED
from connguard.compiler.ruleset import FAMILY, TABLE
from connguard.nft.executor import Executor, NftFailure


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


def _elems(body: dict):
    for e in body.get("elem", []) or []:
        if isinstance(e, dict) and "elem" in e:
            yield e["elem"]["val"], e["elem"]
        else:
            yield e, {}


def _key(val):
    if isinstance(val, dict) and "concat" in val:
        return val["concat"]
    if isinstance(val, dict) and "prefix" in val:
        return f"{val['prefix']['addr']}/{val['prefix']['len']}"
    if isinstance(val, dict) and "range" in val:
        return "-".join(val["range"])
    return val


def parse_ban_set(name: str, body: dict) -> list[KernelBan]:
    out = []
    for val, meta in _elems(body):
        key = _key(val)
        if name in BAN.values():
            ifname, ip = key
        else:
            ifname, ip = None, key
        out.append(KernelBan(ip, ifname, meta.get("expires"), meta.get("timeout")))
    return out


def _reported_sets(executor: Executor) -> tuple[list[dict], list[str]]:
    """The table without elements (``nft -t``), and the names of the sets worth reading back.
    Limiter buckets (up to a million elements each) are left in the kernel."""
    items = executor.query("list", "table", FAMILY, TABLE, terse=True).get("nftables", [])
    wanted = []
    for item in items:
        body = item.get("set") or item.get("map")
        if body is None:
            continue
        name = body["name"]
        if (name in BAN.values() or name in HOST_BAN.values() or name in OFFENDERS.values() or name == "to_vm"
                or (name.startswith("h") and body.get("stmt"))):
            wanted.append(name)
    return [i for i in items if "counter" in i], wanted


def observe(executor: Executor, *, bans_only: bool = False) -> Observation:
    obs = Observation()
    try:
        if bans_only:
            items, names = [], [*BAN.values(), *HOST_BAN.values()]
        else:
            items, names = _reported_sets(executor)
        for name in names:
            kind = "map" if name == "to_vm" else "set"
            items += executor.query("list", kind, FAMILY, TABLE, name).get("nftables", [])
    except NftFailure as exc:
        if "No such file or directory" in exc.message:
            return obs
        raise
    obs.present = True
    for item in items:
        if "counter" in item:
            c = item["counter"]
            if c["name"] in (BANNED, SET_FULL):
                obs.counters[c["name"]] = c.get("packets", 0)
        body = item.get("set") or item.get("map")
        if body is None:
            continue
        name = body["name"]
        if name in BAN.values() or name in HOST_BAN.values():
            obs.bans += parse_ban_set(name, body)
        elif name in OFFENDERS.values():
            obs.offenders += [tuple(_key(v)) for v, _ in _elems(body)]
        elif name == "to_vm":
            for e in body.get("elem", []) or []:
                obs.ports[e[0]] = e[1]["jump"]["target"]
        elif name.startswith("h") and body.get("stmt"):
            for val, meta in _elems(body):
                obs.hits[(name, val)] = (meta.get("counter") or {}).get("packets", 0)
    return obs
