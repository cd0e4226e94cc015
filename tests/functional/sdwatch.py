"""A stand-in for systemd's notify socket: the tests set NOTIFY_SOCKET to it and read what a
daemon sends (sd_notify(3) datagrams of KEY=VALUE lines)."""

from __future__ import annotations

import os
import socket
import time


class NotifySocket:
    def __init__(self, directory):
        self.path = os.path.join(str(directory), "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, dict[str, str]]] = []  # (monotonic arrival, fields)

    def env(self, **extra) -> dict[str, str]:
        return {**os.environ, "NOTIFY_SOCKET": self.path, **extra}

    def next(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(max(0.01, timeout))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key: str, timeout: float, value: str = "1", on_message=None) -> dict[str, str]:
        """The first message with ``key=value``; ``on_message`` is called on each as it arrives
        (before the next is read)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.next(deadline - time.monotonic())
            if msg is None:
                break
            if on_message is not None:
                on_message(msg)
            if msg.get(key) == value:
                return msg
        raise AssertionError(f"no {key}={value} within {timeout}s; got {[m for _, m in self.messages]}")

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
