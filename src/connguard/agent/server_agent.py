"""The server-driven agent: ``connguard agent --server URL --token T --host NAME``.

Three parts, each on its own thread (STYLE.md item 12): the server source (full snapshot on
connect, then long-poll; last good snapshot cached on disk), the reconciler (the same loop as
the standalone agent, knowing no source) and the reporter (heartbeat, per-port status and
counters, bans, interfaces, conntrack; queued on disk while the server is unreachable).
"""

from __future__ import annotations

import threading
from pathlib import Path


class ServerAgent:
    """Run with ``run()`` (blocks until ``stop()``, or until ``stop_event`` is set)."""

    def __init__(self, url: str, token: str, host: str, *, netns: str | None = None,
                 workdir: Path | str | None = None, interfaces: str = "tap*",
                 stop_event: threading.Event | None = None, interval: float = 1.0,
                 drift_interval: float = 10.0, report_interval: float = 5.0):
        self.url, self.token, self.host, self.netns = url.rstrip("/"), token, host, netns
        self.workdir = Path(workdir) if workdir is not None else _default_workdir(netns)
        self.interfaces = interfaces
        self.stop_event = stop_event or threading.Event()
        self.interval, self.drift_interval, self.report_interval = interval, drift_interval, report_interval

    def run(self) -> None:
        raise NotImplementedError("being built")

    def stop(self) -> None:
        self.stop_event.set()


def _default_workdir(netns: str | None) -> Path:
    from connguard.cli.common import agent_dir

    return agent_dir(netns)


def run_server_agent(url: str, token: str, host: str, netns: str | None = None, *,
                     workdir: Path | str | None = None, interfaces: str = "tap*",
                     stop: threading.Event | None = None, **options) -> None:
    """The in-process entry point (``connguard up`` runs it on a thread beside the server):
    blocks until ``stop`` is set. ``workdir`` holds the ban book, the cached snapshot, the
    report queue and status.json (default: the CLI's per-namespace agent directory)."""
    ServerAgent(url, token, host, netns=netns, workdir=workdir, interfaces=interfaces,
                stop_event=stop, **options).run()
