"""Digests of the kernel's read-back (drift) and bounded observation, against the fake
executor's netlink dumps: what the packet path changes is not drift, every content change is."""

import struct

import pytest

from connguard.nft import Applier, FakeExecutor, observe
from connguard.nft import fakekernel as fk
from connguard.nft import netlink as nl
from connguard.nft import readback as rb
from connguard.nft.applier import stateful_sets
from test_applier import make


def applied(ports=("tapa", "tapb")):
    ex = FakeExecutor()
    rs = make(list(ports))
    ex.load_kernel(rs)
    ap = Applier(ex)
    ap.apply(rs)
    assert ap.baseline is not None and ap.drift() == []
    return ex, ap, rs


def counter(packets: int) -> bytes:
    return fk.expression("counter", nl.attr(1, struct.pack(">Q", packets * 60)) + nl.attr(2, struct.pack(">Q", packets)))


def chain_rules(ex, chain):
    return [i for i, m in enumerate(ex.dumps[nl.GETRULE]) if nl.string(nl.first(m, nl.RULE_CHAIN)) == chain]


def test_counter_values_handles_and_element_expiry_are_not_drift():
    ex, ap, rs = applied()
    # a rule whose counter moved, with another handle: the same rule
    i = chain_rules(ex, "bans4")[0]
    rule = rs.chain("bans4").rules[0]
    exprs = fk.json_expressions(rule.expr)
    before = fk.rule_msg("bans4", rule.origin, exprs + [counter(0)])
    after = [(nl.RULE_HANDLE, struct.pack(">Q", 99)) if k == nl.RULE_HANDLE else (k, p)
             for k, p in fk.rule_msg("bans4", rule.origin, exprs + [counter(12345)])]
    assert rb.rule_of(before) == rb.rule_of(after)
    ex.dumps[nl.GETRULE][i] = before
    ap.invalidate()
    ap.apply(rs)
    ex.dumps[nl.GETRULE][i] = after
    assert ap.drift() == []
    # an element's expiry and counter tick down / up; its key and timeout are what it is
    key = nl.nested(nl.ELEM_KEY, nl.attr(nl.DATA_VALUE, b"tapa".ljust(16, b"\0")))
    timeout = nl.attr(nl.ELEM_TIMEOUT, struct.pack(">Q", 60_000))
    a = key + timeout + nl.attr(nl.ELEM_EXPIRATION, struct.pack(">Q", 59_000)) + nl.nested(nl.ELEM_EXPR, counter(1))
    b = key + timeout + nl.attr(nl.ELEM_EXPIRATION, struct.pack(">Q", 1_000)) + nl.nested(nl.ELEM_EXPR, counter(9))
    assert rb.element_digest(a) == rb.element_digest(b)
    assert rb.element_digest(a) != rb.element_digest(key + nl.attr(nl.ELEM_TIMEOUT, struct.pack(">Q", 1)))


@pytest.mark.parametrize("change", ["verdict", "number", "comment", "foreign rule", "rule gone", "order"])
def test_every_rule_content_change_is_drift(change):
    ex, ap, rs = applied()
    rules = ex.dumps[nl.GETRULE]
    i = chain_rules(ex, "bans4")[0]
    rule = rs.chain("bans4").rules[0]
    exprs = fk.json_expressions(rule.expr)
    if change == "verdict":  # the attack of issue 8: same comment, accept instead of drop
        rules[i] = fk.rule_msg("bans4", rule.origin, exprs[:-1] + fk.json_expressions([{"accept": None}]))
    elif change == "number":
        rules[i] = fk.rule_msg("bans4", rule.origin, exprs[:-1] + [fk.expression("drop", b"\1")])
    elif change == "comment":
        rules[i] = fk.rule_msg("bans4", "something else", exprs)
    elif change == "foreign rule":
        rules.insert(i, fk.rule_msg("bans4", "", fk.json_expressions([{"accept": None}])))
    elif change == "rule gone":
        del rules[i]
    else:
        rules[i], rules[i + 1] = rules[i + 1], rules[i]
    problems = ap.drift()
    assert any("chain bans4" in p for p in problems), problems


def test_dispatch_verdict_allowlist_element_and_chain_changes_are_drift():
    ex, ap, rs = applied()
    to_vm = rs.set("to_vm")
    tapa = next(e for e in to_vm.elements if e.key == "tapa")
    tampered = [fk.element(e, to_vm) if e is not tapa else
                nl.nested(nl.LIST_ELEM, nl.nested(nl.ELEM_KEY, nl.attr(nl.DATA_VALUE, b"tapa".ljust(16, b"\0")))
                          + fk.verdict_data({"accept": None}))
                for e in to_vm.elements]
    ex.dumps[(nl.GETSETELEM, "to_vm")] = [fk.element_msg("to_vm", tampered)]
    assert ap.drift() == ["set to_vm has other elements than applied"]
    # status names the port sent elsewhere instead of failing on a verdict that is no jump
    obs = observe(ex)
    assert obs.ports["tapa"] == "accept" and obs.ports["tapb"].startswith("in_")
    assert any("tapa" in p and "accept" in p for p in obs.problems), obs.problems

    ex, ap, rs = applied()
    extra = nl.nested(nl.LIST_ELEM, nl.nested(nl.ELEM_KEY, nl.attr(nl.DATA_VALUE, b"\xc0\x00\x02\x07")))
    ex.dumps[(nl.GETSETELEM, "allow4")] = [fk.element_msg("allow4", [extra])]
    assert ap.drift() == ["set allow4 has other elements than applied"]

    ex, ap, rs = applied()
    ex.dumps[nl.GETCHAIN] = [m for m in ex.dumps[nl.GETCHAIN] if nl.string(nl.first(m, nl.CHAIN_NAME)) != "raw_pre"]
    assert "chain raw_pre is missing" in ap.drift()
    ex.dumps[nl.GETCHAIN].append(nl.parse(nl.attr(nl.CHAIN_TABLE, "connguard") + nl.attr(nl.CHAIN_NAME, "mine")))
    assert "chain mine is not ours" in ap.drift()


def test_a_missing_table_or_set_is_drift_and_observe_says_so():
    ex, ap, rs = applied()
    ex.dumps[nl.GETSET] = [m for m in ex.dumps[nl.GETSET] if nl.string(nl.first(m, nl.SET_NAME)) != "ban4"]
    assert "set ban4 is missing" in ap.drift()
    ex.dumps[nl.GETTABLE] = []
    assert ap.drift() == ["table inet connguard is missing"]
    assert observe(ex).present is False


def test_observe_reads_bans_bounded_and_decodes_ranges():
    ex = FakeExecutor()
    ex.load_kernel(make(["tapa"]))

    def port_ban(i):
        key = b"tapa".ljust(16, b"\0") + bytes([10, 0, i >> 8, i & 255])
        return nl.nested(nl.LIST_ELEM, nl.nested(nl.ELEM_KEY, nl.attr(nl.DATA_VALUE, key))
                         + nl.attr(nl.ELEM_TIMEOUT, struct.pack(">Q", 600_000))
                         + nl.attr(nl.ELEM_EXPIRATION, struct.pack(">Q", 500_500)))

    ex.dumps[(nl.GETSETELEM, "ban4")] = [fk.element_msg("ban4", [port_ban(i)]) for i in range(3)]

    def point(addr: bytes, end=False):
        return nl.nested(nl.LIST_ELEM, nl.nested(nl.ELEM_KEY, nl.attr(nl.DATA_VALUE, addr))
                         + (nl.attr(nl.ELEM_FLAGS, struct.pack(">I", 1)) if end else b""))

    # as the kernel dumps an interval set: ends flagged, highest first, 0.0.0.0 as an end
    ex.dumps[(nl.GETSETELEM, "hostban4")] = [fk.element_msg("hostban4", [
        point(bytes([203, 0, 113, 10]), end=True), point(bytes([203, 0, 113, 9])),
        point(bytes([198, 51, 101, 0]), end=True), point(bytes([198, 51, 100, 0])),
        point(bytes(4), end=True)])]
    obs = observe(ex)
    assert [(b.ip_address, b.interface_name, b.timeout, b.expires) for b in obs.bans] == [
        ("10.0.0.0", "tapa", 600, 500), ("10.0.0.1", "tapa", 600, 500), ("10.0.0.2", "tapa", 600, 500),
        ("198.51.100.0/24", None, None, None), ("203.0.113.9", None, None, None)]
    assert obs.counters == {"banned": 0, "bans_placed": 0, "set_full": 0} and obs.problems == []


def test_a_table_we_did_not_write_is_reported_not_raised():
    ex = FakeExecutor()
    ex.dumps = {nl.GETTABLE: [nl.parse(nl.attr(nl.TABLE_NAME, "connguard"))],
                (nl.GETSETELEM, "to_vm"): [fk.element_msg("to_vm", [nl.nested(nl.LIST_ELEM, b"\x00\x00")])]}
    for name in ("ban4", "ban6", "hostban4", "hostban6", "offenders4", "offenders6"):
        ex.dumps[(nl.GETSETELEM, name)] = rb.NftFailure("netlink: No such file or directory")
    obs = observe(ex)
    assert obs.present and obs.bans == []
    assert {"counter banned is missing", "counter set_full is missing"} <= set(obs.problems)
    assert "set ban4 is missing" in obs.problems, obs.problems
    assert any("to_vm" in p for p in obs.problems), obs.problems


def test_buckets_made_by_a_tampered_rule_are_emptied_by_the_repair():
    ex, ap, rs = applied()
    policy = next(c for c in rs.chains if c.name.startswith("in_") and stateful_sets(c))
    i = chain_rules(ex, policy.name)[0]
    rule = policy.rules[0]
    ex.dumps[nl.GETRULE][i] = fk.rule_msg(policy.name, rule.origin, fk.json_expressions([{"accept": None}]))
    problems = ap.drift()
    assert any("will be emptied" in p for p in problems), problems
    ap.invalidate()
    ex.listing = {"nftables": [{"set": {"name": s.name, "table": "connguard",
                                        "type": list(s.type) if len(s.type) > 1 else s.type[0], "flags": list(s.flags)}}
                               for s in rs.sets if s.map is None]}
    ap.apply(rs)
    flushed = {c["flush"]["set"]["name"] for c in ex.batches[-1]["nftables"] if "set" in c.get("flush", {})}
    assert stateful_sets(policy) <= flushed, (stateful_sets(policy), flushed)
    assert not flushed & {"ban4", "ban6", "hostban4", "hostban6"}, flushed
    assert ap.reset_on_repair == set()
    # a second repair of something else keeps the buckets
    ap.invalidate()
    ap.apply(rs)
    flushed = {c["flush"]["set"]["name"] for c in ex.batches[-1]["nftables"] if "set" in c.get("flush", {})}
    assert not flushed & stateful_sets(policy), flushed
