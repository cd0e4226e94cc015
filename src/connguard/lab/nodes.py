"""Python API of lab nodes (VMs and clients): servers, floods, held connections, brute force.

Each method runs ``python -m connguard.lab.traffic ...`` inside the node's namespace.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from connguard.exceptions import LabError
from connguard.lab import netns as nsx
from connguard.lab.procs import Proc
from connguard.lab.results import (BruteForceAttempt, BruteForceResult, FloodResult,
                                   SynFloodResult)

TRAFFIC = "connguard.lab.traffic"


def resolve(target: Any, ipv6: bool = False) -> str:
    """An address: ``target`` itself, or a node's primary IPv4/IPv6 address."""
    if isinstance(target, str):
        return target
    addr = getattr(target, "ipv6" if ipv6 else "ipv4", None)
    if not addr:
        raise LabError(f"cannot find an address for {target!r}")
    return addr


def _parse_json(line: str, what: str) -> dict[str, Any]:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise LabError(f"{what}: unexpected output {line[:200]!r}") from exc


class Server:
    """A running ``serve`` process (echo server). Context manager; ``stop()`` ends it."""

    def __init__(self, netns: str, tcp: Sequence[int], udp: Sequence[int], timeout: float):
        args = ["serve"] + [f"--tcp={p}" for p in tcp] + [f"--udp={p}" for p in udp]
        self.netns, self.tcp, self.udp = netns, list(tcp), list(udp)
        self.stats: dict[str, int] = {}
        self._proc = Proc(nsx.py_argv(netns, TRAFFIC, args), what=f"serve in {netns}")
        try:
            self._proc.wait_for("ready", timeout)
        except BaseException:
            self._proc.stop()
            raise

    def stop(self) -> dict[str, int]:
        if self._proc.proc.poll() is None:
            self._proc.stop()
            for line in self._proc.remaining_lines():
                if line.startswith("{"):
                    self.stats = _parse_json(line, "serve")
        return self.stats

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Hold:
    """N concurrent connections kept open by a ``hold`` process (context manager).

    ``connected``, ``refused``, ``timeout`` count the first N; ``open_one()`` tries one more
    (kept open when it connects); ``alive()`` counts held connections that still echo.
    """

    def __init__(self, netns: str, target: str, port: int, n: int, timeout: float,
                 source: str | None):
        args = ["hold", f"--target={target}", f"--port={port}", f"-n={n}",
                f"--timeout={timeout}"] + ([f"--source={source}"] if source else [])
        self.timeout = timeout
        self._proc = Proc(nsx.py_argv(netns, TRAFFIC, args), stdin=True,
                          what=f"hold {target}:{port} in {netns}")
        try:
            first = _parse_json(self._proc.readline(timeout + 15), "hold")
        except BaseException:
            self._proc.stop()
            raise
        self.requested = n
        self.connected: int = first["connected"]
        self.refused: int = first["refused"]
        self.timeout_count: int = first["timeout"]
        self.errors: int = first["error"]

    def open_one(self) -> str:
        """One more connection: "connected" | "refused" | "timeout" | "error"."""
        self._proc.send("open")
        outcome = _parse_json(self._proc.readline(self.timeout + 10), "hold")["outcome"]
        if outcome == "connected":
            self.connected += 1
        return outcome

    def alive(self, timeout: float = 1.0) -> int:
        """How many held connections still pass data (send a line, the server echoes it)."""
        self._proc.send(f"alive {timeout}")
        return _parse_json(self._proc.readline(timeout + 10), "hold")["alive"]

    def close(self) -> None:
        self._proc.close_stdin()
        try:
            self._proc.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._proc.stop()

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EstablishedConnection(Hold):
    """One established connection; ``passes_data()`` says whether it still carries data."""

    @property
    def is_connected(self) -> bool:
        return self.connected > 0

    def passes_data(self, timeout: float = 1.0) -> bool:
        return self.connected > 0 and self.alive(timeout) > 0


class NodeMixin:
    """Traffic methods shared by :class:`VM` and :class:`Client` (need ``netns``, addresses)."""

    netns: str
    ipv4: str
    ipv6: str

    def exec(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(nsx.ns_argv(self.netns, argv), **kw)

    def address(self, ipv6: bool = False) -> str:
        return self.ipv6 if ipv6 else self.ipv4

    def _sources(self, sources: Any, ipv6: bool) -> list[str]:
        if sources is None:
            return [self.address(ipv6)]
        if isinstance(sources, int):
            extra = list(getattr(self, "extra_ipv6" if ipv6 else "extra_ipv4", []))
            if sources < 1 or sources > len(extra):
                raise LabError(f"{self.netns} has {len(extra)} extra source addresses, "
                               f"asked for {sources}")
            return extra[:sources]
        return [str(s) for s in sources]

    def serve(self, tcp: Sequence[int] = (80,), udp: Sequence[int] = (),
              timeout: float = 10.0) -> Server:
        """Start an echo server on ``tcp``/``udp`` ports (0.0.0.0 and ::); waits for "ready"."""
        return Server(self.netns, tcp, udp, timeout)

    def flood(self, target: Any, port: int, rate: float, duration: float,
              sources: Any = None, ipv6: bool = False, timeout: float = 0.9,
              workers: int = 0,
              progress: Callable[[int, dict[str, int]], None] | None = None) -> FloodResult:
        """New TCP connections at ``rate``/s for ``duration`` s; see :class:`FloodResult`.

        ``sources``: None (this node's primary address), an int n (the first n extra
        addresses of this client) or a list of addresses, used round-robin.
        ``progress(second, cumulative_totals)`` is called about once a second.
        """
        addr = resolve(target, ipv6)
        srcs = self._sources(sources, ":" in addr)
        args = ["flood", f"--target={addr}", f"--port={port}", f"--rate={rate}",
                f"--duration={duration}", f"--timeout={timeout}", f"--workers={workers}"]
        args += [f"--source={s}" for s in srcs]
        latest: dict[int, dict[str, Any]] = {}
        shown = [0]

        def on_progress(line: str) -> None:
            rec = json.loads(line)
            latest[rec["w"]] = rec
            t = min(r["progress"] for r in latest.values())
            if t > shown[0] and progress is not None:
                shown[0] = t
                sums = {o: sum(r.get(o, 0) for r in latest.values())
                        for o in ("admitted", "refused", "timeout", "error")}
                progress(t, sums)

        if progress is not None:
            args.append("--progress")
        proc = Proc(nsx.py_argv(self.netns, TRAFFIC, args), on_stderr=on_progress,
                    what=f"flood from {self.netns}")
        try:
            line = proc.readline(duration + timeout + 30)
        finally:
            proc.stop()
        return FloodResult.from_json(_parse_json(line, "flood"))

    def hold(self, target: Any, port: int, n: int, ipv6: bool = False, timeout: float = 2.0,
             source: str | None = None) -> Hold:
        """Open ``n`` concurrent TCP connections and keep them open (context manager)."""
        return Hold(self.netns, resolve(target, ipv6), port, n, timeout, source)

    def connect_and_hold(self, target: Any, port: int, ipv6: bool = False,
                         timeout: float = 2.0, source: str | None = None) -> EstablishedConnection:
        """One connection to an echo server; ``.passes_data()`` probes it (ban tests)."""
        return EstablishedConnection(self.netns, resolve(target, ipv6), port, 1, timeout, source)

    def bruteforce(self, target: Any, port: int = 22, attempts: int = 10, interval: float = 0.0,
                   source: str | None = None, ipv6: bool = False, timeout: float = 2.0,
                   progress: Callable[[BruteForceAttempt], None] | None = None
                   ) -> BruteForceResult:
        """Sequential bogus logins against a login service (sshd or the fallback server).

        ``progress(attempt)`` is called after each attempt when given.
        """
        addr = resolve(target, ipv6)
        args = ["bruteforce", f"--target={addr}", f"--port={port}", f"--attempts={attempts}",
                f"--interval={interval}", f"--timeout={timeout}"]
        if source:
            args.append(f"--source={source}")

        def on_progress(line: str) -> None:
            rec = json.loads(line)
            rec.pop("progress", None)
            if progress is not None:
                progress(BruteForceAttempt(**rec))

        if progress is not None:
            args.append("--progress")
        budget = attempts * (interval + 2 * timeout + 1) + 30
        proc = Proc(nsx.py_argv(self.netns, TRAFFIC, args), on_stderr=on_progress,
                    what=f"bruteforce from {self.netns}")
        try:
            line = proc.readline(budget)
        finally:
            proc.stop()
        data = _parse_json(line, "bruteforce")
        rows = [BruteForceAttempt(**r) for r in data["attempts"]]
        return BruteForceResult(addr, port, rows, data["elapsed"])

    def syn_flood(self, target: Any, port: int, duration: float, rate_pps: int | None = None,
                  ipv6: bool = False) -> SynFloodResult:
        """Raw SYNs with random sources (hping3) for ``duration`` seconds."""
        from connguard.lab.synflood import syn_flood

        return syn_flood(self.netns, resolve(target, ipv6), port, duration, rate_pps, ipv6)

    def wait_port(self, port: int, host: str = "127.0.0.1", deadline: float = 10.0) -> None:
        """Wait until ``host:port`` accepts inside this namespace (LabError after deadline)."""
        started = time.monotonic()
        proc = subprocess.run(nsx.py_argv(self.netns, TRAFFIC, [
            "wait-port", f"--host={host}", f"--port={port}", f"--deadline={deadline}"]),
            capture_output=True, text=True, env=nsx.child_env(), timeout=deadline + 15)
        if proc.returncode != 0:
            raise LabError(f"{host}:{port} in {self.netns} not accepting after "
                           f"{time.monotonic() - started:.1f}s")
