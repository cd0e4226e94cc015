"""Real TCP/UDP traffic tools, run inside a namespace::

    ip netns exec NS python -m connguard.lab.traffic serve --tcp 80 --tcp 8080 [--udp 53]
    ip netns exec NS python -m connguard.lab.traffic flood --target A --port P --rate R --duration D
    ip netns exec NS python -m connguard.lab.traffic hold --target A --port P -n N [--hold S]
    ip netns exec NS python -m connguard.lab.traffic bruteforce --target A --port P --attempts N
    ip netns exec NS python -m connguard.lab.traffic wait-port --port P [--deadline S]

Results are one JSON object per line on stdout. ``serve`` prints ``ready`` once it listens and
echoes whatever it receives (TCP and UDP); it keeps connections open until the peer closes.
``hold`` prints its result line, then answers commands on stdin, one JSON line each:
``open`` (one more connection: ``{"outcome": ...}``) and ``alive`` (send a line on every held
connection, expect the echo: ``{"alive": n, "dead": m}``); it closes everything on stdin EOF.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from typing import Any

from connguard.lab.flood import classify, raise_nofile, run_flood


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------ serve
async def serve(tcp: list[int], udp: list[int]) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    stats = {"accepted": 0, "open": 0, "max_open": 0, "udp_datagrams": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["accepted"] += 1
        stats["open"] += 1
        stats["max_open"] = max(stats["max_open"], stats["open"])
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            stats["open"] -= 1
            writer.close()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            stats["udp_datagrams"] += 1
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    servers = []
    for port in tcp:
        for host, fam in (("0.0.0.0", socket.AF_INET), ("::", socket.AF_INET6)):
            sock = socket.socket(fam, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            servers.append(await asyncio.start_server(handle, sock=sock, backlog=4096))
    transports = []
    for port in udp:
        for host, fam in (("0.0.0.0", socket.AF_INET), ("::", socket.AF_INET6)):
            sock = socket.socket(fam, socket.SOCK_DGRAM)
            if fam == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            tr, _ = await loop.create_datagram_endpoint(Echo, sock=sock)
            transports.append(tr)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await stop.wait()
    for srv in servers:
        srv.close()
    for tr in transports:
        tr.close()
    return stats


# ------------------------------------------------------------------------------ hold
async def _connect(target: str, port: int, timeout: float, source: str | None = None):
    try:
        async with asyncio.timeout(timeout):
            local = (source, 0) if source else None
            reader, writer = await asyncio.open_connection(target, port, local_addr=local)
        return "connected", (reader, writer)
    except OSError as exc:
        return classify(exc), None


async def _alive(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], timeout: float) -> bool:
    reader, writer = conn
    try:
        async with asyncio.timeout(timeout):
            writer.write(b"ping\n")
            await writer.drain()
            line = await reader.readline()
        return line == b"ping\n"
    except (OSError, asyncio.IncompleteReadError):
        return False


async def hold(target: str, port: int, n: int, timeout: float, hold_for: float | None,
               source: str | None) -> None:
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(*(_connect(target, port, timeout, source) for _ in range(n)))
    conns = [c for _, c in results if c is not None]
    counts = {o: sum(1 for r, _ in results if r == o)
              for o in ("connected", "refused", "timeout", "error")}
    emit({"requested": n, **counts})
    if hold_for is not None:
        await asyncio.sleep(hold_for)
    else:
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        while line := await stdin.readline():
            cmd = line.decode().strip()
            if cmd == "open":
                outcome, conn = await _connect(target, port, timeout, source)
                if conn is not None:
                    conns.append(conn)
                emit({"outcome": outcome})
            elif cmd.startswith("alive"):
                parts = cmd.split()
                t = float(parts[1]) if len(parts) > 1 else 1.0
                ok = await asyncio.gather(*(_alive(c, t) for c in conns))
                emit({"alive": sum(ok), "dead": len(ok) - sum(ok)})
            elif cmd:
                emit({"error": f"unknown command {cmd!r}"})
    for _, writer in conns:
        writer.close()


# ------------------------------------------------------------------------------ bruteforce
async def _one_login(target: str, port: int, timeout: float, source: str | None) -> tuple[str, str]:
    outcome, conn = await _connect(target, port, timeout, source)
    if conn is None:
        return outcome, ""
    reader, writer = conn
    banner = ""
    try:
        async with asyncio.timeout(timeout):
            banner = (await reader.readline()).decode(errors="replace").strip()
            if banner.startswith("SSH-"):
                writer.write(b"SSH-2.0-connguard_lab_bruteforce\r\n")
                await writer.drain()
            else:
                await reader.readuntil(b"login: ")
                writer.write(b"x\n")
                await reader.readuntil(b"Password: ")
                writer.write(b"y\n")
                await reader.readline()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
    return "connected", banner


async def bruteforce(target: str, port: int, attempts: int, interval: float, timeout: float,
                     source: str | None, progress: bool = False) -> dict[str, Any]:
    t0 = time.monotonic()
    rows = []
    for i in range(attempts):
        if interval and i:
            due = t0 + i * interval
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
        start = time.monotonic() - t0
        outcome, banner = await _one_login(target, port, timeout, source)
        rows.append({"index": i, "start": round(start, 4), "outcome": outcome, "banner": banner})
        if progress:
            sys.stderr.write(json.dumps({"progress": i, **rows[-1]}) + "\n")
            sys.stderr.flush()
    totals = {o: sum(1 for r in rows if r["outcome"] == o)
              for o in ("connected", "refused", "timeout", "error")}
    return {"target": target, "port": port, "attempts": rows, **totals,
            "elapsed": round(time.monotonic() - t0, 3)}


# ------------------------------------------------------------------------------ wait-port
async def wait_port(host: str, port: int, deadline: float) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        outcome, conn = await _connect(host, port, 0.5)
        if conn is not None:
            conn[1].close()
            return True
        await asyncio.sleep(0.02)
    return False


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m connguard.lab.traffic")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--tcp", type=int, action="append", default=[])
    p.add_argument("--udp", type=int, action="append", default=[])
    p = sub.add_parser("flood")
    p.add_argument("--target", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--source", action="append", default=[])
    p.add_argument("--timeout", type=float, default=0.9)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--progress", action="store_true",
                   help='print {"progress": second, ...} lines on stderr')
    p = sub.add_parser("hold")
    p.add_argument("--target", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", type=int, default=1)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--hold", type=float, default=None)
    p.add_argument("--source", default=None)
    p = sub.add_parser("bruteforce")
    p.add_argument("--target", required=True)
    p.add_argument("--port", type=int, default=22)
    p.add_argument("--attempts", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--source", default=None)
    p.add_argument("--progress", action="store_true",
                   help='print {"progress": index, ...} on stderr after each attempt')
    p = sub.add_parser("wait-port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--deadline", type=float, default=10.0)
    a = ap.parse_args(argv)
    raise_nofile()
    if a.cmd == "serve":
        emit(asyncio.run(serve(a.tcp, a.udp)))
    elif a.cmd == "flood":
        emit(run_flood(a.target, a.port, a.rate, a.duration, a.source, a.timeout, a.workers,
                       a.progress))
    elif a.cmd == "hold":
        asyncio.run(hold(a.target, a.port, a.n, a.timeout, a.hold, a.source))
    elif a.cmd == "bruteforce":
        emit(asyncio.run(bruteforce(a.target, a.port, a.attempts, a.interval, a.timeout, a.source,
                                       a.progress)))
    elif a.cmd == "wait-port":
        ok = asyncio.run(wait_port(a.host, a.port, a.deadline))
        emit({"open": ok})
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
