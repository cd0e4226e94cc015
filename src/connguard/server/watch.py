"""The long-polls of the agent channel, served together.

Why: each waiting agent used to re-read the database on every wake of the notifier (any commit
that touched a host, and every second without a PostgreSQL listener), and a change seen by
every host (a cloud-wide ban) made each of them compute its host state on its own, one after
another in the thread pool (docs/benchmarks.md, "End to end": 1,000 agents watching, before
and after).

Now one refresher task per event loop does the reading: at each wake it reads the revisions of
the hosts being waited for in one query, computes the states of the hosts whose revision rose
in batches (``host_states``: the same six queries for a batch of hosts), and hands each waiter
its state. The refresher captures the notifier's event *before* it reads, so a commit landing
during a read makes it read again at once; a waiter that registers with a revision older than
a fresh registration kicks it unless the host was read under a second ago. It ends when nobody waits (the next waiter starts another), so it
never outlives its event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from connguard.db.models import HostRevision
from connguard.db.services.hosts import host_states
from connguard.server.notify import Notifier

log = logging.getLogger("connguard.server")

BATCH = 200  # hosts per host_states call: bounds the IN lists and each thread hop
# Channel reads get their own few threads: a thousand agents re-polling at once after a
# shared ban must not queue the API's other requests (a report, a write) behind them.
READ_THREADS = 4
CURRENT_TIMEOUT = 60.0  # seconds a request for the current state waits for the refresher
FRESH = 1.0  # seconds a revision read stays good enough to start waiting on without a new read


class _Loop:
    def __init__(self) -> None:
        self.waiters: dict[str, list[tuple[int, asyncio.Future]]] = {}
        self.task: asyncio.Task | None = None
        self.kick = asyncio.Event()


class HostWatch:
    def __init__(self, sessions: sessionmaker[Session], notifier: Notifier,
                 closing: Callable[[], bool] = lambda: False) -> None:
        self.sessions, self.notifier, self.closing = sessions, notifier, closing
        self.known: dict[str, int] = {}  # host -> the latest revision read from the database
        self.read_at: dict[str, float] = {}  # host -> when (monotonic) that read happened
        self._loops: dict[asyncio.AbstractEventLoop, _Loop] = {}
        self._limiters: dict[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = {}
        self.reads = 0  # revision reads done (tests: idle cost does not grow with the waiters)

    def limiter(self) -> anyio.CapacityLimiter:
        loop = asyncio.get_running_loop()
        lim = self._limiters.get(loop)
        if lim is None:
            for old in [k for k in self._limiters if k.is_closed()]:
                del self._limiters[old]
            lim = self._limiters[loop] = anyio.CapacityLimiter(READ_THREADS)
        return lim

    async def wait(self, host: str, since: int, timeout: float) -> dict[str, Any] | None:
        """The state of ``host`` once its revision is above ``since``, else after ``timeout``
        seconds its current state; None when the server is closing or the watch cannot read
        (the caller then reads the database itself)."""
        known = self.known.get(host)
        # Read now unless a read less than FRESH seconds ago showed ``host`` unchanged since
        # ``since`` (any commit after that read wakes the refresher anyway).
        stale = known is None or known > since or time.monotonic() - self.read_at.get(host, 0.0) > FRESH
        state = await self._await(host, since, timeout, kick=stale)
        return state if state is not None or self.closing() else await self.current(host)

    async def current(self, host: str) -> dict[str, Any] | None:
        """The current state of ``host``, computed with those of the other hosts asking at the
        same moment (agents connecting together after a restart, long-polls timing out)."""
        return await self._await(host, -1, CURRENT_TIMEOUT, kick=True)

    async def _await(self, host: str, since: int, timeout: float, *, kick: bool) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        st = self._loops.get(loop)
        if st is None:
            for old in [k for k in self._loops if k.is_closed()]:
                del self._loops[old]
            st = self._loops[loop] = _Loop()
        fut: asyncio.Future = loop.create_future()
        entry = (since, fut)
        st.waiters.setdefault(host, []).append(entry)
        if kick:
            st.kick.set()
        if st.task is None or st.task.done():
            st.task = loop.create_task(self._refresh(st))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            waiting = st.waiters.get(host)
            if waiting is not None and entry in waiting:
                waiting.remove(entry)
                if not waiting:
                    del st.waiters[host]

    async def _refresh(self, st: _Loop) -> None:
        while st.waiters:
            wake = self.notifier.event()  # before the read: a commit during it means read again
            if self.closing():
                self._resolve_all(st, None)
                return
            try:
                await self._once(st)
            except Exception:  # noqa: BLE001 - keep serving; the waiters are still there
                log.exception("agent channel watch: reading the database failed; retrying in 1 s")
                await asyncio.sleep(1)
                continue
            kick = asyncio.ensure_future(st.kick.wait())
            woke = asyncio.ensure_future(wake.wait())
            await asyncio.wait({kick, woke}, timeout=self.notifier.reread_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
            kick.cancel()
            woke.cancel()
            st.kick.clear()

    async def _once(self, st: _Loop) -> None:
        # answered waiters leave the table when their request resumes: not before this read
        hosts = sorted(h for h, entries in st.waiters.items() if any(not f.done() for _, f in entries))
        if not hosts:
            return
        started = time.monotonic()
        waiting = [h for h in hosts if any(since >= 0 and not f.done() for since, f in st.waiters.get(h, ()))]
        revisions: dict[str, int] = {}
        if waiting:  # else only requests for the current state: no revision to compare
            revisions = await anyio.to_thread.run_sync(self._revisions, waiting, limiter=self.limiter())
            self.reads += 1
            for h in waiting:
                rev = revisions.get(h, 0)
                if rev >= self.known.get(h, -1):
                    self.known[h] = rev
                    self.read_at[h] = started
        changed = [h for h in hosts
                   if any(since < revisions.get(h, 0) and not f.done() for since, f in st.waiters.get(h, ()))]
        # Every state first, then every answer: answered agents poll again at once, and their
        # requests (authentication in the thread pool) would otherwise slow the later batches
        # down by contending for the interpreter.
        states: dict[str, dict[str, Any]] = {}
        for i in range(0, len(changed), BATCH):
            states.update(await anyio.to_thread.run_sync(self._states, changed[i:i + BATCH], limiter=self.limiter()))
        for h, state in states.items():
            for since, fut in list(st.waiters.get(h, ())):
                if since < state["revision"] and not fut.done():
                    fut.set_result(state)

    def _resolve_all(self, st: _Loop, value) -> None:
        for entries in st.waiters.values():
            for _, fut in entries:
                if not fut.done():
                    fut.set_result(value)

    def _revisions(self, hosts: list[str]) -> dict[str, int]:
        with self.sessions() as session:
            try:
                out: dict[str, int] = {}
                for i in range(0, len(hosts), 900):  # SQLite's bound on parameters, with room
                    q = select(HostRevision.host, HostRevision.revision).where(HostRevision.host.in_(hosts[i:i + 900]))
                    out.update(dict(session.execute(q).all()))
                return out
            finally:
                session.rollback()

    def _states(self, hosts: list[str]) -> dict[str, dict[str, Any]]:
        with self.sessions() as session:
            try:
                return host_states(session, hosts)
            finally:
                session.rollback()
