"""The ban book: what the agent knows about bans and offences, persisted so that neither an
agent restart nor a flushed table forgives a ban, and repeat offenders are escalated.

The kernel is the source of truth for *active* bans (the packet path adds them); the book
remembers them with absolute expiry times, counts offences per (port, remote), and gives back
the bans the kernel lost. Written atomically (temp file + rename) after every change.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from connguard.nft.observe import KernelBan

FORGET_AFTER = 86_400  # an offence is forgotten a day after the ban it caused ended


@dataclass
class BookBan:
    ip_address: str
    interface_name: str | None
    expires_at: float | None  # epoch seconds; None: no expiry
    offence: int = 1
    origin: str = "detected"  # detected | manual

    def key(self) -> tuple[str | None, str]:
        return (self.interface_name, self.ip_address)

    def remaining(self, now: float) -> float | None:
        return None if self.expires_at is None else self.expires_at - now


@dataclass(frozen=True)
class Escalation:
    interface_name: str
    ip_address: str
    offence: int
    seconds: int


class BanBook:
    def __init__(self, path: Path):
        self.path = path
        self.bans: dict[tuple, BookBan] = {}
        self.offences: dict[str, dict] = {}  # "ifname|ip" -> {"count": n, "until": epoch}
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
        self.offences = data.get("offences", {})
        self.seeded = data.get("seeded", {})

    def set_seeded(self, seeded: dict[str, float | None]) -> None:
        if seeded != self.seeded:
            self.seeded = seeded
            self.dirty = True

    def save(self) -> None:
        """Write the book if it changed since the last write (atomically, fsync'd)."""
        if not self.dirty:
            return
        payload = {"bans": [asdict(b) for b in self.bans.values()], "offences": self.offences,
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

    def sync(self, kernel: list[KernelBan], now: float, *, manual: set[tuple], ban_for) -> list[Escalation]:
        """Fold the kernel's current bans into the book. ``ban_for(ifname, offence)`` gives the
        escalated ban length for a detected ban on that port (None: no brute-force rule).
        Returns the bans to lengthen."""
        escalations: list[Escalation] = []
        seen = set()
        for kb in kernel:
            key = (kb.interface_name, kb.ip_address)
            seen.add(key)
            expires_at = None if kb.expires is None else now + kb.expires
            known = self.bans.get(key)
            if known is not None:
                if expires_at is not None and (known.expires_at is None or expires_at > known.expires_at + 1):
                    known.expires_at = expires_at  # lengthened elsewhere (manual, escalation)
                    self.dirty = True
                continue
            origin = "manual" if key in manual or kb.interface_name is None else "detected"
            ban = BookBan(kb.ip_address, kb.interface_name, expires_at, 1, origin)
            if origin == "detected":
                okey = f"{kb.interface_name}|{kb.ip_address}"
                history = self.offences.get(okey)
                count = history["count"] + 1 if history and history["until"] > now else 1
                ban.offence = count
                seconds = ban_for(kb.interface_name, count) if count > 1 else None
                if seconds is not None and kb.timeout is not None and seconds > kb.timeout:
                    escalations.append(Escalation(kb.interface_name, kb.ip_address, count, seconds))  # type: ignore[arg-type]
                    ban.expires_at = now + seconds
                self.offences[okey] = {"count": count, "until": (ban.expires_at or now) + FORGET_AFTER}
            self.bans[key] = ban
            self.dirty = True
        # Bans the kernel no longer has: expired ones are done; unexpired ones were lost
        # (flushed table) and stay in the book to be restored.
        for key, ban in list(self.bans.items()):
            if key not in seen and ban.expires_at is not None and ban.expires_at <= now + 0.5:
                del self.bans[key]
                self.dirty = True
        for okey, history in list(self.offences.items()):
            if history["until"] <= now:
                del self.offences[okey]
                self.dirty = True
        return escalations

    def missing_from(self, kernel: list[KernelBan], now: float) -> list[BookBan]:
        present = {(kb.interface_name, kb.ip_address) for kb in kernel}
        return [b for k, b in self.bans.items()
                if k not in present and (b.expires_at is None or b.expires_at - now >= 1)]
