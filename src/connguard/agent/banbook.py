"""The ban book: what the agent knows about bans, persisted so that neither an agent restart
nor a flushed table forgives a ban or an offender's escalation step.

The kernel is the source of truth for *active* bans and escalates repeat offences itself
(compiler/punishment.py: per-rule offender memory sets). The book remembers bans with absolute
expiry times and, for detected bans, the escalation step and the memory set that holds it, so
that what the kernel lost (a flushed table) can be given back. Written atomically (temp file +
rename) after every change.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from connguard.compiler.context import OFFENCE_MEMORY
from connguard.nft.observe import KernelBan

# (port, remote, ban length in seconds) -> (escalation step, its memory set or None); None when
# no brute-force rule of the port bans for that length
StepOf = Callable[[str, str, int], "tuple[int, str | None] | None"]


@dataclass
class BookBan:
    ip_address: str
    interface_name: str | None
    expires_at: float | None  # epoch seconds; None: no expiry
    offence: int = 1          # detected bans: the escalation step the kernel banned at
    origin: str = "detected"  # detected | manual | server (placed from the server's snapshot)
    memory: str | None = None  # detected bans: the offender memory set holding this step
    # the server's snapshot carries this ban (placed from it, or a detection the server has
    # recorded): it is lifted when the snapshot no longer does (``connguard ban delete``)
    server: bool = False

    def key(self) -> tuple[str | None, str]:
        return (self.interface_name, self.ip_address)

    def remaining(self, now: float) -> float | None:
        return None if self.expires_at is None else self.expires_at - now


@dataclass(frozen=True)
class Memory:
    set_name: str
    interface_name: str
    ip_address: str
    seconds: int  # remaining


class BanBook:
    def __init__(self, path: Path):
        self.path = path
        self.bans: dict[tuple, BookBan] = {}
        # offender memory as the kernel holds it: "set|ifname|ip" -> expiry (epoch seconds)
        self.memory: dict[str, float] = {}
        # state-file bans already put in the kernel once ("ifname|ip" -> expiry or None): they
        # are not put there again (after a restart, once expired), only restored while unexpired
        self.seeded: dict[str, float | None] = {}
        self.dirty = False  # set by every change; save() writes only then
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"ban book {self.path} is unreadable ({exc}); move it away to start afresh") from None
        for b in data.get("bans", []):
            ban = BookBan(**b)
            self.bans[ban.key()] = ban
        self.memory = data.get("memory", {})  # a book from before kernel escalation has none
        self.seeded = data.get("seeded", {})

    def set_seeded(self, seeded: dict[str, float | None]) -> None:
        if seeded != self.seeded:
            self.seeded = seeded
            self.dirty = True

    def save(self) -> None:
        """Write the book if it changed since the last write (atomically, fsync'd)."""
        if not self.dirty:
            return
        payload = {"bans": [asdict(b) for b in self.bans.values()], "memory": self.memory,
                   "seeded": self.seeded}
        text = json.dumps(payload, indent=1, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".bans.")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self.dirty = False

    def sync(self, kernel: list[KernelBan], now: float, *, manual: set[tuple], step_of: StepOf) -> list[BookBan]:
        """Fold the kernel's current bans into the book; returns the detected bans recorded
        now (new ones, and bans the kernel gave again at once when the last one expired)."""
        recorded: list[BookBan] = []
        seen = set()
        for kb in kernel:
            key = (kb.interface_name, kb.ip_address)
            seen.add(key)
            expires_at = None if kb.expires is None else now + kb.expires
            known = self.bans.get(key)
            if known is not None:
                if expires_at is not None and (known.expires_at is None or expires_at > known.expires_at + 1):
                    # banned again (the attacker retried the moment it expired), or lengthened by hand
                    known.expires_at = expires_at
                    self.dirty = True
                    if known.origin == "detected":
                        known.server = False  # a new offence: the server has not seen this one yet
                        self._offence(known, kb, step_of)
                        recorded.append(known)
                continue
            origin = "manual" if key in manual or kb.interface_name is None else "detected"
            ban = BookBan(kb.ip_address, kb.interface_name, expires_at, 1, origin)
            if origin == "detected":
                self._offence(ban, kb, step_of)
                recorded.append(ban)
            self.bans[key] = ban
            self.dirty = True
        # Bans the kernel no longer has: expired ones are done; unexpired ones were lost
        # (flushed table) and stay in the book to be restored.
        for key, ban in list(self.bans.items()):
            if key not in seen and ban.expires_at is not None and ban.expires_at <= now + 0.5:
                del self.bans[key]
                self.dirty = True
        for mkey, until in list(self.memory.items()):
            if until <= now:
                del self.memory[mkey]
                self.dirty = True
        return recorded

    def _offence(self, ban: BookBan, kb: KernelBan, step_of: StepOf) -> None:
        """Which escalation step the kernel banned at, read from the ban's length (exact unless
        two steps or two rules of the port give the same length: then the lowest step)."""
        found = step_of(kb.interface_name, kb.ip_address, int(kb.timeout)) \
            if kb.interface_name is not None and kb.timeout is not None else None
        if found is None:
            return
        ban.offence, ban.memory = found
        if ban.memory is None or ban.expires_at is None:
            return
        # the kernel moved the remote from the previous step's set to this one
        rule_family = ban.memory.rsplit("_", 1)[0] + "_"
        tail = f"|{ban.interface_name}|{ban.ip_address}"
        for mkey in [k for k in self.memory if k.startswith(rule_family) and k.endswith(tail)]:
            del self.memory[mkey]
        self.memory[ban.memory + tail] = ban.expires_at + OFFENCE_MEMORY

    def memory_entries(self, now: float, sets: set[str]) -> list[Memory]:
        """The offender memory to give back to a table that may have lost it, for sets the
        current ruleset has."""
        out = []
        for mkey, until in sorted(self.memory.items()):
            name, ifname, ip = mkey.split("|")
            if name in sets and until - now >= 1:
                out.append(Memory(name, ifname, ip, int(until - now)))
        return out

    def missing_from(self, kernel: list[KernelBan], now: float) -> list[BookBan]:
        present = {(kb.interface_name, kb.ip_address) for kb in kernel}
        return [b for k, b in self.bans.items()
                if k not in present and (b.expires_at is None or b.expires_at - now >= 1)]
