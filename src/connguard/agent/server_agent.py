"""The server-driven agent: ``connguard agent --server URL --token T --host NAME``.

Three parts, each on its own thread (STYLE.md item 12): the server source (full snapshot on
connect, then long-poll; last good snapshot cached on disk), the reconciler (the same loop as
the standalone agent, knowing no source) and the reporter (heartbeat, per-port status and
counters, bans, interfaces, conntrack; queued on disk while the server is unreachable).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

import httpx

log = logging.getLogger("connguard.agent")


class AgentBusy(RuntimeError):
    """Another agent already runs with this work directory."""


class ServerAgent:
    """Run with ``run()`` (blocks until ``stop()``, or until ``stop_event`` is set).

    ``http``: an ``httpx.Client`` to speak to the server with (tests pass a client bound to
    the in-process app); by default one for ``url``."""

    def __init__(self, url: str, token: str, host: str, *, netns: str | None = None,
                 workdir: Path | str | None = None, interfaces: str = "tap*",
                 stop_event: threading.Event | None = None, interval: float = 1.0,
                 drift_interval: float = 10.0, report_interval: float = 5.0, full_every: float = 300.0,
                 wait: float | None = None, executor=None, http: httpx.Client | None = None):
        from connguard.agent.reconciler import Reconciler
        from connguard.agent.report_queue import ReportQueue
        from connguard.agent.reporter import Reporter
        from connguard.agent.server_source import WAIT, ServerSource

        self.url, self.token, self.host, self.netns = url.rstrip("/"), token, host, netns
        self.workdir = Path(workdir) if workdir is not None else _default_workdir(netns)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.interfaces = interfaces
        self.stop_event = stop_event or threading.Event()
        if executor is None:
            from connguard.nft import make_executor

            executor = make_executor(netns)
        wait = WAIT if wait is None else wait
        self._http = http or httpx.Client(headers={"X-Auth-Token": token}, timeout=httpx.Timeout(10.0, read=wait + 15))
        if http is not None:
            http.headers["X-Auth-Token"] = token
        self.source = ServerSource(self.url, token, host, self.workdir, stop_event=self.stop_event, wait=wait,
                                   http=self._http)
        self.reconciler = Reconciler(self.source, executor, self.workdir, interval=interval,
                                     drift_interval=drift_interval, stop_event=self.stop_event)
        self.reporter = Reporter(self.reconciler, self.source, self._post, netns=netns, pattern=interfaces,
                                 queue=ReportQueue(self.workdir / "reports"), interval=report_interval,
                                 full_every=full_every, stop_event=self.stop_event)

    def _post(self, body: dict) -> dict:
        from connguard.agent.reporter import Delivery

        try:
            r = self._http.post(f"{self.url}/v2.0/connguard/hosts/{self.host}/report", json=body)
        except httpx.HTTPError as exc:
            raise Delivery(f"{type(exc).__name__}: {exc}") from None
        if r.status_code >= 500 or r.status_code in (401, 403, 429):
            # the server or the token is at fault, not the report: keep it for later
            raise Delivery(f"{r.status_code} {r.text[:200]}")
        if r.status_code >= 400:
            raise ValueError(f"{r.status_code} {r.text[:300]}")
        return r.json()

    def run(self) -> None:
        lock = open(self.workdir / "agent.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise AgentBusy(f"another agent already runs for {self.netns or 'this host'} ({self.workdir})") from None
        log.info("agent started for host %s%s, server %s, interfaces %s", self.host,
                 f" (netns {self.netns})" if self.netns else "", self.url, self.interfaces)
        self.source.start()
        reporter = threading.Thread(target=self.reporter.run, name="connguard-reporter", daemon=True)
        reporter.start()
        try:
            self.reconciler.run()
        finally:
            self.stop()
            reporter.join(timeout=10)
            self._http.close()  # ends a long-poll in flight: stopping takes no 25 s
            self.source.stop()
            close = getattr(self.reconciler.executor, "close", None)
            if close is not None:
                close()  # libnftables' worker thread holds its namespace until it ends
            lock.close()
            log.info("agent stopped; the kernel keeps enforcing the last applied state")

    def stop(self) -> None:
        self.stop_event.set()
        self.source.wake.set()
        self.source.retry_now()
        self.reporter.wake.set()


def _default_workdir(netns: str | None) -> Path:
    """The CLI's per-namespace agent directory (cli/common.agent_dir; spelled out here so that
    the agent does not import the CLI layer)."""
    return Path(os.environ.get("CONNGUARD_DATA_DIR", "/var/lib/connguard")) / "agent" / (netns or "_host")


def run_server_agent(url: str, token: str, host: str, netns: str | None = None, *,
                     workdir: Path | str | None = None, interfaces: str = "tap*",
                     stop: threading.Event | None = None, **options) -> None:
    """The in-process entry point (``connguard up`` runs it on a thread beside the server):
    blocks until ``stop`` is set. ``workdir`` holds the ban book, the cached snapshot, the
    report queue and status.json (default: the CLI's per-namespace agent directory). Raises
    ``AgentBusy`` when another agent holds that directory."""
    ServerAgent(url, token, host, netns=netns, workdir=workdir, interfaces=interfaces,
                stop_event=stop, **options).run()
