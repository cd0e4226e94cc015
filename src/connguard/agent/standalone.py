"""The standalone agent: keeps a state file applied.

Level-triggered: every tick it (1) reloads the state file if it changed (a bad file is
reported and the last good state stays enforced), (2) applies the compiled state (a no-op
when nothing changed), (3) folds the kernel's bans into the ban book (the kernel escalates
repeat offences itself) and restores bans and offender memory the kernel lost, and (4) every ``drift_interval`` compares the
kernel with what it applied and repairs by a full sync. See DESIGN.md beside this file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from connguard.agent.banbook import BanBook
from connguard.agent.statusfile import write_status
from connguard.compiler import compile_host
from connguard.compiler.context import RuleContext
from connguard.compiler.dispatch import ban_key
from connguard.compiler.punishment import tier_set
from connguard.compiler.ruleset import Ruleset
from connguard.exceptions import ApplyError, CompileError, ValidationFailed
from connguard.model import BruteForceRule, HostState
from connguard.model.state import load_state_text
from connguard.nft import Applier, observe
from connguard.nft.bans import add_bans, add_memory
from connguard.nft.executor import Executor, NftFailure

log = logging.getLogger("connguard.agent")

STATUS_HEARTBEAT = 10.0  # seconds between rewrites of an unchanged status file
SETTLE_SECONDS = 1.0     # a changed state file must stay unchanged this long to be loaded


@dataclass
class _Loaded:
    stamp: tuple
    state: HostState
    ruleset: Ruleset


def _book_key(key: tuple[str | None, str]) -> str:
    return f"{key[0] or ''}|{key[1]}"


class StandaloneAgent:
    def __init__(self, state_file: str | Path, executor: Executor, workdir: Path, *,
                 interval: float = 1.0, drift_interval: float = 10.0, clock=time.time):
        self.state_file = Path(state_file)
        self.executor = executor
        self.workdir = workdir
        self.interval = interval
        self.drift_interval = drift_interval
        self.clock = clock
        self.applier = Applier(executor)
        self.book = BanBook(workdir / "bans.json")
        self.loaded: _Loaded | None = None
        self.last_error: str | None = None
        # a rejected state file stays the error in force until a good file is loaded: a pass
        # whose apply (of the last good state) succeeds must not clear it (connguard status)
        self.state_error: str | None = None
        self.last_apply: dict | None = None
        self._next_drift = 0.0
        self._stop = threading.Event()
        self._status_key: tuple | None = None
        self._status_at = 0.0
        self._ports: tuple | None = None  # (state, interface name -> port), for _step_of
        self._restore_memory = False  # after a full sync: the table may have lost its memory sets

    # ---- state file ---------------------------------------------------------------------
    # A file rewritten in place is, for a while, half written, and half a state file is often
    # a valid state that protects less (cut before `ports:` it protects nothing). A changed
    # file is loaded only once it is stable: the same inode, mtime, size and content (sha256)
    # for `settle` seconds as the agent saw them, or last modified at least `settle` seconds
    # ago; until then the last good state stays enforced. A writer that pauses longer than
    # that mid-file can still be seen half-way: write a new file and rename it over the old
    # one (examples/state.yaml, README). Class attributes, so tests can shorten them.
    settle: float = SETTLE_SECONDS
    _pending: tuple | None = None  # ((stamp, digest), monotonic time first seen)

    def _stamp(self) -> tuple:
        try:
            st = self.state_file.stat()
        except OSError:
            return ("missing",)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _stable_text(self, stamp: tuple) -> str | None:
        """The file's text if it is complete by the rule above, else None (look again next
        pass). An unreadable file raises ValidationFailed at once: there is nothing to wait for."""
        try:
            data = self.state_file.read_bytes()
        except OSError as exc:
            raise ValidationFailed([(str(self.state_file), f"cannot read: {exc.strerror}")]) from None
        if self._stamp() != stamp:  # written to while we read it
            self._pending = None
            return None
        seen = (stamp, hashlib.sha256(data).digest())
        now = time.monotonic()
        if self._pending is None or self._pending[0] != seen:
            self._pending = (seen, now)
        if now - self._pending[1] < self.settle and time.time() - stamp[1] / 1e9 < self.settle:
            log.debug("%s changed; waiting %.1f s for it to settle", self.state_file, self.settle)
            return None
        self._pending = None
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise ValidationFailed([(str(self.state_file), f"not UTF-8 text: byte {exc.start}")]) from None

    def reload(self) -> bool:
        stamp = self._stamp()
        if self.loaded is not None and stamp == self.loaded.stamp:
            self._pending = None
            return False
        try:
            text = self._stable_text(stamp)
            if text is None:
                return False
            state = load_state_text(text, source=str(self.state_file))
            # the file's bans are put in the kernel once, with their lifetime from then
            fresh = tuple(b for b in state.bans if _book_key(ban_key(b)) not in self.book.seeded)
            ruleset = compile_host(state.model_copy(update={"bans": fresh}))
        except (ValidationFailed, CompileError) as exc:
            self.state_error = f"state file rejected, still enforcing the last good state: {exc}"
            self._error(self.state_error)
            if self.loaded is not None:
                self.loaded.stamp = stamp  # do not re-report every tick
            return False
        self.loaded = _Loaded(stamp, state, ruleset)
        self.state_error = None
        log.info("loaded %s: %d policies, %d ports", self.state_file, len(state.policies), len(state.ports))
        return True

    # ---- one reconciliation pass --------------------------------------------------------
    def tick(self) -> None:
        self.reload()
        if self.loaded is None:
            return
        now = self.clock()
        if now >= self._next_drift and self.applier.applied is not None:
            self._next_drift = now + self.drift_interval
            problems = self.applier.drift()
            if problems:
                log.warning("drift: %s; repairing with a full sync", "; ".join(problems[:5]))
                self.applier.invalidate()
        try:
            result = self.applier.apply(self.loaded.ruleset)
        except ApplyError as exc:
            self._error(str(exc))
        else:
            if result.mode == "full":
                self._restore_memory = True
            if result.mode != "noop":
                self.last_apply = {"mode": result.mode, "commands": result.commands,
                                   "seconds": round(result.seconds, 4), "at": now}
                log.info("applied (%s): %d commands in %.0f ms", result.mode, result.commands, result.seconds * 1000)
            for w in result.warnings:
                log.warning("state ban not applied: %s", w)
            self._record_seeds(now)
            self.last_error = self.state_error
        # bans are kept and restored even while the ruleset cannot be applied
        self._bans(now)
        self._write_status(now)

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
            self.loaded.ruleset = compile_host(self.loaded.state.model_copy(update={"bans": ()}))

    def _bans(self, now: float) -> None:
        kernel = observe(self.executor, bans_only=True).bans
        state = self.loaded.state  # type: ignore[union-attr]
        manual = {ban_key(b) for b in state.bans}
        for ban in self.book.sync(kernel, now, manual=manual, step_of=self._step_of):
            if ban.offence > 1:
                log.warning("repeat offence by %s on %s: banned at escalation step %d for %d s",
                            ban.ip_address, ban.interface_name, ban.offence, round(ban.remaining(now) or 0))
        cmds: list[dict] = []
        restore = []
        for ban in self.book.missing_from(kernel, now):
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
            wanted = {s.name for s in self.loaded.ruleset.sets if s.role == "bf_tier"}  # type: ignore[union-attr]
            memory = self.book.memory_entries(now, wanted)
            if memory:
                log.info("offender memory: %d element(s) given back to the kernel", len(memory))
                cmds += add_memory(memory)
        self._run_each(cmds)
        self.book.save()

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
        """The escalation step a ban of ``seconds`` on a port is, and its memory set: the first
        brute-force rule of the port's policy with a step of that length (the kernel does not
        say which rule banned; a length shared by two steps or rules reads as the lowest)."""
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
                if seconds in tiers:
                    step = tiers.index(seconds) + 1
                    rid = RuleContext(policy, i, False, ()).rid
                    return step, (tier_set(rid, v, step) if len(tiers) > 1 else None)
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
                     source=str(self.state_file.resolve()), netns=self.executor.netns, now=now,
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
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
