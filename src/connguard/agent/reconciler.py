"""The reconciler: keeps the kernel in step with the desired state a source hands it.

Level-triggered: every tick (or at once when the source has a new snapshot) it (1) takes the
source's new snapshot if there is one (a bad one is reported and the last good state stays
enforced), (2) applies the compiled state (a no-op when nothing changed), (3) folds the
kernel's bans into the ban book, restores bans and offender memory the kernel lost, and places,
lengthens and lifts the bans the server's snapshot carries (the one ban writer), and (4) every
``drift_interval`` compares the kernel with what it applied and repairs by a full sync. It
knows no source and writes nothing to the kernel before the first snapshot. See DESIGN.md.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass

from connguard.agent.banbook import BanBook, BookBan
from connguard.agent.source import Desired, Source
from connguard.agent.statusfile import write_status
from connguard.agent import datapath
from connguard.compiler import fragments as f
from connguard.compiler.context import RuleContext
from connguard.compiler.dispatch import ban_key
from connguard.compiler.ruleset import Ruleset
from connguard.exceptions import ApplyError, CompileError
from connguard.model import BruteForceRule, HostState
from connguard.names import FAMILY, ROLE_BF_TIER, TABLE, tier_set
from connguard.nft import Applier, observe
from connguard.nft.bans import add_bans, add_memory, delete_ban
from connguard.nft.executor import Executor, NftFailure
from connguard.nft.observe import KernelBan

log = logging.getLogger("connguard.agent")

STATUS_HEARTBEAT = 10.0  # seconds between rewrites of an unchanged status file


@dataclass
class _Loaded:
    desired: Desired
    ruleset: Ruleset

    @property
    def state(self) -> HostState:
        return self.desired.state


@dataclass(frozen=True)
class Detection:
    """A ban the kernel placed, as the reporter sends it."""

    ban: BookBan
    banned_at: float
    policy: str | None
    rule_index: int | None


def _book_key(key: tuple[str | None, str]) -> str:
    return f"{key[0] or ''}|{key[1]}"


def _later(a: float | None, b: float | None, slack: float = 1.0) -> bool:
    """Expiry ``a`` is later than ``b`` (None: never expires)."""
    if a is None:
        return b is not None
    return b is not None and a > b + slack


class Reconciler:
    def __init__(self, source: Source, executor: Executor, workdir, *, interval: float = 1.0,
                 drift_interval: float = 10.0, clock=time.time, stop_event: threading.Event | None = None):
        self.source = source
        self.executor = executor
        self.workdir = workdir
        self.interval = interval
        self.drift_interval = drift_interval
        self.clock = clock
        self.applier = Applier(executor)
        self.book = BanBook(workdir / "bans.json")
        self.loaded: _Loaded | None = None
        self.last_error: str | None = None
        self.last_apply: dict | None = None
        # for the reporter (read from its thread; each is replaced whole, never mutated)
        self.port_errors: dict[str, str] = {}   # interface -> the kernel's message, for the last apply
        self.apply_ok = False                   # the last apply succeeded (every port has its state)
        self.apply_errors_total = 0
        self.apply_error: str = ""
        self.detected: collections.deque[Detection] = collections.deque(maxlen=10_000)
        self.detect_hook = None  # called when a detection is queued (the reporter sends it at once)
        self._next_drift = 0.0
        self._stop = stop_event or threading.Event()
        self._status_key: tuple | None = None
        self._status_at = 0.0
        self._ports: tuple | None = None  # (state, interface name -> port), for _match
        self._restore_memory = False  # after a full sync: the table may have lost its memory sets
        self._source_error: str | None = None
        self._datapaths: tuple = ((), ())  # (tap -> bridge, ports compiled) of the last compile

    # ---- desired state --------------------------------------------------------------------
    def reload(self) -> bool:
        desired = self.source.poll()
        if self.source.error != self._source_error:
            self._source_error = self.source.error
            if self.source.error:
                self._error(self.source.error)
        if desired is None:
            return False
        try:
            # the state file's bans are put in the kernel once, with their lifetime from then
            fresh = tuple(b for b in desired.state.bans if _book_key(ban_key(b)) not in self.book.seeded)
            ruleset = self._compile(desired.state.model_copy(update={"bans": fresh}))
        except CompileError as exc:
            self._error(f"{desired.source} rejected, still enforcing the last good state: {exc}")
            return False
        self.loaded = _Loaded(desired, ruleset)
        for w in desired.warnings:
            log.warning("%s", w)
        log.info("loaded %s%s: %d policies, %d ports, %d server bans", desired.source,
                 "" if desired.revision is None else f" revision {desired.revision}",
                 len(desired.state.policies), len(desired.state.ports), len(desired.server_bans))
        return True

    def _compile(self, state):  # noqa: ANN001, ANN202 - HostState -> Ruleset
        """Compile with each port's datapath as the kernel has it now (agent/datapath.py)."""
        ruleset, self._datapaths, problems = datapath.compile_detected(self.executor, state)
        for problem in problems:
            log.warning("%s", problem)
        return ruleset

    # ---- one reconciliation pass --------------------------------------------------------
    def tick(self) -> None:
        self.reload()
        if self.loaded is None:
            return  # nothing is written to the kernel before a full state
        now = self.clock()
        if now >= self._next_drift and self.applier.applied is not None:
            self._next_drift = now + self.drift_interval
            state = self.loaded.state
            if datapath.detected_key(self.executor, state) != self._datapaths:  # a tap changed master
                log.warning("a port's tap moved to another master: recompiling")
                fresh = tuple(b for b in state.bans if _book_key(ban_key(b)) not in self.book.seeded)
                try:
                    self.loaded.ruleset = self._compile(state.model_copy(update={"bans": fresh}))
                except CompileError as exc:
                    self._error(f"after a tap moved, still enforcing the last good ruleset: {exc}")
            problems = self.applier.drift()
            if problems:
                log.warning("drift: %s; repairing with a full sync", "; ".join(problems[:5]))
                self.applier.invalidate()
        ruleset = self.loaded.ruleset
        try:
            result = self.applier.apply(ruleset)
        except ApplyError as exc:
            self._apply_failed(exc, ruleset)
        else:
            if result.mode == "full":
                self._restore_memory = True
            if result.mode != "noop":
                self.last_apply = {"mode": result.mode, "commands": result.commands,
                                   "seconds": round(result.seconds, 4), "at": now,
                                   "revision": self.loaded.desired.revision}
                log.info("applied (%s): %d commands in %.0f ms", result.mode, result.commands, result.seconds * 1000)
            for w in result.warnings:
                log.warning("state ban not applied: %s", w)
            self._record_seeds(now)
            # a rejected state file (or an unreachable server) stays the error in force until
            # the source recovers: a pass that applied the last good state must not clear it
            self.last_error = self.source.error
            self.port_errors = {}
            self.apply_ok = True
        # bans are kept and restored even while the ruleset cannot be applied
        self._bans(now)
        self._write_status(now)

    def _apply_failed(self, exc: ApplyError, ruleset: Ruleset) -> None:
        if str(exc) != self.apply_error:
            self.apply_errors_total += 1
        self.apply_error = str(exc)
        self.apply_ok = False
        self._error(str(exc))
        message = (exc.kernel_message or str(exc)).strip()[:1024]
        where = (exc.where or "").split()
        if where[:1] == ["port"] and len(where) > 1:
            self.port_errors = {where[1]: message}
        elif where[:1] == ["policy"] and len(where) > 1:
            self.port_errors = {p: message for p, pol in ruleset.port_policy.items() if pol == where[1]}
        else:
            self.port_errors = {p: message for p in ruleset.port_policy}

    def _record_seeds(self, now: float) -> None:
        assert self.loaded is not None
        current = {}
        for b in self.loaded.state.bans:
            key = _book_key(ban_key(b))
            current[key] = self.book.seeded.get(key, None if b.seconds is None else now + b.seconds)
        # forget bans taken out of the file: if they come back, they are new bans
        recorded = set(current) - set(self.book.seeded)
        self.book.set_seeded(current)
        if recorded and self.loaded.ruleset.seeds:
            # from now on the book keeps (and restores) them; a later full sync must not put
            # them back with their whole lifetime
            self.loaded.ruleset = self._compile(self.loaded.state.model_copy(update={"bans": ()}))

    def _bans(self, now: float) -> None:
        kernel = observe(self.executor, bans_only=True).bans
        state = self.loaded.state  # type: ignore[union-attr]
        manual = {ban_key(b) for b in state.bans}
        by_key = {(kb.interface_name, kb.ip_address): kb for kb in kernel}
        for ban in self.book.sync(kernel, now, manual=manual, step_of=self._step_of):
            if ban.offence > 1:
                log.warning("repeat offence by %s on %s: banned at escalation step %d for %d s",
                            ban.ip_address, ban.interface_name, ban.offence, round(ban.remaining(now) or 0))
            match = self._match(ban.interface_name or "", ban.ip_address, ban.remaining(now) or 0, exact=False)
            kb = by_key.get(ban.key())
            # when the kernel banned (its timeout less what is left), not when this pass saw it:
            # the server's expiry, banned_at + the step's length, is then the kernel's own
            banned_at = now - (kb.timeout - kb.expires) if kb and kb.timeout is not None and kb.expires is not None \
                else now
            self.detected.append(Detection(BookBan(**vars(ban)), banned_at, *(match[2:] if match else (None, None))))
            if self.detect_hook is not None:
                self.detect_hook()
        cmds, placed = self._server_bans(now, kernel)
        restore = []
        for ban in self.book.missing_from(kernel, now):
            if ban.key() in placed:
                continue
            remaining = ban.remaining(now)
            restore.append((ban.ip_address, ban.interface_name, None if remaining is None else int(remaining)))
        if restore:
            log.warning("restoring %d ban(s) the kernel lost, e.g. %s on %s", len(restore), restore[0][0],
                        restore[0][1] or "all ports")
            cmds += add_bans(restore)
        if self._restore_memory:
            # a full sync follows a restart or a drift (a flushed table, say): give the step sets
            # back what the book remembers; adding what is still there changes nothing
            self._restore_memory = False
            wanted = {s.name for s in self.loaded.ruleset.sets if s.role == ROLE_BF_TIER}  # type: ignore[union-attr]
            memory = self.book.memory_entries(now, wanted)
            if memory:
                log.info("offender memory: %d element(s) given back to the kernel", len(memory))
                cmds += add_memory(memory)
        self._run_each(cmds)
        self.book.save()

    def _server_bans(self, now: float, kernel: list[KernelBan]) -> tuple[list[dict], set[tuple]]:
        """Place the snapshot's bans with their remaining time, lengthen kernel bans the server
        escalated (another host's offence counts), lift bans the snapshot no longer carries.
        Only bans the server knows are lifted: a local detection the server has not answered
        yet stays. Bans placed here go in the book, so a flushed table gets them back."""
        desired = self.loaded.desired  # type: ignore[union-attr]
        if desired.revision is None:
            return [], set()  # not a server snapshot
        present = {(kb.interface_name, kb.ip_address) for kb in kernel}
        wanted: dict[tuple, tuple] = {}
        ending: set[tuple] = set()  # still in the snapshot, but the kernel's timeout ends them now
        for sb in desired.server_bans:
            if sb.expires_at is not None and sb.expires_at - now < 1:
                ending.update(sb.targets)
                continue
            for key in sb.targets:
                if key not in wanted or _later(sb.expires_at, wanted[key][0], 0):
                    wanted[key] = (sb.expires_at, sb)
        cmds: list[dict] = []
        placed: set[tuple] = set()
        for key, (expires_at, sb) in wanted.items():
            ifname, ip = key
            known = self.book.bans.get(key)
            if known is not None and not _later(expires_at, known.expires_at) and (key in present or known.server):
                if not known.server:
                    known.server = True
                    self.book.dirty = True
                continue  # the kernel holds it at least as long (or restore puts it back)
            if known is None:
                known = BookBan(ip, ifname, expires_at, sb.offence_count, "server", server=True)
                self.book.bans[key] = known
            else:
                if expires_at != known.expires_at:
                    log.info("ban of %s on %s lengthened by the server to %s s (offence %d)", ip,
                             ifname or "all ports", "∞" if expires_at is None else int(expires_at - now),
                             sb.offence_count)
                known.expires_at, known.server = expires_at, True
                known.offence = max(known.offence, sb.offence_count)
            self.book.dirty = True
            if key in present:
                cmds.append(delete_ban(ip, ifname))  # an element's timeout is set when added
            cmds += add_bans([(ip, ifname, None if expires_at is None else int(expires_at - now))])
            placed.add(key)
        lifted = 0
        for key, ban in list(self.book.bans.items()):
            if ban.server and key not in wanted:
                if key in ending and key in present:
                    continue  # expiring by itself: a delete would end it early, or race the timeout
                if key in present:
                    cmds.append(delete_ban(ban.ip_address, ban.interface_name))
                cmds += self._forget_memory(ban)
                del self.book.bans[key]
                self.book.dirty = True
                lifted += 1
        if placed or lifted:
            log.info("server bans: %d placed or lengthened, %d lifted (revision %s)", len(placed), lifted,
                     desired.revision)
        return cmds, placed

    def _forget_memory(self, ban: BookBan) -> list[dict]:
        """A ban the operator deleted forgets that offence here too (the server does)."""
        if ban.interface_name is None:
            return []
        tail = f"|{ban.interface_name}|{ban.ip_address}"
        cmds = []
        for mkey in [k for k in self.book.memory if k.endswith(tail)]:
            name = mkey.split("|")[0]
            key = f.concat(ban.interface_name, str(ipaddress.ip_network(ban.ip_address).network_address))
            cmds.append({"delete": {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": [key]}}})
            del self.book.memory[mkey]
        return cmds

    def _run_each(self, cmds: list[dict]) -> None:
        """One batch; if the kernel refuses it (a ban expired between observing and replacing
        it, say), command by command, so one failure does not hold back the others."""
        if not cmds:
            return
        try:
            self.executor.batch({"nftables": cmds})
            return
        except NftFailure:
            pass
        for cmd in cmds:
            try:
                self.executor.batch({"nftables": [cmd]})
            except NftFailure as exc:
                log.warning("ban update not applied: %s", exc.message.strip().splitlines()[0])

    def _step_of(self, ifname: str, ip: str, seconds: int) -> tuple[int, str | None] | None:
        found = self._match(ifname, ip, seconds)
        return None if found is None else found[:2]

    def _match(self, ifname: str, ip: str, seconds: float, *, exact: bool = True):
        """The escalation step a ban of ``seconds`` on a port is, its memory set, and the rule:
        the first brute-force rule of the port's policy with a step of that length (the kernel
        does not say which rule banned; a length shared by two steps or rules reads as the
        lowest). ``exact=False``: the first rule whose longest step is at least that long
        (``seconds`` is then what remains of the ban)."""
        state = self.loaded.state  # type: ignore[union-attr]
        if self._ports is None or self._ports[0] is not state:
            self._ports = (state, {p.interface_name: p for p in state.ports})
        port = self._ports[1].get(ifname)
        policy = state.policy_of(port) if port else None
        if policy is None or policy.enforcement == "monitor":
            return None
        v = 6 if ":" in ip else 4
        for i, rule in enumerate(policy.rules):
            if isinstance(rule, BruteForceRule) and v in rule.families():
                tiers = rule.ban_tiers()
                if seconds in tiers or (not exact and seconds <= max(tiers)):
                    step = tiers.index(seconds) + 1 if seconds in tiers else 1
                    rid = RuleContext(policy, i, False, ()).rid
                    return step, (tier_set(rid, v, step) if len(tiers) > 1 else None), policy.name, i
        return None

    def _error(self, message: str) -> None:
        if message != self.last_error:
            log.error("%s", message)
        self.last_error = message

    def _write_status(self, now: float) -> None:
        """On any change, and as a heartbeat every STATUS_HEARTBEAT seconds: the file names
        every port, so rewriting it every pass would be real work on a large host."""
        assert self.loaded is not None
        key = (id(self.loaded.ruleset), str(self.last_apply), self.last_error)
        if key == self._status_key and now < self._status_at + STATUS_HEARTBEAT:
            return
        self._status_key, self._status_at = key, now
        write_status(self.workdir, state=self.loaded.state, ruleset=self.loaded.ruleset,
                     source=self.source.name, netns=self.executor.netns, now=now,
                     last_apply=self.last_apply, last_error=self.last_error, pid=os.getpid())

    # ---- loop ---------------------------------------------------------------------------
    def run(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except NftFailure as exc:
                self._error(f"nft: {exc.message}")
            except Exception as exc:  # the loop must outlive any one pass; the kernel keeps enforcing
                log.exception("reconciliation pass failed")
                self._error(f"internal error: {exc!r}")
            # a new snapshot wakes the loop at once: an API write is enforced within a pass
            self.source.wake.wait(max(0.0, self.interval - (time.monotonic() - started)))
            self.source.wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self.source.wake.set()
