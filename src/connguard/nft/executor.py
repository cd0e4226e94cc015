"""The one interface to the kernel: run a libnftables JSON batch, or a read-only query.

``NftLib`` (libnft.py) calls libnftables in-process where its Python binding is installed, and
``make_executor`` picks it, falling back to ``NftCli``, which runs the ``nft`` tool (``nft -j -f -``), inside a network namespace when asked
(``ip netns exec NS nft ...``). One batch is one netlink transaction: the kernel applies all of
it or none of it. Tests that need no kernel inject ``FakeExecutor`` instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any, Protocol

from connguard.exceptions import KernelUnavailable


class NftFailure(Exception):
    """nft refused a batch or a query; ``message`` is what it printed."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class Executor(Protocol):
    netns: str | None

    def batch(self, payload: dict, *, check: bool = False) -> None: ...

    def query(self, *args: str, terse: bool = False) -> dict: ...

    def sysctl(self, key: str, value: str) -> None: ...

    def dump(self, msg: int, attrs: bytes = b"", *, limit: int | None = None,
             count=lambda m: 1) -> tuple[list, bool]: ...


class NftCli:
    kind = "cli"

    def __init__(self, netns: str | None = None, nft: str = "nft"):
        self.netns = netns
        self.nft = shutil.which(nft) or shutil.which(nft, path="/usr/sbin:/sbin")
        if self.nft is None:
            raise KernelUnavailable("the nft tool is not installed (Debian: apt-get install nftables)")
        if netns is not None and not os.path.exists(f"/run/netns/{netns}"):
            raise KernelUnavailable(f"network namespace {netns!r} does not exist (ip netns list)")

    def _argv(self, argv: list[str]) -> list[str]:
        if self.netns is None:
            return argv
        return ["ip", "netns", "exec", self.netns, *argv]

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        try:
            proc = subprocess.run(self._argv(argv), input=stdin, capture_output=True, text=True, timeout=120)
        except FileNotFoundError as exc:
            raise KernelUnavailable(str(exc)) from None
        if proc.returncode != 0:
            err = proc.stderr.strip() or proc.stdout.strip()
            if "Operation not permitted" in err:
                raise KernelUnavailable(f"nft: {err} (connguard needs root / CAP_NET_ADMIN)")
            if "Cannot open network namespace" in err:
                raise KernelUnavailable(err)
            raise NftFailure(err)
        return proc.stdout

    def batch(self, payload: dict, *, check: bool = False) -> None:
        argv = [self.nft, "-j"] + (["-c"] if check else []) + ["-f", "-"]
        self._run(argv, json.dumps(payload, separators=(",", ":")))

    def query(self, *args: str, terse: bool = False) -> dict:
        argv = [self.nft, "-j"] + (["-t"] if terse else []) + list(args)
        out = self._run(argv)
        return json.loads(out) if out.strip() else {"nftables": []}

    def dump(self, msg: int, attrs: bytes = b"", *, limit: int | None = None,
             count=lambda m: 1) -> tuple[list, bool]:
        """A netlink dump (``connguard.nft.netlink``): reads one kind of object, never nft's
        whole cache. Errors map like nft's: a missing object is an ``NftFailure``."""
        from connguard.nft import netlink

        try:
            return netlink.dump(self.netns, msg, attrs, limit=limit, count=count)
        except netlink.NetlinkError as exc:
            if exc.errno == 1:
                raise KernelUnavailable("netlink: Operation not permitted (connguard needs root / CAP_NET_ADMIN)") from None
            raise NftFailure(f"netlink: {exc}") from None
        except FileNotFoundError as exc:
            raise KernelUnavailable(f"network namespace {self.netns!r} does not exist ({exc})") from None

    def sysctl(self, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        if self.netns is None:
            with open(path, "w") as fh:
                fh.write(value)
        else:
            self._run(["sysctl", "-q", "-w", f"{key}={value}"])


class FakeExecutor:
    """Records batches; ``fail_when(predicate, message)`` makes a matching batch fail.
    ``dumps`` holds canned netlink dumps: message type -> messages, or for set elements
    (message type, set name) -> messages; a missing entry is an empty dump."""

    def __init__(self) -> None:
        self.netns = None
        self.batches: list[dict] = []
        self.checks: list[dict] = []
        self.listing: dict = {"nftables": []}
        self.sysctls: dict[str, str] = {}
        self.dumps: dict = {}
        self._failures: list[tuple[Any, str]] = []

    def fail_when(self, predicate, message: str) -> None:
        self._failures.append((predicate, message))

    def batch(self, payload: dict, *, check: bool = False) -> None:
        for pred, message in self._failures:
            if pred(payload):
                raise NftFailure(message)
        (self.checks if check else self.batches).append(payload)

    def query(self, *args: str, terse: bool = False) -> dict:
        return self.listing

    def sysctl(self, key: str, value: str) -> None:
        self.sysctls[key] = value

    def load_kernel(self, ruleset) -> None:
        """Make the dumps show ``ruleset`` as applied (``connguard.nft.fakekernel``)."""
        from connguard.nft.fakekernel import dumps_for

        self.dumps = dumps_for(ruleset)

    def dump(self, msg: int, attrs: bytes = b"", *, limit: int | None = None,
             count=lambda m: 1) -> tuple[list, bool]:
        from connguard.nft import netlink

        name = netlink.string(netlink.first(netlink.parse(attrs), 2)) if attrs else None
        found = self.dumps.get((msg, name), self.dumps.get(msg, []))
        if isinstance(found, Exception):
            raise found
        return list(found), True
