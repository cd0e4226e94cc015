"""The reconciler: keeps the kernel in step with the desired state a source hands it.

Level-triggered: every tick (or at once when the source has a new snapshot) it (1) takes the
source's new snapshot if there is one (a bad one is reported and the last good state stays
enforced), (2) applies the compiled state (a no-op when nothing changed), (3) is the one ban
writer: places the state file's bans, folds the kernel's bans into the ban book when
``banwatch`` says the ban sets must be read (a signal or an audit, never every pass), restores
bans and offender memory the kernel lost, and places, lengthens and lifts the bans the server's
snapshot carries (serverbans.py), and (4) every
``drift_interval`` compares the kernel with what it applied and repairs by a full sync. It
knows no source and writes nothing to the kernel before the first snapshot. See DESIGN.md.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass

from connguard.agent.banbook import BanBook, BookBan
from connguard.agent.banwatch import BanWatch
from connguard.agent.serverbans import server_bans
from connguard.agent.source import Desired, Source
from connguard.agent.statusfile import write_status
from connguard.agent import datapath
from connguard.agent.gcpause import gc_paused
from connguard.compiler.context import RuleContext
from connguard.compiler.dispatch import collapse_bans
from connguard.compiler.ruleset import Ruleset
from connguard.exceptions import ApplyError, CompileError
from connguard.model import BruteForceRule, HostState
from connguard.names import ROLE_BF_TIER, tier_set
from connguard.nft import Applier, observe
from connguard.nft.bans import add_bans, add_memory, ban_set
from connguard.nft.executor import Executor, NftFailure
from connguard.nft.observe import KernelBan, bans_placed, empty_sets

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


class _Seeded:
    """The state file's bans, as ``BanBook.sync`` asks: is this (interface, remote) one?"""

    def __init__(self, seeded: dict) -> None:
        self.seeded = seeded

    def __contains__(self, key: tuple) -> bool:
        return _book_key(key) in self.seeded


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
        self.watch = BanWatch()  # when the ban sets are read whole (banwatch.py)
        self._state_bans_pending = False  # a new snapshot's state-file bans are still to place
        self._freeze = False  # a new snapshot's objects are still to move out of the collector's reach
        self._server_seen: Desired | None = None  # the snapshot whose server bans were placed
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
        # called before and after every pass, on the loop's thread (cli/agent_daemon.py)
        self.before_pass = self.after_pass = None
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
            # bans are not the compiler's: the ban pass places them (_state_bans), whatever
            # their origin, so the ruleset does not carry (and re-diff) 100,000 elements
            with gc_paused():  # a large state: agent/gcpause.py
                ruleset = self._compile(desired.state.model_copy(update={"bans": ()}))
        except CompileError as exc:
            self._error(f"{desired.source} rejected, still enforcing the last good state: {exc}")
            return False
        self.loaded = _Loaded(desired, ruleset)
        self._state_bans_pending = True
        self._freeze = True
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
                try:  # bans are the ban pass's, never the compiler's
                    self.loaded.ruleset = self._compile(state.model_copy(update={"bans": ()}))
                except CompileError as exc:
                    self._error(f"after a tap moved, still enforcing the last good ruleset: {exc}")
            problems = self.applier.drift()
            if problems:
                log.warning("drift: %s; repairing with a full sync", "; ".join(problems[:5]))
                self.applier.invalidate()
        ruleset = self.loaded.ruleset
        try:
            with gc_paused():
                result = self.applier.apply(ruleset)
        except ApplyError as exc:
            self._apply_failed(exc, ruleset)
        else:
            if result.mode == "full":
                self._restore_memory = True
                self.watch.force = True  # the table may have lost anything: read the ban sets
            if result.mode != "noop":
                self.last_apply = {"mode": result.mode, "commands": result.commands,
                                   "seconds": round(result.seconds, 4), "at": now,
                                   "revision": self.loaded.desired.revision}
                log.info("applied (%s): %d commands in %.0f ms", result.mode, result.commands, result.seconds * 1000)
            # a rejected state file (or an unreachable server) stays the error in force until
            # the source recovers: a pass that applied the last good state must not clear it
            self.last_error = self.source.error
            self.port_errors = {}
            self.apply_ok = True
        # bans are kept and restored even while the ruleset cannot be applied
        self._bans(now)
        if self._freeze and not self._state_bans_pending:
            # a snapshot (10,000 ports, 100,000 bans) is millions of objects that live until the
            # next one: out of the cyclic collector's reach, a full collection does not walk them
            # all again (refcounting still frees them when the next snapshot replaces them)
            self._freeze = False
            gc.collect()
            gc.freeze()
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

    def _state_bans(self, now: float) -> tuple[list[dict], set[tuple], dict[str, float | None]]:
        """The state file's bans, once per snapshot: put in the kernel once, with their lifetime
        counted from then, and recorded in the book (``seeded``, and as bans) so that neither a
        restart nor a drift repair puts an expired one back while the book restores the others."""
        if not self._state_bans_pending or self.applier.applied is None:
            return [], set(), {}  # nothing new, or no table yet to put them in
        self._state_bans_pending = False
        state = self.loaded.state  # type: ignore[union-attr]
        current: dict[str, float | None] = {}
        fresh, keys = [], set()
        sets: dict[str, float | None] = {}  # ban set -> the latest expiry placed in it
        for key, seconds in collapse_bans(state.bans):
            name = _book_key(key)
            if name in self.book.seeded:
                current[name] = self.book.seeded[name]
                continue
            until = None if seconds is None else now + seconds
            current[name] = until
            fresh.append((key[1], key[0], seconds))
            keys.add(key)
            self.book.bans[key] = BookBan(key[1], key[0], until, 1, "manual")
            target = ban_set(key[1], key[0])
            if target not in sets or (sets[target] is not None and (until is None or until > sets[target])):
                sets[target] = until
        # forgets bans taken out of the file: if they come back, they are new bans
        self.book.set_seeded(current)
        if fresh:
            self.book.dirty = True
            log.info("state file: %d ban(s) put in the kernel", len(fresh))
        return add_bans(fresh), keys, sets

    def _bans(self, now: float) -> None:
        """The one ban writer. The ban sets are read whole only when ``BanWatch`` says so (the
        kernel placed a ban, a set was flushed, a full sync, the audit interval): an idle pass
        costs one counter read and a probe, whatever the number of bans."""
        # first, so that a read finds the state file's bans in the book (``seeded``: manual)
        state_cmds, fresh, fresh_sets = self._state_bans(now)
        counter = bans_placed(self.executor)
        flushed = empty_sets(self.executor, self.watch.expected(now))
        reason = self.watch.due(now, counter, bool(flushed))
        kernel: list[KernelBan] | None = None
        if reason is not None:
            if flushed:
                log.warning("ban set(s) %s found empty; reading the ban sets", ", ".join(flushed))
            # the read's cost is this thread's CPU time (user and kernel), not wall time: a busy
            # machine must not stretch the gaps, and the share bounded is the agent's own work
            started = time.thread_time()
            kernel = observe(self.executor, bans_only=True).bans
            self._fold(kernel, now)
            expect: dict[str, float | None] = {}
            for kb in kernel:
                until = None if kb.expires is None else now + kb.expires
                name = ban_set(kb.ip_address, kb.interface_name)
                if name not in expect or (expect[name] is not None and (until is None or until > expect[name])):
                    expect[name] = until
            self.watch.read(self.clock(), counter, time.thread_time() - started, expect)
            present = {(kb.interface_name, kb.ip_address) for kb in kernel}
            held = present.__contains__
        else:
            self.book.forget_lifted(now)
            held = self._held_by_book(now)
        cmds: list[dict] = []
        placed: set[tuple] = set()
        if kernel is not None or self.loaded.desired is not self._server_seen:  # type: ignore[union-attr]
            # a new snapshot, or the kernel re-read: not on idle passes (it walks the book)
            self._server_seen = self.loaded.desired  # type: ignore[union-attr]
            cmds, placed = server_bans(self._server_seen, self.book, self.watch, now, held)
        restore = []
        if kernel is not None:
            for ban in self.book.missing_from(kernel, now):
                if ban.key() in placed or ban.key() in fresh:
                    continue
                remaining = ban.remaining(now)
                restore.append((ban.ip_address, ban.interface_name, None if remaining is None else int(remaining)))
                self.watch.placed(ban_set(ban.ip_address, ban.interface_name), ban.expires_at)
        if restore:
            log.warning("restoring %d ban(s) the kernel lost, e.g. %s on %s", len(restore), restore[0][0],
                        restore[0][1] or "all ports")
            cmds += add_bans(restore)
        cmds += state_cmds
        for name, until in fresh_sets.items():  # after the read: it replaced what the watch expects
            self.watch.placed(name, until)
        if self._restore_memory and kernel is not None:
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

    def _fold(self, kernel: list[KernelBan], now: float) -> None:
        """Fold a whole read into the book and queue the detections for the reporter."""
        by_key = {(kb.interface_name, kb.ip_address): kb for kb in kernel}
        manual = _Seeded(self.book.seeded)
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
            self.detected.append(Detection(dataclasses.replace(ban), banned_at, *(match[2:] if match else (None, None))))
            if self.detect_hook is not None:
                self.detect_hook()

    def _held_by_book(self, now: float):
        """Between whole reads the kernel holds what the book holds, less what has expired."""
        def held(key: tuple) -> bool:
            ban = self.book.bans.get(key)
            return ban is not None and (ban.expires_at is None or ban.expires_at > now)
        return held

    def _run_each(self, cmds: list[dict]) -> None:
        """One batch; if the kernel refuses it (a ban expired between observing and replacing
        it, a state-file prefix overlapping a ban already there), command by command, and a
        refused command of many elements by halves: k refused elements of n cost about
        k log n batches, not n, and never hold back the others."""
        if not cmds:
            return
        try:
            self.executor.batch({"nftables": cmds})
            return
        except NftFailure:
            pass
        for cmd in cmds:
            self._bisect(cmd)

    def _bisect(self, cmd: dict) -> None:
        try:
            self.executor.batch({"nftables": [cmd]})
            return
        except NftFailure as exc:
            verb = next(iter(cmd))
            el = cmd[verb].get("element") if isinstance(cmd[verb], dict) else None
            if not el or len(el["elem"]) < 2:
                log.warning("ban update not applied: %s", exc.message.strip().splitlines()[0])
                return
        half = len(el["elem"]) // 2
        for part in (el["elem"][:half], el["elem"][half:]):
            self._bisect({verb: {"element": {**el, "elem": part}}})

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
                if self.before_pass is not None:
                    self.before_pass()
                self.tick()
            except NftFailure as exc:
                self._error(f"nft: {exc.message}")
            except Exception as exc:  # the loop must outlive any one pass; the kernel keeps enforcing
                log.exception("reconciliation pass failed")
                self._error(f"internal error: {exc!r}")
            if self.after_pass is not None:
                self.after_pass()
            # a new snapshot wakes the loop at once: an API write is enforced within a pass
            self.source.wake.wait(max(0.0, self.interval - (time.monotonic() - started)))
            self.source.wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self.source.wake.set()
