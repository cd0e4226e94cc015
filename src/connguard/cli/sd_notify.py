"""systemd's readiness protocol (sd_notify(3)): one datagram of ``KEY=VALUE`` lines sent to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).

A dozen lines rather than a dependency: the protocol is a stable, documented interface that
systemd's own man page shows re-implemented standalone; ``systemd-python`` and ``cysystemd``
need libsystemd and a C build on the agent host; ``sdnotify`` (last release 2017) connects once
at import time and drops every error silently. Without ``$NOTIFY_SOCKET`` (not under systemd,
or ``Type=`` other than notify) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("connguard.notify")


class Notifier:
    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self._warned = False

    def send(self, *lines: str) -> bool:
        """Send one datagram; True if it went out. A failure is logged once, never raised: a
        daemon must not stop enforcing because its supervisor is not listening."""
        if not self.address:
            return False
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), addr)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.address, exc.strerror or exc)
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self, status: str) -> bool:
        # systemd >= 253 wants the monotonic time with RELOADING=1; older ones ignore it
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                         f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")
