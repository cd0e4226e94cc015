"""Floods an attacker would send, really sent (crafted packets from raw sockets, hping3), and
the protections that must hold against them (issue 8, items 4-6, and what held before):

- a spoofed SYN flood "from" an allowlisted prefix still meets the SYN budget, the per-port
  conntrack cap and synproxy, while an allowlisted real client is exempt from per-source limits;
- a VM's egress rate and concurrent caps hold towards a neighbour's synproxy-protected port;
- SYN+FIN, SYN+ACK and SYN+RST count against the SYN budget and get no answer (no reflection);
- synproxy under a big random-source flood; fragmented and extension-header SYNs, SYNs with a
  payload, IPv4-mapped IPv6 sources and /64 rotation all meet the budget and the limits.

Figures are measured with nft counters in the lab's VM and client namespaces (spoof.Probe) and
with connguard's own per-port hit counters.
"""

import random
import time

import pytest

import spoof
from connguard.compiler import compile_host
from nsenforce import enforce, kernel, module_lab, state_for, within

pytestmark = pytest.mark.netns

lab = module_lab(vms=2, clients=1, sources=2, vm_tcp=(80, 8080))
FRESH_CONNGUARD = True

SPOOFED = "10.88.0.128/25"  # inside client 0's on-link /24, owned by nobody: the allowlisted prefix
# Each test floods from its own part of it: the VM keeps answering an earlier test's half-open
# connections for a minute (SYN-ACK retransmits), and a few of those sources then reappear in
# the host's conntrack table; a test counts only its own sources.
FLOOD = {"tracked": "10.88.0.128/26", "synproxy": "10.88.0.192/27", "client": "10.88.0.224/27"}
SYN_ONLY = "tcp flags & (fin|syn|rst|ack) == syn"
ANY_SYN = "tcp flags & syn == syn"


def rule_hits(lab, rules, index, vm, **kw) -> int:
    """Refusals counted by rule ``index`` of the policy for ``vm``'s port."""
    names = {n for n, what in compile_host(state_for(lab, rules, **kw)).hit_sets.items()
             if what.startswith(f"policy p rule {index} ")}
    return sum(n for (name, port), n in kernel(lab).hits.items() if name in names and port == vm.tap)


def tracked(lab, *args) -> int:
    proc = lab.exec(lab.host, ["conntrack", "-L", *args], capture_output=True, text=True)
    return sum(1 for line in proc.stdout.splitlines() if line.strip())


def figures(**values) -> None:
    """The measured figures, printed for the report (pytest -rP shows them)."""
    print("figures:", ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()))


def timed_send(netns, packets, rate, duration):
    started = time.monotonic()
    sent = spoof.send(netns, packets, rate, duration)
    return sent, time.monotonic() - started


# -- item 4: the allowlist exempts from punishment, not from flood protection ------------------

BUDGET, CAP = 1000, 300


@pytest.mark.parametrize("synproxy", [False, True], ids=["tracked", "synproxy"])
def test_spoofed_flood_from_allowlisted_prefix_meets_budget_cap_and_synproxy(lab, synproxy):
    vm, cl = lab.vms[0], lab.clients[0]
    rules = [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": BUDGET, "synproxy": synproxy},
             {"type": "connection_limit", "direction": "ingress", "scope": "port", "max_connections": CAP},
             {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 5}]
    extra = {"allowlist": [{"remote_ip_prefix": SPOOFED}]}
    enforce(lab, rules, **extra)
    sources = FLOOD["synproxy" if synproxy else "tracked"]
    packets = spoof.tcp_packets(spoof.addresses(sources, 30), vm.ipv4, 80, "S", n=12_000)
    with spoof.Probe(vm.netns, {"flood": f"ip saddr {sources} tcp dport 80 {SYN_ONLY}"}) as at_vm:
        sent, elapsed = timed_send(cl.netns, packets, 3000, 4)
        entries = tracked(lab, "-d", vm.ipv4, "-s", sources)
        reached = at_vm.read()["flood"]
    over_budget = rule_hits(lab, rules, 0, vm, **extra)
    admitted = BUDGET * (elapsed + 1)
    figures(sent=sent, seconds=elapsed, over_budget=over_budget, entries=entries, reached_vm=reached)
    # the budget saw the allowlisted sources: everything above it was dropped
    assert over_budget >= sent - admitted - 0.05 * sent, (
        f"budget dropped {over_budget} of {sent} SYNs in {elapsed:.1f}s (budget {BUDGET}/s)")
    if synproxy:
        # proxied: no conntrack entry and not one spoofed SYN on the VM
        assert entries == 0 and reached == 0, (
            f"{entries} entries from the spoofed sources, {reached} spoofed SYNs reached the VM")
    else:
        # tracked: the per-port cap bounds the table (without it: one entry per admitted SYN).
        # The kernel's conncount is not exact across CPUs under a flood (an entry being
        # confirmed on the other CPU is not found and not counted): 303 of 300 measured here.
        assert CAP // 2 <= entries <= CAP * 1.03, f"{entries} entries towards the VM (cap {CAP}, {sent} SYNs sent)"
        assert reached <= CAP * 1.1, f"{reached} spoofed SYNs reached the VM (cap {CAP})"


def test_allowlisted_client_is_exempt_from_per_source_limits_only(lab):
    """During a spoofed flood from the allowlisted prefix (below the budget, proxied: it costs
    nothing), the allowlisted real client connects at its own pace, 6x the per-remote limit; a
    non-allowlisted address of the same client is held to the limit; and the allowlisted client
    is still held to the port's aggregate."""
    import threading

    vm, cl = lab.vms[0], lab.clients[0]
    per_remote, per_port = 5, 60
    rules = [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": 5000},
             {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": per_remote},
             {"type": "connection_rate_limit", "direction": "ingress", "scope": "port", "max_cps": per_port}]
    extra = {"allowlist": [{"remote_ip_prefix": SPOOFED}, {"remote_ip_prefix": f"{cl.ipv4}/32"}]}
    enforce(lab, rules, **extra)
    sources = FLOOD["client"]
    packets = spoof.tcp_packets(spoof.addresses(sources, 30), vm.ipv4, 80, "S", n=8_000)
    out = {}
    flood = threading.Thread(target=lambda: out.setdefault("sent", spoof.send(cl.netns, packets, 1000, 8)))
    with spoof.Probe(vm.netns, {"flood": f"ip saddr {sources} tcp dport 80 {SYN_ONLY}"}) as at_vm:
        flood.start()
        try:
            trusted = cl.flood(vm, 80, rate=6 * per_remote, duration=7)
        finally:
            flood.join(60)
        reached = at_vm.read()["flood"]
    figures(spoofed=out.get("sent"), reached_vm=reached, trusted=trusted.admitted_rate(skip=1))
    assert out.get("sent", 0) >= 7000, out
    entries = tracked(lab, "-d", vm.ipv4, "-s", sources)
    assert reached == 0 and entries == 0, f"{reached} spoofed SYNs reached the VM, {entries} entries from them"
    assert within(trusted.admitted_rate(skip=1), 6 * per_remote), (
        f"allowlisted client admitted {trusted.admitted_rate(skip=1):.1f}/s of {6 * per_remote}/s: {trusted.series}")
    other = cl.flood(vm, 80, rate=6 * per_remote, duration=7, sources=[cl.extra_ipv4[0]])
    figures(other=other.admitted_rate(skip=1))
    assert within(other.admitted_rate(skip=1), per_remote, 0.2), (
        f"non-allowlisted source admitted {other.admitted_rate(skip=1):.1f}/s, limit {per_remote}/s: {other.series}")
    heavy = cl.flood(vm, 80, rate=3 * per_port, duration=7)
    figures(heavy=heavy.admitted_rate(skip=1))
    assert within(heavy.admitted_rate(skip=1), per_port), (
        f"allowlisted client admitted {heavy.admitted_rate(skip=1):.1f}/s, port aggregate {per_port}/s: {heavy.series}")


# -- item 5: egress limits see connections to a proxied neighbour ------------------------------

@pytest.mark.parametrize("port", [80, 8080], ids=["proxied", "plain"])
def test_egress_rate_and_cap_hold_towards_a_neighbour(lab, port):
    sender, receiver = lab.vms
    rate, cap = 20, 10
    rules = [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": 1000},
             {"type": "connection_rate_limit", "direction": "egress", "scope": "port", "max_cps": rate},
             {"type": "connection_limit", "direction": "egress", "scope": "port", "max_connections": cap}]
    enforce(lab, rules, vms=(0, 1))
    result = sender.flood(receiver, port, rate=5 * rate, duration=7)
    figures(port=port, admitted_rate=result.admitted_rate(skip=1))
    assert within(result.admitted_rate(skip=1), rate), (
        f"{result.admitted_rate(skip=1):.1f} new/s to {port} admitted, egress limit {rate}/s: {result.series}")
    time.sleep(1.2)  # a fresh second of tokens: the cap, not the rate, must stop the next ones
    with sender.hold(receiver, port, 3 * cap, timeout=3) as held:
        alive = held.alive()
        entries = tracked(lab, "-p", "tcp", "--state", "ESTABLISHED", "-s", sender.ipv4, "-d", receiver.ipv4)
    figures(connected=held.connected, alive=alive, entries=entries)
    assert held.connected == cap and alive == cap, (
        f"{held.connected} of {3 * cap} connections opened to {port}, {alive} alive, egress cap {cap}")
    assert entries == cap, f"{entries} established entries from the sender, cap {cap}"


def test_spoofed_flood_from_a_neighbour_vm_is_tracked_and_capped(lab):
    """What the receiver gives up for item 5: SYNs from a neighbour VM are not proxied. A
    neighbour spoofing sources (and without egress limits) makes tracked half-open entries, as
    against an unproxied service, and the receiver's per-port cap bounds them."""
    sender, receiver = lab.vms
    cap = CAP
    rules = [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": BUDGET},
             {"type": "connection_limit", "direction": "ingress", "scope": "port", "max_connections": cap}]
    enforce(lab, rules, vms=(0, 1))
    packets = spoof.tcp_packets(spoof.addresses("10.99.0.0/16", 4000), receiver.ipv4, 80, "S", n=8000)
    sent, elapsed = timed_send(sender.netns, packets, 2000, 4)
    entries = tracked(lab, "-d", receiver.ipv4)
    figures(sent=sent, seconds=elapsed, entries=entries)
    assert cap // 2 <= entries <= cap * 1.03, (
        f"{entries} entries towards the receiver from {sent} spoofed SYNs of a neighbour (cap {cap})")


# -- item 6: every SYN meets the budget --------------------------------------------------------

@pytest.mark.parametrize("synproxy", [False, True], ids=["tracked", "synproxy"])
def test_odd_syn_flags_count_against_the_budget_and_are_not_answered(lab, synproxy):
    """From the client's real address (answers come back to it): SYN+FIN, SYN+ACK, SYN+RST
    and plain SYNs interleaved, 4x the budget. If the odd ones skipped the budget, plain SYNs
    alone (the budget's rate) would all be answered."""
    vm, cl = lab.vms[0], lab.clients[0]
    budget = 200
    rules = [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": budget, "synproxy": synproxy}]
    enforce(lab, rules)
    kinds = ["S", "SF", "SA", "SR"]
    per_kind = [spoof.tcp_packets([cl.ipv4], vm.ipv4, 80, k, n=800, seed=i) for i, k in enumerate(kinds)]
    packets = [p for group in per_kind for p in group]
    random.Random(4).shuffle(packets)  # not in step with the budget's refill: no kind favoured
    answers = {"synack": f"ip saddr {vm.ipv4} tcp sport 80 tcp flags & (syn|ack) == syn|ack",
               "rst": f"ip saddr {vm.ipv4} tcp sport 80 tcp flags & rst == rst"}
    odd = {"odd": f"ip saddr {cl.ipv4} tcp dport 80 {ANY_SYN} tcp flags & (fin|syn|rst|ack) != syn"}
    with spoof.Probe(cl.netns, answers) as at_client, spoof.Probe(vm.netns, odd) as at_vm:
        sent, elapsed = timed_send(cl.netns, packets, 4 * budget, 4)
        time.sleep(0.5)
        got, reached = at_client.read(), at_vm.read()["odd"]
    admitted = budget * (elapsed + 1)
    over_budget = rule_hits(lab, rules, 0, vm)
    figures(sent=sent, seconds=elapsed, over_budget=over_budget, reached_vm=reached, **got)
    assert over_budget >= sent - admitted - 0.05 * sent, (
        f"budget dropped {over_budget} of {sent} SYN-flagged packets in {elapsed:.1f}s (budget {budget}/s)")
    assert reached == 0, f"{reached} SYN+FIN/ACK/RST packets reached the VM"
    # answers only for the plain SYNs among what the budget admitted (a quarter of it)
    assert got["synack"] <= 0.4 * admitted, f"{got['synack']} SYN-ACKs for {sent} SYNs, budget {admitted:.0f}"
    assert got["synack"] >= 0.1 * admitted, f"only {got['synack']} SYN-ACKs: plain SYNs must still be answered"
    assert got["rst"] == 0, f"{got['rst']} RSTs answered the odd SYNs"


# -- keep what held ----------------------------------------------------------------------------

def test_synproxy_big_random_source_flood_reaches_nothing_and_tracks_nothing(lab):
    vm, cl = lab.vms[0], lab.clients[0]
    enforce(lab, [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": 100_000}])
    with spoof.Probe(vm.netns, {"syn": f"tcp dport 80 {ANY_SYN}"}) as at_vm:
        result = cl.syn_flood(vm, 80, duration=3)  # hping3 --flood --rand-source
        entries = tracked(lab, "-d", vm.ipv4)
        reached = at_vm.read()["syn"]
    figures(sent=result.sent, reached_vm=reached, entries=entries)
    assert result.sent and result.sent >= 50_000, f"hping3 sent only {result.sent} SYNs"
    assert reached == 0 and entries == 0, (
        f"of {result.sent} spoofed SYNs, {reached} reached the VM and {entries} conntrack entries were made")


def _syns(lab, n, ipv6=False, **kw):
    cl, vm = lab.clients[0], lab.vms[0]
    return spoof.tcp_packets([cl.address(ipv6)], vm.address(ipv6), 80, "S", n=n, **kw)


# shape -> (packets, whether the host reassembles them into a SYN that conntrack tracks)
SHAPES = {
    # the first fragment holds 16 bytes of the TCP header (the flags, not the window/checksum)
    "ipv4-tiny-fragments": lambda lab, n: (spoof.fragmented(_syns(lab, n), 16), True),
    # the first fragment holds the whole TCP header, the payload follows
    "ipv6-fragments": lambda lab, n: (spoof.fragmented(_syns(lab, n, True, payload=b"x" * 40), 24), True),
    # RFC 8200: a first fragment without the whole upper-layer header is not reassembled; it
    # passes as ct state invalid and the VM's stack discards it
    "ipv6-tiny-fragments": lambda lab, n: (spoof.fragmented(_syns(lab, n, True), 16), False),
    "ipv6-extension-headers": lambda lab, n: (spoof.with_extension_headers(_syns(lab, n, True)), True),
    "syn-with-payload": lambda lab, n: (_syns(lab, n, payload=b"GET / HTTP/1.0\r\n\r\n" * 20), True),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_odd_shaped_syns_meet_budget_and_per_remote_limit(lab, shape):
    """The host reassembles fragments before its rules and finds TCP behind extension headers:
    the SYN budget and the per-remote rate limit both see these SYNs, and what the VM answers
    stays within the tighter of the two."""
    vm, cl = lab.vms[0], lab.clients[0]
    budget, per_remote = 100, 20
    rules = [{"type": "syn_flood", "port_range_min": 80, "max_syn_rate": budget, "synproxy": False},
             {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": per_remote}]
    enforce(lab, rules)
    n = 1200
    packets, reassembled = SHAPES[shape](lab, n)
    per_syn = len(packets) // n
    with spoof.Probe(cl.netns, {"synack": "tcp sport 80 tcp flags & (syn|ack) == syn|ack"}) as at_client:
        sent, elapsed = timed_send(cl.netns, packets, 400 * per_syn, 3)
        time.sleep(0.5)
        got = at_client.read()["synack"]
    syns = sent // per_syn
    over_budget, over_remote = rule_hits(lab, rules, 0, vm), rule_hits(lab, rules, 1, vm)
    figures(shape=shape, syns=syns, seconds=elapsed, over_budget=over_budget, over_remote=over_remote, synacks=got)
    assert over_budget >= syns - budget * (elapsed + 1) - 0.05 * syns, (
        f"{shape}: budget dropped {over_budget} of {syns} SYNs in {elapsed:.1f}s")
    if not reassembled:
        assert got == 0, f"{shape}: {got} SYN-ACKs for {syns} SYNs the host cannot reassemble"
        return
    assert over_remote > 0, f"{shape}: the per-remote limit saw none of {syns} SYNs"
    assert 0.5 * per_remote * elapsed <= got <= per_remote * (elapsed + 1) * 1.1, (
        f"{shape}: {got} SYN-ACKs for {syns} SYNs in {elapsed:.1f}s, per-remote limit {per_remote}/s")


def test_ipv4_mapped_ipv6_sources_share_one_per_64_bucket(lab):
    """Every ::ffff:a.b.c.d is in ::/64: random IPv4-mapped sources are one remote to the
    per-remote limiter, not 1,000 fresh buckets."""
    vm, cl = lab.vms[0], lab.clients[0]
    per_remote = 20
    rules = [{"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": per_remote}]
    enforce(lab, rules)
    packets = spoof.tcp_packets(spoof.addresses("::ffff:0.0.0.0/96", 1000), vm.ipv6, 80, "S", n=3000)
    with spoof.Probe(vm.netns, {"mapped": f"ip6 saddr ::ffff:0.0.0.0/96 tcp dport 80 {SYN_ONLY}"}) as at_vm:
        sent, elapsed = timed_send(cl.netns, packets, 500, 3)
        reached = at_vm.read()["mapped"]
    dropped = rule_hits(lab, rules, 0, vm)
    figures(sent=sent, seconds=elapsed, dropped=dropped, reached_vm=reached)
    assert dropped >= sent - per_remote * (elapsed + 1) - 0.05 * sent, (
        f"limiter dropped {dropped} of {sent} mapped-source SYNs in {elapsed:.1f}s ({per_remote}/s)")
    assert reached <= per_remote * (elapsed + 1) * 1.1, f"{reached} of {sent} mapped-source SYNs reached the VM"


def test_per_port_total_holds_under_ipv6_64_rotation(lab):
    """Spoofed SYNs from 2,000 different /64s of the client's /48 (each a fresh per-remote
    bucket): the port's aggregate still admits only its rate."""
    vm, cl = lab.vms[0], lab.clients[0]
    per_port = 40
    rules = [{"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 1000},
             {"type": "connection_rate_limit", "direction": "ingress", "scope": "port", "max_cps": per_port}]
    enforce(lab, rules)
    sources = [f"fd88:0:0:{k:x}::2" for k in range(0x100, 0x100 + 2000)]
    packets = spoof.tcp_packets(sources, vm.ipv6, 80, "S", n=2000)
    with spoof.Probe(vm.netns, {"syn": f"ip6 saddr fd88::/48 tcp dport 80 {SYN_ONLY}"}) as at_vm:
        sent, elapsed = timed_send(cl.netns, packets, 500, 4)
        reached = at_vm.read()["syn"]
    figures(sent=sent, seconds=elapsed, reached_vm=reached)
    assert 0.5 * per_port * elapsed <= reached <= per_port * (elapsed + 1) * 1.1, (
        f"{reached} of {sent} SYNs from {len(sources)} /64s reached the VM in {elapsed:.1f}s, port limit {per_port}/s")
    assert rule_hits(lab, rules, 0, vm) == 0, "every /64 stayed under its own per-remote limit"
