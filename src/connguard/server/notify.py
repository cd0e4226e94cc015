"""Wake long-polling agents as soon as a desired-state change commits.

In this process, a commit that bumped a host revision (``touch_hosts``) wakes the pollers
(SQLAlchemy ``after_commit``). Across server
processes on one PostgreSQL database, ``touch_hosts`` sends ``NOTIFY connguard_hosts`` inside
the writing transaction, and each server runs a ``PgListener`` thread that LISTENs and wakes
its own pollers. The pollers' reader (server/watch.py, one query for all of them) still
re-reads now and then (``Notifier.reread_seconds``): every second while no listener is
connected (SQLite, or PostgreSQL while the listening connection is down), rarely while it is,
as a safety net only.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from connguard.db.services.common import HOSTS_CHANNEL, HOSTS_TOUCHED

log = logging.getLogger("connguard.server")

REREAD_UNLISTENED = 1.0
REREAD_LISTENING = 30.0


class Notifier:
    """One asyncio.Event per event loop (a server has one; tests may run several)."""

    def __init__(self) -> None:
        self._events: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self.reread_seconds = REREAD_UNLISTENED

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Wake the pollers after each commit that bumped a host revision (``touch_hosts``
        marks the session), not after every commit: agents' heartbeats commit every few
        seconds, and each wake costs every waiting poller a query."""
        def after_commit(session: Session) -> None:
            if session.info.pop(HOSTS_TOUCHED, False):
                self.notify()

        event.listen(sessions, "after_commit", after_commit)
        event.listen(sessions, "after_rollback", lambda session: session.info.pop(HOSTS_TOUCHED, None))

    def notify(self) -> None:
        """Thread-safe: called from the worker threads of sync handlers and the listener."""
        for loop in list(self._events):
            if loop.is_closed():
                self._events.pop(loop, None)
            else:
                loop.call_soon_threadsafe(self._wake, loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        ev = self._events.pop(loop, None)
        if ev is not None:
            ev.set()

    def event(self) -> asyncio.Event:
        """This loop's event, set at the next commit (server/watch.py takes it before reading)."""
        return self._events.setdefault(asyncio.get_running_loop(), asyncio.Event())

    async def wait(self, timeout: float) -> None:
        """Return at the next commit, or after ``timeout`` seconds."""
        ev = self._events.setdefault(asyncio.get_running_loop(), asyncio.Event())
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            pass


class PgListener:
    """A thread holding one PostgreSQL connection that LISTENs on ``HOSTS_CHANNEL`` and calls
    ``notifier.notify()`` for each notification. It reconnects with backoff when the
    connection drops, and wakes the pollers on every (re)connect, since notifications sent
    while it was away are lost."""

    def __init__(self, engine: Engine, notifier: Notifier) -> None:
        self.engine, self.notifier = engine, notifier
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connguard-pg-listener", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                log.warning("PostgreSQL listener: %s; reconnecting in %.1f s", exc, backoff)
            self.connected.clear()
            self.notifier.reread_seconds = REREAD_UNLISTENED
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _listen(self) -> None:
        raw = self.engine.raw_connection()
        conn = raw.driver_connection
        raw.detach()  # ours for good: the pool neither reuses nor resets it
        try:
            conn.autocommit = True
            conn.execute(text(f"LISTEN {HOSTS_CHANNEL}").text)
            self.notifier.reread_seconds = REREAD_LISTENING
            self.connected.set()
            self.notifier.notify()
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=1.0):
                    self.notifier.notify()
        finally:
            conn.close()
