"""The server source: the host's desired state from the agent channel.

A full snapshot on connect (``GET connguard/hosts/{host}/state``), then long-polls
(``?revision=N&wait=S``) on its own thread, each answer turned into a ``Desired`` through the
same model as a state file (snapshot.py). Fail-static: the last good snapshot is cached on disk
atomically, so an agent restarted while the server is down enforces it at once; an answer that
is not JSON, is truncated, fails validation or carries a lower revision than the one held is
refused (logged, kept in ``error`` for the reporter) and the last good state stays. Unreachable
server: reconnect with exponential backoff and jitter, logged once per state change.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import httpx

from connguard.agent.gcpause import gc_paused
from connguard.agent.snapshot import from_host_state
from connguard.agent.source import Desired
from connguard.exceptions import ValidationFailed

log = logging.getLogger("connguard.agent.server")

WAIT = 25.0          # seconds a long-poll may wait on the server (it allows up to 300)
BACKOFF_START = 0.5  # seconds; doubled per failure, with jitter, up to BACKOFF_CAP
BACKOFF_CAP = 30.0


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class ServerSource:
    def __init__(self, url: str, token: str, host: str, workdir: Path, *,
                 transport: httpx.BaseTransport | None = None, wait: float = WAIT,
                 stop_event: threading.Event | None = None, rng: random.Random | None = None,
                 http: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self.host = host
        self.name = f"{self.url} (host {host})"
        self.cache = workdir / "snapshot.json"
        self.wait = wait
        self.error: str | None = None
        self.wake = threading.Event()
        self.connected = False
        self.connects = 0           # successful (re)connections: the reporter sends a full report after each
        self.errors_total = 0       # refused snapshots
        self.last_rejection = ""    # why the latest one was refused (kept: the reporter sends it once at least)
        self.revision: int | None = None
        self._stop = stop_event or threading.Event()
        self._retry = threading.Event()  # set by stop() and retry_now(): ends a backoff wait
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._pending: Desired | None = None
        self._http = http or httpx.Client(headers={"X-Auth-Token": token}, transport=transport,
                                          timeout=httpx.Timeout(10.0, read=wait + 15.0))
        self._own_http = http is None
        self._thread: threading.Thread | None = None
        self._load_cache()

    # ---- the reconciler's side ------------------------------------------------------------
    def poll(self) -> Desired | None:
        with self._lock:
            desired, self._pending = self._pending, None
        return desired

    # ---- cache ----------------------------------------------------------------------------
    def _load_cache(self) -> None:
        try:
            raw = self.cache.read_bytes()
        except FileNotFoundError:
            return
        try:
            desired = from_host_state(json.loads(raw), host=self.host)
        except (ValueError, ValidationFailed) as exc:
            log.error("cached snapshot %s unusable (%s); waiting for the server", self.cache, exc)
            return
        log.info("enforcing the cached snapshot (revision %d) until the server answers", desired.revision)
        self._offer(desired)

    def _offer(self, desired: Desired) -> None:
        with self._lock:
            self._pending = desired
            self.revision = desired.revision
        self.wake.set()

    # ---- the channel ----------------------------------------------------------------------
    def fetch_once(self, revision: int | None, wait: float) -> bool:
        """One request; True when it brought a new good snapshot. Raises httpx.HTTPError (and
        _Unusable) for the caller's backoff."""
        params = {} if revision is None else {"revision": revision, "wait": wait}
        r = self._http.get(f"{self.url}/v2.0/connguard/hosts/{self.host}/state", params=params)
        if r.status_code >= 400:
            raise _Unusable(f"server answered {r.status_code}: {r.text[:300]}")
        with gc_paused():  # a large snapshot: agent/gcpause.py
            try:
                body = json.loads(r.content)
            except ValueError as exc:
                raise _Unusable(f"server snapshot rejected, still enforcing the last good state: not JSON ({exc})") from None
            try:
                desired = from_host_state(body, host=self.host)
            except ValidationFailed as exc:
                raise _Unusable(f"server snapshot rejected, still enforcing the last good state: {exc}") from None
        held = self.revision
        if held is not None and desired.revision < held:
            raise _Unusable(f"server snapshot rejected, still enforcing the last good state: revision "
                            f"{desired.revision} is below the {held} held")
        self.error = None
        if held is not None and desired.revision == held:
            return False  # nothing new (a long-poll that timed out, a reconnect to the same state)
        write_atomic(self.cache, json.dumps(body, separators=(",", ":")).encode())
        self._offer(desired)
        return True

    def run(self) -> None:
        failures = 0
        first = True  # a full snapshot on every (re)connect, then long-polls
        while not self._stop.is_set():
            try:
                self.fetch_once(None if first else self.revision, self.wait)
            except (httpx.HTTPError, _Unusable, RuntimeError) as exc:
                if self._stop.is_set():
                    return  # the client was closed under a long-poll to stop
                if isinstance(exc, RuntimeError):
                    raise
                unusable = isinstance(exc, _Unusable)
                if unusable:
                    self.errors_total += 1
                    self.last_rejection = str(exc)
                    if str(exc) != self.error:
                        log.error("%s", exc)
                    self.error = str(exc)
                elif self.connected or failures == 0:
                    log.warning("server %s unreachable (%s); enforcing the last good state, retrying with backoff",
                                self.url, type(exc).__name__)
                self.connected = False
                first = True
                delay = min(BACKOFF_CAP, BACKOFF_START * 2 ** min(failures, 16))
                failures += 1
                self._sleep(delay * self._rng.uniform(0.5, 1.0))
                continue
            if first:
                first = False
                self.connected = True
                self.connects += 1
                log.info("connected to %s%s (revision %s)", self.url,
                         f" after {failures} failed attempt(s)" if failures else "", self.revision)
                failures = 0

    def _sleep(self, seconds: float) -> None:
        self._retry.wait(seconds)
        self._retry.clear()

    def retry_now(self) -> None:
        """The server answers again (the reporter just delivered): end the backoff wait."""
        self._retry.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="connguard-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._retry.set()
        if self._own_http:
            self._http.close()
        if self._thread is not None:
            # a long-poll in flight is not waited for: the thread only writes the cache (atomically)
            # and hands snapshots to a reconciler that has stopped; it ends with its request
            self._thread.join(timeout=0.2)


class _Unusable(Exception):
    """The server answered, but nothing that can be enforced."""
