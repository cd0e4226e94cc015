"""The ban book: what the agent knows about bans, persisted so that neither an agent restart
nor a flushed table forgives a ban or an offender's escalation step.

The kernel is the source of truth for *active* bans and escalates repeat offences itself
(compiler/punishment.py: per-rule offender memory sets). The book remembers bans with absolute
expiry times and, for detected bans, the escalation step and the memory set that holds it, so
that what the kernel lost (a flushed table) can be given back. Written atomically (temp file +
rename) after every change.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from connguard.names import OFFENCE_MEMORY, same_tier_family
from connguard.nft.observe import KernelBan

# A lift (``connguard ban delete ADDRESS --netns NS``) is a request in ``lifts.json`` beside the
# book: the book forgets the ban, and ignores it in the kernel until a pass sees the kernel
# without it (the CLI deletes it there right after asking) or this long has passed.
LIFT_SECONDS = 10.0

# (port, remote, ban length in seconds) -> (escalation step, its memory set or None); None when
# no brute-force rule of the port bans for that length
StepOf = Callable[[str, str, int], "tuple[int, str | None] | None"]


@dataclass(slots=True)  # 100,000 of them: no per-instance dict
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

    def _lifts(self, now: float, seen_in_kernel: set[tuple] | None) -> set[tuple]:
        """The pending lift requests (forgetting those bans); with ``seen_in_kernel``, also
        retire the requests the kernel has confirmed (the ban is gone) or that lapsed."""
        path = lifts_path(self.path)
        if not path.exists():
            return set()
        with _locked(path):
            pending = _read_lifts(path)
            keys = {k for k, until in pending.items() if until > now}
            for key in keys:
                if self.bans.pop(key, None) is not None:
                    self.dirty = True
            if seen_in_kernel is not None:
                kept = {_lift_name(k): pending[k] for k in keys if k in seen_in_kernel}
                if kept:
                    _write_json(path, kept)
                else:
                    path.unlink(missing_ok=True)
        return keys

    def forget_lifted(self, now: float) -> None:
        """Between whole reads of the kernel: forget the bans asked to be lifted (the requests
        are retired by the next read that finds the kernel without them, or lapse)."""
        self._lifts(now, seen_in_kernel=None)

    def apply_lifts(self, now: float) -> None:
        """Forget the requested bans while no agent runs (the CLI holds the agent's lock). The
        requests stay until they lapse: an agent started meanwhile honours them too."""
        self._lifts(now, seen_in_kernel=None)
        self.save()

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
        lifting = self._lifts(now, seen_in_kernel={(kb.interface_name, kb.ip_address) for kb in kernel})
        for kb in kernel:
            key = (kb.interface_name, kb.ip_address)
            seen.add(key)
            if key in lifting:
                continue  # being lifted by hand: the kernel's copy goes in a moment
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
        tail = f"|{ban.interface_name}|{ban.ip_address}"
        for mkey in [k for k in self.memory if k.endswith(tail) and same_tier_family(k.split("|", 1)[0], ban.memory)]:
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


# ---- lift requests (connguard ban delete ADDRESS --netns NS) ---------------------------------


def lifts_path(book_path: Path) -> Path:
    return book_path.with_name("lifts.json")


def _lift_name(key: tuple) -> str:
    return f"{key[0] or ''}|{key[1]}"


def _read_lifts(path: Path) -> dict[tuple, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for name, until in data.items() if isinstance(data, dict) else ():
        ifname, _, ip = name.partition("|")
        out[(ifname or None, ip)] = float(until)
    return out


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, sort_keys=True)
    os.replace(tmp, path)


class _locked:
    """The lifts file is read-modify-written by the CLI and by the agent: one at a time."""

    def __init__(self, path: Path):
        self.lock = path.with_name(".lifts.lock")

    def __enter__(self) -> None:
        self.fh = open(self.lock, "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def request_lifts(book_path: Path, keys: list[tuple[str | None, str]], now: float) -> None:
    """Ask the keeper of the book at ``book_path`` (a running agent, at its next pass, or
    ``BanBook.apply_lifts``) to forget these bans: (interface name or None, remote) as the
    kernel and the book spell them."""
    path = lifts_path(book_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        pending = {_lift_name(k): until for k, until in _read_lifts(path).items() if until > now}
        pending.update({_lift_name(k): now + LIFT_SECONDS for k in keys})
        _write_json(path, pending)


def pending_lifts(book_path: Path, now: float) -> set[tuple]:
    return {k for k, until in _read_lifts(lifts_path(book_path)).items() if until > now}
