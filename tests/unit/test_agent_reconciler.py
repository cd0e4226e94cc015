"""The reconciler with the fake executor and a fake clock: nothing reaches the kernel before a
full state; server bans are placed with their remaining time, lengthened when the server
escalates, lifted when the snapshot drops them, and a local detection the server has not
carried back is never lifted; a port the kernel refuses is the one marked ERROR."""

from __future__ import annotations

import ipaddress
import json
import struct
import threading

from connguard.agent.reconciler import Reconciler
from connguard.agent.source import Desired, ServerBan
from connguard.model import parse_state
from connguard.nft import FakeExecutor
from connguard.nft import fakekernel as fk
from connguard.nft import netlink as nl

T0 = 1_800_000_000.0
STATE = parse_state({
    "policies": [{"name": "qos-p1", "rules": [{"type": "brute_force", "profile": "ssh", "max_attempts": 5,
                                               "window": 60, "ban_seconds": 60, "ban_multiplier": 2}]}],
    "ports": [{"interface_name": "tap0", "policy": "qos-p1"}, {"interface_name": "tap1", "policy": "qos-p1"}]})


class Kernel(FakeExecutor):
    """A fake executor whose ban and hit sets are listed as the kernel's netlink dumps would
    give them: ``port_bans`` [(ifname, ip, timeout, expires)], ``host_bans`` [(ip, timeout,
    expires)] (single IPv4 addresses), ``hits`` {set: {ifname: packets}}."""

    def __init__(self) -> None:
        super().__init__()
        self.port_bans: list[tuple] = []
        self.host_bans: list[tuple] = []
        self.hits: dict[str, dict[str, int]] = {}
        self.offenders: list[tuple[str, str]] = []

    def dump(self, msg, attrs=b"", *, limit=None, count=lambda m: 1):
        name = nl.string(nl.first(nl.parse(attrs), 2)) if attrs else None
        if msg == nl.GETTABLE:
            return [nl.parse(nl.attr(nl.TABLE_NAME, "connguard"))], True
        if msg != nl.GETSETELEM:
            return [], True
        if name == "ban4":
            elems = [_elem(f.encode().ljust(16, b"\0") + ipaddress.ip_address(ip).packed, t, e)
                     for f, ip, t, e in self.port_bans]
        elif name == "hostban4":
            elems = []
            for ip, t, e in self.host_bans:
                a = ipaddress.ip_address(ip)
                elems += [_elem(a.packed, t, e), _elem((a + 1).packed, None, None, end=True)]
        elif name == "offenders4":
            # (port, remote) or (port, remote, packets)
            elems = [_elem(o[0].encode().ljust(16, b"\0") + ipaddress.ip_address(o[1]).packed, None, None,
                           packets=o[2] if len(o) > 2 else None) for o in self.offenders]
        elif name in self.hits:
            elems = [_elem(f.encode().ljust(16, b"\0"), None, None, packets=n) for f, n in self.hits[name].items()]
        else:
            return [], True
        # as the kernel does, in several messages (one netlink attribute holds at most 64 KiB)
        return [fk.element_msg(name, elems[i:i + 500]) for i in range(0, len(elems), 500)], True


def _elem(key: bytes, timeout, expires, *, end=False, packets=None) -> bytes:
    body = nl.nested(nl.ELEM_KEY, nl.attr(nl.DATA_VALUE, key))
    if timeout is not None:
        body += nl.attr(nl.ELEM_TIMEOUT, struct.pack(">Q", int(timeout * 1000)))
        body += nl.attr(nl.ELEM_EXPIRATION, struct.pack(">Q", int(expires * 1000)))
    if end:
        body += nl.attr(nl.ELEM_FLAGS, struct.pack(">I", 1))
    if packets is not None:
        counter = nl.attr(nl.EXPR_NAME, "counter") + nl.nested(
            nl.EXPR_DATA, nl.attr(nl.COUNTER_PACKETS, struct.pack(">Q", packets)))
        body += nl.nested(nl.ELEM_EXPR, counter)
    return nl.nested(nl.LIST_ELEM, body)


class Src:
    def __init__(self) -> None:
        self.error = None
        self.wake = threading.Event()
        self.name = "test"
        self.next: Desired | None = None

    def poll(self):
        d, self.next = self.next, None
        return d


def _ops(ex: Kernel, since: int = 0) -> list[tuple[str, str, object]]:
    """(verb, set, element) of every element command sent since batch ``since``."""
    out = []
    for b in ex.batches[since:]:
        for cmd in b["nftables"]:
            for verb in ("add", "delete"):
                el = cmd.get(verb, {}).get("element")
                if el:
                    for e in el["elem"]:
                        out.append((verb, el["name"], e))
    return out


def _rec(tmp_path):
    ex, src, now = Kernel(), Src(), [T0]
    rec = Reconciler(src, ex, tmp_path, clock=lambda: now[0])
    return ex, src, now, rec


def test_nothing_reaches_the_kernel_before_a_full_state(tmp_path):
    ex, src, now, rec = _rec(tmp_path)
    for _ in range(5):
        rec.tick()
        now[0] += 1
    assert ex.batches == [] and ex.checks == [], f"{len(ex.batches)} batches before any snapshot"
    src.next = Desired(STATE, "server snapshot", 1, {"tap0": "port-0"})
    rec.tick()
    assert ex.batches, "the first snapshot was not applied"
    assert rec.apply_ok and rec.last_apply["revision"] == 1


def test_server_bans_placed_lengthened_and_lifted_but_never_a_local_one(tmp_path):
    ex, src, now, rec = _rec(tmp_path)
    shared = ServerBan("b1", "203.0.113.9", ((None, "203.0.113.9"),), T0 + 100, 1, "detected")
    src.next = Desired(STATE, "server snapshot", 1, server_bans=(shared,))
    rec.tick()
    placed = [o for o in _ops(ex) if o[1] == "hostban4"]
    assert placed == [("add", "hostban4", {"elem": {"val": "203.0.113.9", "timeout": 100}})], placed

    # the kernel holds it, and detected a ban of its own on tap0
    ex.host_bans = [("203.0.113.9", 100, 99)]
    ex.port_bans = [("tap0", "198.51.100.7", 60, 58)]  # banned 2 s before this pass
    n = len(ex.batches)
    now[0] += 1
    src.next = Desired(STATE, "server snapshot", 2)  # the shared ban deleted; the local one unknown yet
    rec.tick()
    ops = _ops(ex, n)
    assert ("delete", "hostban4", "203.0.113.9") in ops, ops
    assert not [o for o in ops if o[1] == "ban4"], f"a local detection was touched: {ops}"
    local = rec.book.bans[("tap0", "198.51.100.7")]
    assert local.origin == "detected" and not local.server
    assert [d.ban.ip_address for d in rec.detected] == ["198.51.100.7"]
    assert rec.detected[0].policy == "qos-p1" and rec.detected[0].rule_index == 0
    assert rec.detected[0].banned_at == now[0] - 2, "banned_at is when the kernel banned (timeout - expires ago)"

    # the server escalates it (a second offence on another host): the kernel ban is lengthened
    ex.host_bans = []
    n = len(ex.batches)
    longer = ServerBan("b2", "198.51.100.7", (("tap0", "198.51.100.7"), (None, "198.51.100.7")), now[0] + 240, 2)
    src.next = Desired(STATE, "server snapshot", 3, server_bans=(longer,))
    rec.tick()
    ops = _ops(ex, n)
    key = {"concat": ["tap0", "198.51.100.7"]}
    assert ("delete", "ban4", key) in ops and ("add", "ban4", {"elem": {"val": key, "timeout": 240}}) in ops, ops
    assert local.server and local.offence == 2 and local.expires_at == now[0] + 240

    # ban delete: the snapshot drops it, the (now server-known) kernel ban is lifted
    ex.port_bans = [("tap0", "198.51.100.7", 240, 239)]
    n = len(ex.batches)
    src.next = Desired(STATE, "server snapshot", 4)
    rec.tick()
    ops = _ops(ex, n)
    assert ("delete", "ban4", key) in ops, ops
    assert ("tap0", "198.51.100.7") not in rec.book.bans


def test_a_port_the_kernel_refuses_is_the_one_marked_error(tmp_path):
    ex, src, now, rec = _rec(tmp_path)
    ex.fail_when(lambda p: '"tap1"' in json.dumps(p), "Error: Could not process rule: No such file or directory")
    src.next = Desired(STATE, "server snapshot", 1)
    rec.tick()
    assert not rec.apply_ok
    assert set(rec.port_errors) == {"tap1"}, rec.port_errors
    assert "No such file" in rec.port_errors["tap1"]
    assert rec.apply_errors_total == 1
    rec.tick()
    assert rec.apply_errors_total == 1, "the same failure was counted twice"
