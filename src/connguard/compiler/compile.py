"""``compile_host``: desired host state in, ruleset out. Pure: no I/O, no clock, no globals.

Layout (one table, ``inet connguard``):
- base chains ``raw_pre``, ``forward``, ``host_in`` (dispatch.py);
- one chain pair per *policy*, ``in_<pid>`` (towards the VM) and ``out_<pid>`` (from the VM),
  shared by every port using that policy; ports reach them through the ``to_vm``/``from_vm``
  verdict maps; with allowlist entries, the per-remote stages move to ``remote_in_<pid>`` /
  ``remote_out_<pid>``, which allowlisted remotes leave at once;
- per-port state without per-port rules or objects: shared dynamic sets keyed
  ``ifname . remote`` or ``ifname``, filled by the packet path. Adding a port is two verdict map
  elements and one set element (bench/dataplane_bench.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from connguard.compiler import fragments as f
from connguard.compiler.brute_force import compile_brute_force
from connguard.compiler.common import ALLOW, SET_FULL, refuse_chains
from connguard.compiler.conn_limit import compile_conn_limit
from connguard.compiler.context import Contribution, RuleContext, Stage, short_id
from connguard.compiler.dispatch import ban_elements, base_chains, host_sets
from connguard.compiler.rate_limit import compile_rate_limit
from connguard.compiler.ruleset import Chain, NftSet, Rule, Ruleset
from connguard.compiler.syn_flood import compile_syn_flood
from connguard.exceptions import CompileError
from connguard.model.common import prefix_version
from connguard.model.objects import Policy
from connguard.model.rules import BruteForceRule, ConnectionLimitRule, ConnectionRateLimitRule, SynFloodRule
from connguard.model.state import HostState
from connguard.names import COUNTERS, hit_set, policy_chain as policy_chain_name, remote_chain

RuleCompiler = Callable[[RuleContext], Contribution]

# The explicit registry: every API rule type has a compiler and every compiler a rule type
# (tests/unit/test_compiler.py).
COMPILERS: dict[type, RuleCompiler] = {
    ConnectionRateLimitRule: compile_rate_limit,
    ConnectionLimitRule: compile_conn_limit,
    SynFloodRule: compile_syn_flood,
    BruteForceRule: compile_brute_force,
}


def policy_id(policy: Policy) -> str:
    return short_id(policy.name)


# Stages keyed by the remote address: what the allowlist exempts from (a per-source limit or a
# ban would punish a trusted client for its own traffic). Every other stage (SYN budget,
# per-port aggregates and caps, synproxy) bounds the port as a whole and applies to allowlisted
# sources too: an attacker can spoof an allowlisted source, never gain a cheap way around them.
PER_REMOTE = frozenset({Stage.BRUTE_FORCE, Stage.RATE_PER_REMOTE, Stage.CONN_PER_REMOTE})


def _phase(stage: int) -> int:
    """Where a stage sits in a policy chain: the stages before the per-remote ones (SYN
    budget), the per-remote stages, then everything per port. Per-remote limits precede the
    per-port aggregates so that one flooding source cannot eat the port's tokens; grouping them
    lets the allowlist skip them with one lookup."""
    if stage in PER_REMOTE:
        return 1
    return 0 if stage < min(PER_REMOTE) else 2


def _allow_rules(direction: str, versions: tuple[int, ...]) -> list[Rule]:
    """Allowlisted remotes leave the per-remote stages. Only for families that have entries:
    an empty allowlist costs no lookup per new connection."""
    side = "saddr" if direction == "ingress" else "daddr"
    return [Rule((f.in_set(f.addr(v, side), ALLOW[v]), f.ret()), "allowlist") for v in versions]


def policy_chain(name: str, direction: str, staged: list[tuple[int, int, Rule]],
                 allow_versions: tuple[int, ...]) -> list[Chain]:
    """The policy chain of one direction, with its per-remote stages in a chain of their own
    (``remote_<name>``, entered by a jump, left by ``return`` for allowlisted remotes) when the
    allowlist has entries; inline, in the same order, when it has none."""
    ordered = sorted(staged, key=lambda t: (_phase(t[0]), t[0], t[1]))  # stable within a rule
    remote = [r for stage, _, r in ordered if stage in PER_REMOTE]
    if not (remote and allow_versions):
        return [Chain(name, tuple(r for _, _, r in ordered))]
    sub = remote_chain(name)
    before = [r for stage, _, r in ordered if _phase(stage) == 0]
    after = [r for stage, _, r in ordered if _phase(stage) == 2]
    enter = Rule((f.jump(sub),), "per-remote stages")
    return [Chain(name, tuple(before + [enter] + after)),
            Chain(sub, tuple(_allow_rules(direction, allow_versions) + remote))]


def compile_policy(policy: Policy, allow_versions: tuple[int, ...] = (4, 6)) -> tuple[list[Chain], list[NftSet], list]:
    """Chains, sets and synproxy services of one policy."""
    monitor = policy.enforcement == "monitor"
    synproxy = () if monitor else tuple(
        (r.port_range_min, r.port_range_max) for r in policy.rules if isinstance(r, SynFloodRule) and r.synproxy)
    parts = [COMPILERS[type(rule)](RuleContext(policy, i, monitor, synproxy)) for i, rule in enumerate(policy.rules)]
    pid = policy_id(policy)
    chains = []
    for direction in ("ingress", "egress"):
        staged = [(stage, i, rule) for i, part in enumerate(parts)
                  for stage, rule in (part.ingress if direction == "ingress" else part.egress)]
        chains += policy_chain(policy_chain_name(direction, pid), direction, staged, allow_versions)
    chains += [c for part in parts for c in part.chains]
    sets = [s for part in parts for s in part.sets]
    services = [svc for part in parts for svc in part.synproxy_services]
    return chains, sets, services


def compile_host(state: HostState, bridges: Mapping[str, str] | None = None) -> Ruleset:
    """``bridges``: tap -> its bridge, for the ports whose tap is enslaved to a Linux bridge of
    its own (datapath "bridged", agent/datapath.py). Such a port is keyed by its bridge in
    every per-port structure (that is the interface the inet hooks see with br_netfilter) and
    dispatched through ``to_br``/``from_br``; synproxy is not applied to it (docs/dataplane.md,
    "Bridged ports")."""
    bridges = dict(bridges or {})
    allow_versions = tuple(sorted({prefix_version(e.remote_ip_prefix) for e in state.allowlist}))
    bridged = {p.interface_name for p in state.ports if p.interface_name in bridges}
    chains = base_chains(bool(bridged)) + refuse_chains()
    sets: dict[str, NftSet] = {}
    to_vm: dict[str, str] = {}
    from_vm: dict[str, str] = {}
    to_br: dict[str, str] = {}
    from_br: dict[str, str] = {}
    synproxy: dict[int, list[tuple[str, int, int]]] = {}
    port_policy: dict[str, str] = {}

    compiled = {p.name: compile_policy(p, allow_versions) for p in state.policies}
    hit_sets = {hit_set(RuleContext(p, i, False, ()).rid): f"policy {p.name} rule {i} {r.type}"
                for p in state.policies for i, r in enumerate(p.rules)}
    for pchains, psets, _ in compiled.values():
        chains += pchains
        for s in psets:
            if sets.get(s.name, s) != s:
                raise CompileError(f"two rules compile to the same set name {s.name}; rename a policy")
            sets[s.name] = s

    # the per-port loop is the only part that grows with the host: keep it to lookups
    pids = {p.name: policy_id(p) for p in state.policies}
    for port in state.ports:
        name = port.policy or state.default_policy
        if name is None:
            continue
        ifname = port.interface_name
        chains_of = policy_chain_name("ingress", pids[name]), policy_chain_name("egress", pids[name])
        if ifname in bridged:
            key = bridges[ifname]
            port_policy[key] = name
            to_br[key], from_br[key] = chains_of
            continue  # no synproxy on bridged ports (not tested through br_netfilter)
        port_policy[ifname] = name
        to_vm[ifname], from_vm[ifname] = chains_of
        for v, lo, hi in compiled[name][2]:
            for ip in port.fixed_ips:
                if (":" in ip) == (v == 6):
                    synproxy.setdefault(v, []).append((ip, lo, hi))

    keys = [bridges[p.interface_name] if p.interface_name in bridged else p.interface_name for p in state.ports]
    if len(set(keys)) != len(keys):
        raise CompileError("two ports share one bridge: a bridged port needs a bridge of its own "
                           "(shared bridges are not supported yet, docs/dataplane.md)")
    for s in host_sets(allowlist=state.allowlist, ports=keys,
                       synproxy=synproxy, to_vm=to_vm, from_vm=from_vm, to_br=to_br, from_br=from_br):
        sets[s.name] = s
    seeds = tuple((name, e) for name, elems in sorted(ban_elements(state.bans).items()) for e in elems)
    names = [c.name for c in chains]
    if len(set(names)) != len(names):
        raise CompileError("two policies or rules compile to the same chain name; rename one of them")
    return Ruleset(
        sets=tuple(sorted(sets.values(), key=lambda s: s.name)),
        counters=COUNTERS,
        chains=tuple(sorted(chains, key=lambda c: c.name)),
        seeds=seeds,
        bridge_taps=tuple(sorted(bridged)),
        bridged={bridges[t]: t for t in sorted(bridged)},
        port_policy=port_policy,
        hit_sets=hit_sets,
    )
