"""Render the ruleset model as libnftables JSON commands.

Each command is paired with the place it came from (a port, a policy rule, the base layout),
so a rejected batch can be reported against what the operator wrote.
"""

from __future__ import annotations

from connguard.compiler.ruleset import Chain, Element, NftSet, Rule
from connguard.names import FAMILY, TABLE

Cmd = tuple[dict, str]  # (command, origin)

T = {"family": FAMILY, "table": TABLE}


def table() -> Cmd:
    return {"add": {"table": {"family": FAMILY, "name": TABLE}}}, "table"


def add_set(s: NftSet) -> Cmd:
    body: dict = {**T, "name": s.name, "type": s.type[0] if len(s.type) == 1 else list(s.type)}
    if s.flags:
        body["flags"] = list(s.flags)
    if s.size is not None:
        body["size"] = s.size
    if s.timeout is not None:
        body["timeout"] = s.timeout
    if s.counter:
        body["stmt"] = [{"counter": None}]
    if s.map is not None:
        body["map"] = s.map
        return {"add": {"map": body}}, f"map {s.name}"
    return {"add": {"set": body}}, f"set {s.name}"


def _kind(s: NftSet) -> str:
    return "map" if s.map is not None else "set"


def flush_set(s: NftSet) -> Cmd:
    return {"flush": {_kind(s): {**T, "name": s.name}}}, f"{_kind(s)} {s.name}"


def delete_set(name: str, kind: str) -> Cmd:
    return {"delete": {kind: {**T, "name": name}}}, f"{kind} {name}"


def _elem(e: Element, is_map: bool):
    key = e.key if e.timeout is None else {"elem": {"val": e.key, "timeout": e.timeout}}
    return [key, e.value] if is_map else key


def add_elements(s: NftSet, elements, origin: str | None = None) -> Cmd:
    elems = [_elem(e, s.map is not None) for e in elements]
    return {"add": {"element": {**T, "name": s.name, "elem": elems}}}, origin or f"elements of {s.name}"


def delete_elements(s: NftSet, elements) -> Cmd:
    return {"delete": {"element": {**T, "name": s.name, "elem": [e.key for e in elements]}}}, f"elements of {s.name}"


def delete_limit(name: str) -> Cmd:
    return {"delete": {"limit": {**T, "name": name}}}, f"limit {name}"


def add_counter(name: str) -> Cmd:
    return {"add": {"counter": {**T, "name": name}}}, f"counter {name}"


def add_chain(c: Chain) -> Cmd:
    body: dict = {**T, "name": c.name}
    if c.hook is not None:
        body.update(type=c.hook.type, hook=c.hook.hook, prio=c.hook.priority, policy=c.hook.policy)
    return {"add": {"chain": body}}, f"chain {c.name}"


def flush_chain(name: str) -> Cmd:
    return {"flush": {"chain": {**T, "name": name}}}, f"chain {name}"


def delete_chain(name: str) -> Cmd:
    return {"delete": {"chain": {**T, "name": name}}}, f"chain {name}"


def comment(origin: str) -> str:
    """The rule's comment: nft takes at most 127 *bytes*; cut on a character boundary."""
    raw = origin.encode()[:127]
    return raw.decode(errors="ignore")


def add_rule(chain: str, r: Rule) -> Cmd:
    return {"add": {"rule": {**T, "chain": chain, "expr": list(r.expr), "comment": comment(r.origin)}}}, r.origin
