"""Netlink dumps of a table as the kernel would give them for a ruleset, for ``FakeExecutor``.

Expressions are encoded as their JSON (the real kernel has its own encoding: readback only
ever compares the kernel with itself, so any deterministic encoding will do here). Tests
tamper with the result to play the attacker: ``rule_msg``/``element_msg`` build replacements.
"""

from __future__ import annotations

import json
import struct

from connguard.compiler.ruleset import Element, NftSet, Ruleset
from connguard.names import TABLE
from connguard.nft import netlink as nl
from connguard.nft.render import comment

JUMP = 0xFFFFFFFD
CODES = {"accept": 1, "drop": 0, "jump": JUMP, "goto": 0xFFFFFFFC, "return": 0xFFFFFFFB}


def _msg(*attrs: bytes) -> nl.Attrs:
    return nl.parse(b"".join(attrs))


def expression(name: str, data: bytes) -> bytes:
    return nl.nested(nl.LIST_ELEM, nl.attr(nl.EXPR_NAME, name), nl.nested(nl.EXPR_DATA, data))


def rule_msg(chain: str, origin: str, expressions: list[bytes]) -> nl.Attrs:
    text = comment(origin).encode() + b"\0"
    userdata = bytes([nl.USERDATA_COMMENT, len(text)]) + text
    return _msg(nl.attr(nl.RULE_TABLE, TABLE), nl.attr(nl.RULE_CHAIN, chain),
                nl.attr(nl.RULE_HANDLE, struct.pack(">Q", 7)),
                nl.nested(nl.RULE_EXPRESSIONS, *expressions), nl.attr(nl.RULE_USERDATA, userdata))


def json_expressions(exprs) -> list[bytes]:
    out = []
    for e in exprs:
        name = next(iter(e)) if isinstance(e, dict) and e else "expr"
        out.append(expression(name, json.dumps(e, sort_keys=True).encode()))
    return out


def verdict_data(value) -> bytes:
    kind = next(iter(value))
    target = value[kind].get("target") if isinstance(value[kind], dict) else None
    inner = nl.attr(nl.VERDICT_CODE, struct.pack(">I", CODES[kind]))
    if target:
        inner += nl.attr(nl.VERDICT_CHAIN, target)
    return nl.nested(nl.ELEM_DATA, nl.nested(nl.DATA_VERDICT, inner))


def element_msg(name: str, elements: list[bytes]) -> nl.Attrs:
    return _msg(nl.attr(nl.SET_ELEM_LIST_TABLE, TABLE), nl.attr(nl.SET_ELEM_LIST_SET, name),
                nl.nested(nl.SET_ELEM_LIST_ELEMENTS, *elements))


def element(e: Element, s: NftSet) -> bytes:
    key = e.key.encode().ljust(16, b"\0") if isinstance(e.key, str) else json.dumps(e.key, sort_keys=True).encode()
    body = nl.nested(nl.ELEM_KEY, nl.attr(nl.DATA_VALUE, key))
    if s.map == "verdict" and e.value is not None:
        body += verdict_data(e.value)
    return nl.nested(nl.LIST_ELEM, body)


def dumps_for(rs: Ruleset) -> dict:
    out: dict = {
        nl.GETTABLE: [_msg(nl.attr(nl.TABLE_NAME, TABLE))],
        nl.GETCHAIN: [_msg(nl.attr(nl.CHAIN_TABLE, TABLE), nl.attr(nl.CHAIN_NAME, c.name),
                           nl.attr(nl.CHAIN_HANDLE, struct.pack(">Q", i)),
                           nl.attr(9, json.dumps(c.hook.__dict__ if c.hook else None).encode()))
                      for i, c in enumerate(rs.chains)],
        nl.GETRULE: [rule_msg(c.name, r.origin, json_expressions(r.expr)) for c in rs.chains for r in c.rules],
        nl.GETSET: [_msg(nl.attr(nl.SET_TABLE, TABLE), nl.attr(nl.SET_NAME, s.name)) for s in rs.sets],
        nl.GETOBJ: [_msg(nl.attr(nl.OBJ_TABLE, TABLE), nl.attr(nl.OBJ_NAME, n),
                         nl.attr(nl.OBJ_TYPE, struct.pack(">I", nl.OBJECT_COUNTER)),
                         nl.nested(nl.OBJ_DATA, nl.attr(nl.COUNTER_PACKETS, struct.pack(">Q", 0))))
                    for n in rs.counters],
    }
    for s in rs.sets:
        if not s.long_lived:
            out[(nl.GETSETELEM, s.name)] = [element_msg(s.name, [element(e, s) for e in s.elements or ()])]
    return out
