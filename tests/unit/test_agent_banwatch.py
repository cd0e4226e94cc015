"""When the agent reads the ban sets whole (agent/banwatch.py), with the fake executor and a
fake clock: an idle agent never does, beyond the audit; a moved ``bans_placed`` counter is read
at the next pass and the ban recorded; a flushed ban set is restored at the next pass; a flood
of bans (the counter moving every pass) gets at most CHANGE_SHARE of the time; state-file bans
are placed by the ban pass, once, in one command per set, never through the compiler."""

from __future__ import annotations

import struct
import time

from connguard.agent.banwatch import AUDIT_MAX, AUDIT_MIN, CHANGE_SHARE, BanWatch
from connguard.agent.reconciler import Reconciler
from connguard.agent.source import Desired
from connguard.model import parse_state
from connguard.nft import netlink as nl
from test_agent_reconciler import STATE, T0, Kernel, Src, _ops


class Counted(Kernel):
    """The fake kernel with a ``bans_placed`` counter, counting whole reads of ``ban4``."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock
        self.banned: list[tuple] = []  # (ifname, ip, timeout, when)
        self.placed = 0
        self.whole_reads = 0
        self.read_cost = 0.0  # CPU seconds a whole read of ban4 takes

    def dump(self, msg, attrs=b"", *, limit=None, count=lambda m: 1):
        if msg == nl.GETOBJ:
            data = nl.nested(nl.OBJ_DATA, nl.attr(nl.COUNTER_PACKETS, struct.pack(">Q", self.placed)))
            return [nl.parse(nl.attr(nl.OBJ_TABLE, "connguard") + nl.attr(nl.OBJ_NAME, "bans_placed")
                             + nl.attr(nl.OBJ_TYPE, struct.pack(">I", nl.OBJECT_COUNTER)) + data)], True
        name = nl.string(nl.first(nl.parse(attrs), 2)) if attrs else None
        now = self.clock()
        self.port_bans = [(f, ip, t, t - (now - at)) for f, ip, t, at in self.banned if at + t > now]
        if msg == nl.GETSETELEM and name == "ban4" and limit is None:
            self.whole_reads += 1
            end = time.thread_time() + self.read_cost
            while time.thread_time() < end:  # the agent measures its CPU time, not wall time
                pass
        return super().dump(msg, attrs, limit=limit, count=count)

    def ban(self, ifname: str, ip: str, timeout: int) -> None:
        """The packet path bans: the element, and the counter after it."""
        self.banned.append((ifname, ip, timeout, self.clock()))
        self.placed += 1


def _rec(tmp_path, state=STATE):
    now = [T0]
    ex, src = Counted(lambda: now[0]), Src()
    # no drift checks: the fake lists no chains, so each would be a full sync (a forced read)
    rec = Reconciler(src, ex, tmp_path, clock=lambda: now[0], drift_interval=3600)
    src.next = Desired(state, "state file test")
    return ex, src, now, rec


def test_the_watch_reads_on_change_at_audits_and_never_more_than_its_share():
    w = BanWatch()
    assert w.due(0, 5, False) == "sync", "the first pass reads whole"
    w.read(0, 5, 0.001, {})
    assert [w.due(t, 5, False) for t in (1, 2)] == [None, None]
    assert w.due(AUDIT_MIN, 5, False) == "audit", "a small host audits every AUDIT_MIN"
    assert w.due(1, 6, False) == "new bans" and w.due(1, None, False) == "new bans"
    assert w.due(1, 5, True) == "flushed"
    w.read(10, 6, 2.0, {})  # a read that took 2 s (a very large set)
    gap = 2.0 / CHANGE_SHARE
    assert w.due(10 + gap - 1, 7, False) is None, "a read for new bans came sooner than its share allows"
    assert w.due(10 + gap, 7, False) == "new bans"
    assert w.audit_interval() == min(AUDIT_MAX, 2.0 / 0.005), w.audit_interval()
    w.read(0, 6, 100.0, {})
    assert w.audit_interval() == AUDIT_MAX, "no host goes longer than AUDIT_MAX without an audit"
    w.placed("ban4", 50.0)
    w.placed("ban4", 20.0)
    assert w.expect["ban4"] == 50.0 and w.expected(48) == ["ban4"] and w.expected(49.5) == []
    w.placed("ban4", None)
    assert w.expected(10_000) == ["ban4"], "a ban without expiry keeps its set expected"


def test_an_idle_agent_reads_the_ban_sets_only_at_audits_and_a_new_ban_at_the_next_pass(tmp_path):
    ex, src, now, rec = _rec(tmp_path)
    ex.ban("tap0", "198.51.100.1", 3600)
    rec.tick()
    assert ex.whole_reads == 1 and ("tap0", "198.51.100.1") in rec.book.bans
    reads = ex.whole_reads
    for _ in range(30):
        now[0] += 1
        rec.tick()
    audits = ex.whole_reads - reads
    assert audits <= 30 / AUDIT_MIN + 1, f"{audits} whole reads in 30 idle passes"
    # the packet path bans: seen, recorded and queued for the reporter at the next pass
    ex.ban("tap1", "198.51.100.2", 60)
    now[0] += 1
    reads = ex.whole_reads
    rec.tick()
    assert ex.whole_reads == reads + 1, "a moved counter did not trigger a read"
    assert ("tap1", "198.51.100.2") in rec.book.bans
    assert [d.ban.ip_address for d in rec.detected] == ["198.51.100.1", "198.51.100.2"], list(rec.detected)


def test_a_flushed_ban_set_is_restored_at_the_next_pass(tmp_path):
    ex, src, now, rec = _rec(tmp_path)
    ex.ban("tap0", "198.51.100.1", 3600)
    rec.tick()
    now[0] += 1
    rec.tick()
    ex.banned = []  # nft flush set inet connguard ban4: the counter does not move
    n = len(ex.batches)
    now[0] += 1
    rec.tick()
    restored = [o for o in _ops(ex, n) if o[0] == "add" and o[1] == "ban4"]
    assert restored and restored[0][2]["elem"]["val"] == {"concat": ["tap0", "198.51.100.1"]}, restored
    assert 3590 < restored[0][2]["elem"]["timeout"] <= 3600, restored


def test_a_flood_of_bans_gets_at_most_its_share_of_the_agents_time(tmp_path):
    ex, src, now, rec = _rec(tmp_path)
    rec.tick()
    ex.read_cost = 0.02
    passes, reads = 100, ex.whole_reads
    for i in range(passes):
        ex.ban("tap0", f"198.51.{i // 250}.{i % 250 + 1}", 600)  # a new ban every pass
        now[0] += 0.1
        rec.tick()
    done = ex.whole_reads - reads
    # a read needs a gap of cost / CHANGE_SHARE (>= 0.4 s, 4 passes of 0.1 s) after the last one
    assert 0 < done <= passes * 0.1 / (0.02 / CHANGE_SHARE) + 1, f"{done} whole reads in {passes} passes"
    # none missed: the next read after the flood records every ban the kernel still holds
    now[0] += 10
    rec.tick()
    assert len(rec.book.bans) == passes, len(rec.book.bans)


def test_state_file_bans_are_placed_by_the_ban_pass_once(tmp_path):
    bans = [{"ip_address": f"10.0.{i // 250}.{i % 250 + 1}", "interface_name": "tap0", "seconds": 600}
            for i in range(1000)]
    bans += [{"ip_address": "192.0.2.0/24"}, {"ip_address": "192.0.2.128/25", "seconds": 60}]
    state = parse_state({**STATE.model_dump(mode="json"), "bans": bans})
    ex, src, now, rec = _rec(tmp_path, state)
    rec.tick()
    assert rec.loaded.ruleset.seeds == (), "state-file bans went through the compiler"
    ops = _ops(ex)
    port = [o for o in ops if o[1] == "ban4"]
    host = [o for o in ops if o[1] == "hostban4"]
    assert len(port) == 1000 and all(o[2]["elem"]["timeout"] == 600 for o in port), len(port)
    assert host == [("add", "hostban4", {"prefix": {"addr": "192.0.2.0", "len": 24}})], host
    cmds = [c for b in ex.batches for c in b["nftables"] if c.get("add", {}).get("element", {}).get("name") == "ban4"]
    assert len(cmds) == 1, f"{len(cmds)} commands for the port bans"
    assert rec.book.bans[("tap0", "10.0.0.1")].origin == "manual" and len(rec.book.seeded) == 1001
    # the same file again (a reload, a restart): nothing placed a second time
    n = len(ex.batches)
    src.next = Desired(state, "state file test")
    now[0] += 1
    ex.banned = [("tap0", f"10.0.{i // 250}.{i % 250 + 1}", 600, now[0] - 1) for i in range(1000)]
    rec.tick()
    again = [o for o in _ops(ex, n) if o[0] == "add" and o[1] == "ban4"]
    assert again == [], again[:3]
    rec2 = Reconciler(Src(), ex, tmp_path, clock=lambda: now[0], drift_interval=3600)
    rec2.source.next = Desired(state, "state file test")
    rec2.tick()
    assert not [o for o in _ops(ex, n) if o[0] == "add" and o[1] == "ban4"], "a restart placed them again"
