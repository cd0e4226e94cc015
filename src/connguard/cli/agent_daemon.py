"""The agent as a service: readiness, SIGHUP, SIGTERM and the start deadline, around the
reconciler's loop (which knows none of this; it calls ``before_pass`` and ``after_pass``).

- **Ready** (``READY=1`` to systemd) once the first full state is in the kernel: the applier
  holds an applied ruleset and the last apply succeeded. Not before: ``systemctl start``
  returning means the host is protected.
- **No usable state**: a standalone agent whose state file is rejected before anything was
  applied exits 1 at once with the file's error; any agent that has applied nothing after
  ``start_timeout`` seconds (server unreachable and no cached snapshot, a kernel that refuses
  the ruleset) exits 1 naming the last error. Running on, enforcing nothing while claiming to
  keep "the last good state", is what an operator cannot see.
- **SIGHUP** re-reads the config (settings that can change live are applied, the others are
  logged as needing a restart) and the state (the state file at once, without its settle
  wait; or a full snapshot from the server), then applies it. The applier's batch is one
  kernel transaction and long-lived sets (meters, bans, offenders) are never flushed by it,
  so there is no moment without enforcement and no limiter starts a fresh burst.
- **SIGTERM/SIGINT** stop the loop with a log line; the kernel keeps enforcing what was applied.

Signal handlers only set flags and wake the loop: all the work happens on the loop's thread,
between two passes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any, Callable

from connguard.cli.sd_notify import Notifier

log = logging.getLogger("connguard.agent")


class AgentLifecycle:
    def __init__(self, reconciler: Any, stop: Callable[[], None], *, start_timeout: float,
                 standalone: bool, reload_config: Callable[[], None], notifier: Notifier | None = None,
                 refetch: Callable[[], Any] | None = None, clock: Callable[[], float] = time.monotonic):
        self.rec = reconciler
        self._stop = stop
        self.standalone = standalone
        self.reload_config = reload_config
        self.refetch = refetch
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.deadline = clock() + start_timeout
        self.start_timeout = start_timeout
        self.rc = 0
        self.ready = False
        self._hup = False
        self._status = ""
        self._reloading: tuple | None = None  # (last_apply before the reload,) until the pass after it
        reconciler.before_pass = self.before_pass
        reconciler.after_pass = self.after_pass

    def install_signals(self) -> None:
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)

    def _on_hup(self, signum: int, _frame: Any) -> None:
        self._hup = True
        self.rec.source.wake.set()  # end the loop's wait: the reload runs now, not next interval

    def _on_stop(self, signum: int, _frame: Any) -> None:
        log.info("%s: stopping; the kernel keeps enforcing the last applied state", signal.Signals(signum).name)
        self.notifier.stopping("stopping; the kernel keeps enforcing the last applied state")
        self._stop()

    # ---- around every pass (the loop's thread) -------------------------------------------------
    def before_pass(self) -> None:
        if not self._hup:
            return
        self._hup = False
        log.info("SIGHUP: reloading the configuration and the state")
        self.notifier.reloading("reloading")
        try:
            self.reload_config()
        except Exception as exc:  # noqa: BLE001 - a bad config must not stop a running agent
            log.error("SIGHUP: configuration not reloaded, the running settings stay: %s", exc)
        self._reloading = (self.rec.last_apply,)
        if self.standalone:
            self.rec.source.reload_now()  # this very pass reads the file, without its settle wait
        elif self.refetch is not None:
            # a full snapshot from the server, on its own thread: an unreachable server must not
            # hold up the loop (the kernel keeps enforcing meanwhile, and bans keep being placed)
            threading.Thread(target=self._refetch, name="connguard-refetch", daemon=True).start()

    def after_pass(self) -> None:
        rec = self.rec
        if not self.ready:
            if rec.applier.applied is not None and rec.apply_ok:
                self.ready = True
                self._status = self.describe()
                log.info("ready: %s", self._status)
                self.notifier.ready(self._status)
            elif self.standalone and rec.loaded is None and rec.last_error:
                self._give_up(rec.last_error)
                return
            elif self.clock() > self.deadline:
                self._give_up(f"nothing applied after {self.start_timeout:g} s (start_timeout): "
                              f"{rec.last_error or 'no state from ' + rec.source.name}")
                return
        if self._reloading is not None:
            (before,), self._reloading = self._reloading, None
            if self.standalone:
                outcome = (f"applied ({rec.last_apply['mode']}, {rec.last_apply['commands']} commands)"
                           if rec.last_apply is not before and rec.last_apply else "no change to apply")
                log.info("SIGHUP: reload done: %s", rec.source.error or outcome)
            if self.ready:
                self._status = self.describe()
                self.notifier.ready(self._status)
        if self.ready:
            status = self.describe()
            if status != self._status:
                self._status = status
                self.notifier.status(status)

    def _give_up(self, why: str) -> None:
        log.error("no usable state, exiting: %s", why)
        self.notifier.send(f"STATUS=no usable state: {why[:400]}")
        self.rc = 1
        self._stop()

    def _refetch(self) -> None:
        try:
            changed = self.refetch()
        except Exception as exc:  # noqa: BLE001 - httpx errors, a refused snapshot
            log.warning("SIGHUP: no snapshot from the server (%s); enforcing the last good state", exc)
            return
        log.info("SIGHUP: server snapshot %s", "is new: applying it" if changed else "unchanged")

    def describe(self) -> str:
        rec = self.rec
        loaded = rec.loaded
        ports = len(loaded.state.ports) if loaded is not None else 0
        text = f"enforcing {ports} port(s) from {rec.source.name}"
        if loaded is not None and loaded.desired.revision is not None:
            text += f" revision {loaded.desired.revision}"
        if rec.last_error:
            text += f"; last error: {rec.last_error[:200]}"
        return text
