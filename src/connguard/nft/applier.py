"""The applier: make the kernel's ``inet connguard`` table match a compiled ruleset, in one
atomic batch per apply.

- First apply (or after ``invalidate()``): *full sync*. The table is inventoried (names only),
  owned chains and sets are flushed and refilled, long-lived sets are created only if missing,
  and whatever is ours but no longer wanted is deleted.
- Later applies: *delta* against what the last successful apply put there: changed chains are
  flushed and refilled, owned sets and maps change element by element, and a port leaving a
  policy is forgotten in that policy's per-port state. Adding one port to 10,000 is a handful
  of elements.
- Bookkeeping (``self.applied``) changes only after the kernel accepted the batch. A rejected
  batch changes nothing in the kernel; ``ApplyError`` says which port or rule it came from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from connguard.compiler.ruleset import Element, NftSet, Ruleset
from connguard.exceptions import ApplyError
from connguard.names import FAMILY, ROLE_PER_PORT, SYNPROXY, TABLE
from connguard.nft import readback
from connguard.nft import bridge
from connguard.nft import render as r
from connguard.nft.executor import Executor, NftFailure
from connguard.nft.render import Cmd


@dataclass(frozen=True)
class ApplyResult:
    mode: str         # "full", "delta", "bans" (only the state's bans) or "noop"
    commands: int
    seconds: float
    warnings: tuple[str, ...] = ()  # state bans the kernel refused (the ruleset was applied)


@dataclass
class Inventory:
    """What of ours is in the kernel, by name: read without any set's elements (set
    declarations from ``nft -t list sets``, the rest over netlink), so that a full sync costs
    the same with the limiter sets full."""

    exists: bool
    sets: dict[str, dict]
    limits: set[str]
    counters: set[str]
    chains: set[str]
    rules: dict[str, list[str]] = field(default_factory=dict)  # chain -> rule comments


OBJECT_LIMIT = 4  # NFT_OBJECT_LIMIT


def read_inventory(executor: Executor) -> Inventory:
    if not readback.table_exists(executor):
        return Inventory(False, {}, set(), set(), set())
    inv = Inventory(True, {}, set(), set(), set())
    for kind in ("sets", "maps"):
        # "list maps" takes no table; both skip elements with -t
        args = ("list", kind, "table", FAMILY, TABLE) if kind == "sets" else ("list", kind, FAMILY)
        for item in executor.query(*args, terse=True).get("nftables", []):
            body = item.get("set") or item.get("map")
            if body is not None and body.get("table", TABLE) == TABLE:
                inv.sets[body["name"]] = body
    for name, (kind, _) in readback.objects(executor).items():
        (inv.limits if kind == OBJECT_LIMIT else inv.counters).add(name)
    inv.chains = set(readback.chains(executor))
    inv.rules = {c: [k.comment for k in rules] for c, rules in readback.rules(executor).items()}
    return inv


def stateful_sets(chain) -> set[str]:
    """Long-lived sets whose elements copy numbers from this chain's rules when the packet path
    creates them (a dynset with statements: a limit, a ct count). A tampered rule leaves such
    elements behind with the tampered numbers; the repair empties these sets."""
    out = set()
    for rule in chain.rules:
        for e in rule.expr:
            body = e.get("set") if isinstance(e, dict) else None
            if isinstance(body, dict) and body.get("stmt") and isinstance(body.get("set"), str):
                out.add(body["set"].lstrip("@"))
    return out


def _same_declaration(s: NftSet, kernel: dict) -> bool:
    ktype = kernel.get("type")
    ktype = tuple(ktype) if isinstance(ktype, list) else (ktype,)
    return (ktype == s.type and kernel.get("map") == s.map
            and set(kernel.get("flags", [])) - {"dynamic"} == set(s.flags))


def _by_ident(elements) -> dict[str, Element]:
    return {e.ident(): e for e in elements or ()}


class Applier:
    def __init__(self, executor: Executor):
        self.executor = executor
        self.applied: Ruleset | None = None
        # the kernel's digests of our table right after the last apply that changed it
        self.baseline: readback.Snapshot | None = None
        # long-lived sets the next full sync empties: their elements were made by tampered rules
        self.reset_on_repair: set[str] = set()

    def invalidate(self) -> None:
        """Forget what we applied; the next apply is a full sync (after drift, on restart)."""
        self.applied = None
        self.baseline = None

    # ---- drift ----------------------------------------------------------------------------
    @staticmethod
    def _owned(rs: Ruleset) -> list[str]:
        return [s.name for s in rs.sets if not s.long_lived]

    def _snapshot(self, rs: Ruleset) -> readback.Snapshot:
        return readback.snapshot(self.executor, self._owned(rs))

    def drift(self) -> list[str]:
        """What differs between the kernel and what the last apply left there: every chain
        (hook, policy), every rule's contents and order, every element of the sets whose
        contents we own (the dispatch maps' verdicts included), the presence of every set. The
        kernel is compared with its own read-back of our apply, not with our JSON, so nothing
        depends on how it re-spells an expression (readback). Reads no element of a set the
        packet path fills: milliseconds however full they are. Empty when in step."""
        applied = self.applied
        if applied is None:
            return []
        if not readback.table_exists(self.executor):
            return [f"table {FAMILY} {TABLE} is missing"]
        if applied.bridge_taps:  # bridged ports are dispatched by the bridge table's mark
            broken = bridge.drift(self.executor, applied.bridge_taps)
            if broken:
                return broken
        now = self._snapshot(applied)
        if self.baseline is None:  # the read-back after the apply failed: adopt this one
            self.baseline = now
        problems = readback.compare(self.baseline, now)
        changed = {n for n, want in self.baseline.rules.items() if now.rules.get(n) != want}
        tainted = set().union(*(stateful_sets(c) for c in applied.chains if c.name in changed))
        if tainted:
            self.reset_on_repair |= tainted
            problems.append(f"{len(tainted)} bucket set(s) filled by changed rules will be emptied: "
                            + ", ".join(sorted(tainted)))
        # and the rules must still be the ones we sent, in number and origin (a cheap
        # cross-check of the baseline itself)
        for c in applied.chains:
            have = [k.comment for k in now.rules.get(c.name, [])]
            if c.name in now.chains and have != [r.comment(rule.origin) for rule in c.rules]:
                problems.append(f"chain {c.name} has other rules than applied")
        present = readback.set_names(self.executor)
        problems += [f"set {s.name} is missing" for s in applied.sets if s.name not in present]
        return list(dict.fromkeys(problems))

    # ---- planning -------------------------------------------------------------------------
    def plan(self, desired: Ruleset) -> tuple[str, list[Cmd]]:
        """The ruleset batch, followed by the state's bans (applied as a second batch)."""
        mode, cmds = self._plan(desired)
        return mode, self._bridge(desired, cmds) + self._seeds(desired)

    def _bridge(self, desired: Ruleset, cmds: list[Cmd]) -> list[Cmd]:
        """The bridge-family marking table, in the same batch, when bridged ports are or were
        wanted (nft/bridge.py); nothing at all on a routed-only host."""
        before = self.applied.bridge_taps if self.applied is not None else ()
        if not desired.bridge_taps and not before:
            return cmds
        if not cmds and desired.bridge_taps == before:
            return cmds
        return cmds + bridge.commands(desired.bridge_taps)

    def _plan(self, desired: Ruleset) -> tuple[str, list[Cmd]]:
        if self.applied is None:
            return "full", self._full(desired, read_inventory(self.executor))
        if self.applied == desired:
            return "noop", []
        return "delta", self._delta(self.applied, desired)

    def _seeds(self, desired: Ruleset) -> list[Cmd]:
        if self.applied is None:
            return self._seed_cmds(desired, desired.seeds)
        old = {(n, e.ident(), e.timeout) for n, e in self.applied.seeds}
        return self._seed_cmds(desired, [(n, e) for n, e in desired.seeds if (n, e.ident(), e.timeout) not in old])

    def _full(self, new: Ruleset, inv: Inventory) -> list[Cmd]:
        # Every chain of ours is flushed first: after that no rule references any set, so sets
        # of another shape (an older connguard) or no longer wanted can be deleted at once.
        head: list[Cmd] = [r.table()] + [r.flush_chain(n) for n in sorted(inv.chains)]
        fill: list[Cmd] = []
        tail: list[Cmd] = []
        wanted_sets = {s.name for s in new.sets}
        for n, b in sorted(inv.sets.items()):
            if n not in wanted_sets:
                head.append(r.delete_set(n, "map" if b.get("map") else "set"))
        for s in new.sets:
            kernel = inv.sets.get(s.name)
            if kernel is not None and not _same_declaration(s, kernel):
                # the one case where a long-lived set's contents are lost
                head.append(r.delete_set(s.name, "map" if kernel.get("map") else "set"))
                kernel = None
            if kernel is None:
                head.append(r.add_set(s))
            if s.long_lived and kernel is not None and s.name in self.reset_on_repair:
                fill.append(r.flush_set(s))
            if not s.long_lived:
                if kernel is not None:
                    fill.append(r.flush_set(s))
                if s.elements:
                    fill.extend(self._element_cmds(s, s.elements, new))
        head += [r.add_counter(c) for c in new.counters if c not in inv.counters]
        rules: list[Cmd] = []
        for c in new.chains:
            head.append(r.add_chain(c))
            rules += [r.add_rule(c.name, rule) for rule in c.rules]
        # stale chains go last: verdict map elements may jump to them until the maps are refilled
        tail += [r.delete_chain(n) for n in sorted(inv.chains - {c.name for c in new.chains})]
        # named limit objects are never ours any more (an older layout): remove them
        tail += [r.delete_limit(n) for n in sorted(inv.limits)]
        return head + rules + fill + tail

    def _delta(self, old: Ruleset, new: Ruleset) -> list[Cmd]:
        old_sets = {s.name: s for s in old.sets}
        new_sets = {s.name: s for s in new.sets}
        for name, s in new_sets.items():
            o = old_sets.get(name)
            if o is not None and (o.type, o.flags, o.map, o.size, o.counter) != (s.type, s.flags, s.map, s.size, s.counter):
                return self._full(new, read_inventory(self.executor))
        head: list[Cmd] = [r.table()]
        rules: list[Cmd] = []
        fill: list[Cmd] = []
        tail: list[Cmd] = []
        for name, s in new_sets.items():
            if name not in old_sets:
                head.append(r.add_set(s))
        head += [r.add_counter(c) for c in new.counters if c not in old.counters]
        old_chains = {c.name: c for c in old.chains}
        for c in new.chains:
            before = old_chains.get(c.name)
            if before is None:
                head.append(r.add_chain(c))
            elif before.rules == c.rules and before.hook == c.hook:
                continue
            else:
                if before.hook != c.hook:
                    head.append(r.add_chain(c))
                rules.append(r.flush_chain(c.name))
            rules += [r.add_rule(c.name, rule) for rule in c.rules]
        deletes: list[Cmd] = []
        for name, s in new_sets.items():
            if s.long_lived:
                continue
            was = _by_ident(old_sets[name].elements if name in old_sets else ())
            now = _by_ident(s.elements)
            gone = [e for k, e in was.items() if k not in now or now[k] != e]
            added = [e for k, e in now.items() if k not in was or was[k] != e]
            if gone:
                deletes.append(r.delete_elements(s, gone))
            if added:
                fill.extend(self._element_cmds(s, added, new))
        stale = sorted(set(old_chains) - {c.name for c in new.chains})
        tail += [r.flush_chain(n) for n in stale] + [r.delete_chain(n) for n in stale]
        tail += [r.delete_set(n, "map" if o.map else "set") for n, o in sorted(old_sets.items()) if n not in new_sets]
        return head + rules + deletes + self._forget_ports(old, new) + fill + tail

    @staticmethod
    def _forget_ports(old: Ruleset, new: Ruleset) -> list[Cmd]:
        """A port that leaves a policy leaves nothing behind in the per-port state of the sets
        that stay (a later port of the same name starts afresh). Add-then-delete removes an
        element whether or not the packet path ever created it."""
        gone = [p for p, pol in old.port_policy.items() if new.port_policy.get(p) != pol]
        if not gone:
            return []
        new_sets = {s.name for s in new.sets}
        cmds: list[Cmd] = []
        for s in old.sets:
            if s.role == ROLE_PER_PORT and s.name in new_sets:
                elems = [Element(p) for p in gone]
                cmds += [r.add_elements(s, elems, f"forget ports in {s.name}"), r.delete_elements(s, elems)]
        return cmds

    @staticmethod
    def _origin_of_port(ifname: str, rs: Ruleset) -> str:
        return f"port {ifname} (policy {rs.port_policy.get(ifname, '?')})"

    def _element_cmds(self, s: NftSet, elements, rs: Ruleset) -> list[Cmd]:
        # One command per set, except the per-port maps, which get one per port so that a
        # rejected element names its port.
        if s.key_is_port():
            return [r.add_elements(s, [e], self._origin_of_port(e.key, rs)) for e in elements] \
                if len(elements) <= 64 else [r.add_elements(s, elements)]
        return [r.add_elements(s, elements)]

    @staticmethod
    def _seed_cmds(rs: Ruleset, seeds) -> list[Cmd]:
        by_set: dict[str, list[Element]] = {}
        for name, e in seeds:
            by_set.setdefault(name, []).append(e)
        sets = {s.name: s for s in rs.sets}
        return [r.add_elements(sets[n], es, f"bans in {n}") for n, es in sorted(by_set.items())]

    # ---- applying -------------------------------------------------------------------------
    def apply(self, desired: Ruleset, *, check: bool = False) -> ApplyResult:
        start = time.monotonic()
        seeds = self._seeds(desired)
        mode, cmds = self._plan(desired)
        cmds = self._bridge(desired, cmds)
        if not cmds and not seeds:
            return ApplyResult("noop", 0, time.monotonic() - start)
        if cmds:
            try:
                self.executor.batch({"nftables": [c for c, _ in cmds]}, check=check)
            except NftFailure as exc:
                where = self._locate(cmds)
                raise ApplyError("the kernel rejected the ruleset; nothing was changed",
                                 kernel_message=exc.message, where=where) from None
        if check:
            return ApplyResult(mode, len(cmds), time.monotonic() - start)
        if any(desired.set(SYNPROXY[v]).elements for v in (4, 6)):
            # synproxy needs the handshake's ACK to be "invalid", not picked up mid-stream; set
            # before the bookkeeping, so that a failure here is retried by the next apply
            self.executor.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")
        if desired.bridge_taps:
            # conntrack and the inet hooks see bridged packets only through br_netfilter; these
            # switches are per namespace on this kernel (docs/dataplane.md, "Bridged ports")
            for key in bridge.SYSCTLS:
                self.executor.sysctl(key, "1")
        if mode == "full":
            self.reset_on_repair = set()
        if cmds:
            try:
                self.baseline = self._snapshot(desired)
            except NftFailure:
                self.baseline = None  # the next drift check adopts what it finds
        self.applied = desired
        # The state's bans go in a batch of their own: one that the kernel refuses (it overlaps
        # a ban already there) must not hold back the ruleset, nor the other bans.
        warnings = self._apply_seeds(seeds)
        return ApplyResult(mode if cmds else "bans", len(cmds) + len(seeds), time.monotonic() - start,
                           tuple(warnings))

    def _apply_seeds(self, seeds: list[Cmd]) -> list[str]:
        if not seeds:
            return []
        try:
            self.executor.batch({"nftables": [c for c, _ in seeds]})
            return []
        except NftFailure:
            pass
        warnings = []
        for cmd, origin in seeds:
            for elem in cmd["add"]["element"]["elem"]:
                one = {"add": {"element": {**cmd["add"]["element"], "elem": [elem]}}}
                try:
                    self.executor.batch({"nftables": [one]})
                except NftFailure as exc:
                    warnings.append(_refused_ban(elem, exc.message))
        return warnings

    def _locate(self, cmds: list[Cmd]) -> str | None:
        """Find the first command whose prefix of the batch the kernel rejects (nft --check),
        and name where it came from."""
        if self._ok(cmds):
            return None
        lo, hi = 1, len(cmds)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._ok(cmds[:mid]):
                lo = mid + 1
            else:
                hi = mid
        return cmds[lo - 1][1]

    def _ok(self, cmds: list[Cmd]) -> bool:
        try:
            self.executor.batch({"nftables": [c for c, _ in cmds]}, check=True)
            return True
        except NftFailure:
            return False


def _elem_text(value) -> str:  # noqa: ANN001 - libnftables JSON
    if isinstance(value, dict):
        if "concat" in value:
            return " . ".join(_elem_text(v) for v in value["concat"])
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "elem" in value:
            return _elem_text(value["elem"]["val"])
    return str(value)


def _refused_ban(elem, kernel_message: str) -> str:  # noqa: ANN001
    """A sentence for a state-file ban the kernel refused, not the element's JSON."""
    val = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
    timeout = elem["elem"].get("timeout") if isinstance(elem, dict) and "elem" in elem else None
    if isinstance(val, dict) and "concat" in val and len(val["concat"]) == 2:
        port, remote = str(val["concat"][0]), _elem_text(val["concat"][1])
        what = f"the ban of {remote} on port {port}"
    else:
        what = f"the host-wide ban of {_elem_text(val)}"
    length = f" ({timeout} s)" if timeout else ""
    first = (kernel_message.strip().splitlines() or [""])[0]
    overlap = "File exists" in first or "overlaps" in first
    why = "it overlaps a ban already in the kernel" if overlap else f"the kernel said: {first}"
    return f"{what}{length} was not added: {why}"
