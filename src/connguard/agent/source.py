"""Sources of desired state. A source hands the reconciler complete, frozen snapshots
(``Desired``) and nothing else: the reconciler knows no file and no server (STYLE.md item 12).

``poll()`` returns a new snapshot when there is one (else None) and sets ``error`` when the
latest attempt failed (the last good snapshot stays in force); ``wake`` is set when a snapshot
arrives, so the reconciler need not wait for its next tick.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol

from connguard.exceptions import ValidationFailed
from connguard.model import HostState
from connguard.model.state import load_state_text

log = logging.getLogger("connguard.agent")


@dataclass(frozen=True)
class ServerBan:
    """A ban the server's snapshot carries (manual, shared from another host, or this host's
    own detection as the server recorded it). ``targets`` are the kernel elements it becomes
    on this host: (interface or None for host-wide, address or prefix)."""

    id: str
    ip_address: str
    targets: tuple[tuple[str | None, str], ...]
    expires_at: float | None  # epoch seconds; None: until deleted
    offence_count: int = 1
    origin: str = "manual"


@dataclass(frozen=True)
class Desired:
    state: HostState
    source: str                     # what to call it in messages ("state file X", "server snapshot")
    revision: int | None = None
    port_ids: Mapping[str, str] = field(default_factory=dict)               # interface -> port id
    rule_ids: Mapping[tuple[str, int], str] = field(default_factory=dict)   # (policy, index) -> rule id
    server_bans: tuple[ServerBan, ...] = ()
    warnings: tuple[str, ...] = ()  # parts of the snapshot not enforced, and why


class Source(Protocol):
    error: str | None
    wake: threading.Event
    name: str

    def poll(self) -> Desired | None: ...


SETTLE_SECONDS = 1.0  # a changed state file must stay unchanged this long to be loaded


class StateFileSource:
    """The standalone mode's source: the YAML file, reloaded when its inode, mtime or size
    changes, once it is stable. A bad file is reported with the field that is wrong.

    A file rewritten in place is, for a while, half written, and half a state file is often
    a valid state that protects less (cut before `ports:` it protects nothing). A changed
    file is loaded only once it is stable: the same inode, mtime, size and content (sha256)
    for `settle` seconds as the agent saw them, or last modified at least `settle` seconds
    ago; until then the last good state stays enforced. A writer that pauses longer than
    that mid-file can still be seen half-way: write a new file and rename it over the old
    one (examples/state.yaml, README). Class attribute, so tests can shorten it.
    """

    settle: float = SETTLE_SECONDS

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(self.path.resolve())
        self.error: str | None = None
        self.wake = threading.Event()
        self._stamp: tuple | None = None
        self._pending: tuple | None = None  # ((stamp, digest), monotonic time first seen)
        self._now = False  # reload_now(): read the file on the next poll, without settling

    def reload_now(self) -> None:
        """SIGHUP: the operator says the file is complete; read it again on the next poll even
        if unchanged, without waiting for it to settle."""
        self._stamp, self._pending, self._now = None, None, True
        self.wake.set()

    def stamp(self) -> tuple:
        try:
            st = self.path.stat()
        except OSError:
            return ("missing",)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _stable_text(self, stamp: tuple) -> str | None:
        """The file's text if it is complete by the rule above, else None (look again next
        pass). An unreadable file raises ValidationFailed at once: there is nothing to wait for."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ValidationFailed([(str(self.path), f"cannot read: {exc.strerror}")]) from None
        if self.stamp() != stamp:  # written to while we read it
            self._pending = None
            return None
        seen = (stamp, hashlib.sha256(data).digest())
        now = time.monotonic()
        if self._pending is None or self._pending[0] != seen:
            self._pending = (seen, now)
        if not self._now and now - self._pending[1] < self.settle and time.time() - stamp[1] / 1e9 < self.settle:
            log.debug("%s changed; waiting %.1f s for it to settle", self.path, self.settle)
            # look again once it can have settled, not a whole pass interval later (with a long
            # interval a just-written file at start would otherwise wait that long to be enforced)
            timer = threading.Timer(self.settle - (now - self._pending[1]) + 0.05, self.wake.set)
            timer.daemon = True
            timer.start()
            return None
        self._pending = None
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise ValidationFailed([(str(self.path), f"not UTF-8 text: byte {exc.start}")]) from None

    def poll(self) -> Desired | None:
        stamp = self.stamp()
        if stamp == self._stamp:
            self._pending = None
            return None
        try:
            text = self._stable_text(stamp)
            if text is None:
                return None  # not settled: the last good state stays, look again next pass
            state = load_state_text(text, source=str(self.path))
        except ValidationFailed as exc:
            self._stamp, self._now = stamp, False  # a bad file is reported once, not every tick
            self.error = f"state file rejected, still enforcing the last good state: {exc}"
            return None
        self._stamp, self._now = stamp, False
        self.error = None
        return Desired(state, f"state file {self.path}")
