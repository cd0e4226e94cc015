"""Wake long-polling agents as soon as a write commits in this process. Other server processes
(several servers on one PostgreSQL) are still seen by the pollers' periodic re-read."""

from __future__ import annotations

import asyncio

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker


class Notifier:
    """One asyncio.Event per event loop (a server has one; tests may run several)."""

    def __init__(self) -> None:
        self._events: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}

    def watch(self, sessions: sessionmaker[Session]) -> None:
        event.listen(sessions, "after_commit", lambda _session: self.notify())

    def notify(self) -> None:
        """Thread-safe: called from the worker threads of sync handlers."""
        for loop in list(self._events):
            if loop.is_closed():
                self._events.pop(loop, None)
            else:
                loop.call_soon_threadsafe(self._wake, loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        ev = self._events.pop(loop, None)
        if ev is not None:
            ev.set()

    async def wait(self, timeout: float) -> None:
        """Return at the next commit, or after ``timeout`` seconds."""
        ev = self._events.setdefault(asyncio.get_running_loop(), asyncio.Event())
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            pass
