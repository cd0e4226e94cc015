"""Sources of desired state. A source hands the reconciler complete, frozen snapshots
(``Desired``) and nothing else: the reconciler knows no file and no server (STYLE.md item 12).

``poll()`` returns a new snapshot when there is one (else None) and sets ``error`` when the
latest attempt failed (the last good snapshot stays in force); ``wake`` is set when a snapshot
arrives, so the reconciler need not wait for its next tick.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol

from connguard.exceptions import ValidationFailed
from connguard.model import HostState, load_state_file


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


class StateFileSource:
    """The standalone mode's source: the YAML file, reloaded when its inode, mtime or size
    changes. A bad file is reported with the field that is wrong."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(self.path.resolve())
        self.error: str | None = None
        self.wake = threading.Event()
        self._stamp: tuple | None = None

    def stamp(self) -> tuple:
        try:
            st = self.path.stat()
        except OSError:
            return ("missing",)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def poll(self) -> Desired | None:
        stamp = self.stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp  # a bad file is reported once, not every tick
        try:
            state = load_state_file(self.path)
        except ValidationFailed as exc:
            self.error = f"state file rejected, still enforcing the last good state: {exc}"
            return None
        self.error = None
        return Desired(state, f"state file {self.path}")
