"""New-connection flood engine (runs inside a namespace via ``connguard.lab.traffic flood``).

Attempt k is scheduled at ``start + k / rate`` from source ``sources[k % len(sources)]``; it
opens a non-blocking TCP connection with a connect timeout (default 0.9 s, below the kernel's
1 s SYN retransmit, so a dropped SYN is counted once, as "timeout") and closes it at once with
an RST (SO_LINGER 0: no TIME_WAIT, so ephemeral ports are not exhausted at high rates).
Outcomes are counted per second in which the attempt *started*. Above ~800/s the attempts are
spread over several forked worker processes (attempt k goes to worker k % workers) that share
the same start instant, and their series are summed.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import socket
import struct
import sys
import time
from typing import Any

IP_BIND_ADDRESS_NO_PORT = 24
PER_WORKER_RATE = 800
OUTCOMES = ("admitted", "refused", "timeout", "error")
_REFUSED_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH,
                   errno.EACCES}


def raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


def classify(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno in _REFUSED_ERRNOS:
        return "refused"
    return "error"


def make_socket(family: int, source: str | None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if source:
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
    return sock


async def _run_worker(target: str, port: int, rate: float, duration: float, sources: list[str],
                      timeout: float, start: float, worker: int, workers: int,
                      progress: bool = False) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    total = int(round(rate * duration))
    nsec = max(1, math.ceil(duration))
    series = [{o: 0 for o in OUTCOMES} for _ in range(nsec)]
    errors: dict[str, int] = {}
    late = 0.0
    pending: set[asyncio.Task[None]] = set()

    def count_error(exc: BaseException) -> None:
        name = errno.errorcode.get(getattr(exc, "errno", 0) or 0, type(exc).__name__)
        errors[name] = errors.get(name, 0) + 1

    async def attempt(k: int) -> None:
        sec = min(nsec - 1, max(0, int(k / rate)))
        src = sources[k % len(sources)] if sources else None
        try:
            sock = make_socket(family, src)
        except OSError as exc:
            series[sec]["error"] += 1
            count_error(exc)
            return
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (target, port))
            outcome = "admitted"
        except OSError as exc:  # TimeoutError is an OSError
            outcome = classify(exc)
            if outcome == "error":
                count_error(exc)
        finally:
            sock.close()
        series[sec][outcome] += 1

    async def report() -> None:
        t = 0
        while True:
            t += 1
            await asyncio.sleep(max(0.0, start + t - time.monotonic()))
            totals = {o: sum(row[o] for row in series) for o in OUTCOMES}
            sys.stderr.write(json.dumps({"progress": t, "w": worker, **totals}) + "\n")
            sys.stderr.flush()

    reporter = loop.create_task(report()) if progress else None
    k = worker
    while k < total:
        due_at = start + k / rate
        now = time.monotonic()
        if due_at > now:
            await asyncio.sleep(due_at - now)
        # launch every attempt that is due now (several at once when the loop runs behind)
        now = time.monotonic()
        late = max(late, now - due_at)
        while k < total and start + k / rate <= now:
            task = loop.create_task(attempt(k))
            pending.add(task)
            task.add_done_callback(pending.discard)
            k += workers
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    if reporter is not None:
        reporter.cancel()
    return {"series": series, "errors": errors, "max_lag": late}


def _worker_entry(args: tuple[Any, ...]) -> dict[str, Any]:
    raise_nofile()
    return asyncio.run(_run_worker(*args))


def run_flood(target: str, port: int, rate: float, duration: float, sources: list[str],
              timeout: float = 0.9, workers: int = 0, progress: bool = False) -> dict[str, Any]:
    """Run a flood and return the JSON-able result (see module doc)."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    if workers <= 0:
        workers = max(1, min(os.cpu_count() or 1, math.ceil(rate / PER_WORKER_RATE)))
    raise_nofile()
    start = time.monotonic() + 0.05 * workers
    args = [(target, port, rate, duration, sources, timeout, start, w, workers, progress)
            for w in range(workers)]
    if workers == 1:
        parts = [_worker_entry(args[0])]
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_worker_entry, args)
    elapsed = time.monotonic() - start
    nsec = len(parts[0]["series"])
    series = []
    for t in range(nsec):
        row: dict[str, int] = {"t": t}
        for o in OUTCOMES:
            row[o] = sum(p["series"][t][o] for p in parts)
        series.append(row)
    errors: dict[str, int] = {}
    for p in parts:
        for name, n in p["errors"].items():
            errors[name] = errors.get(name, 0) + n
    totals = {o: sum(r[o] for r in series) for o in OUTCOMES}
    attempted = sum(totals.values())
    return {
        "target": target, "port": port, "rate": rate, "duration": duration,
        "sources": sources, "timeout": timeout, "workers": workers,
        "attempted": attempted, **totals,
        "offered_rate": attempted / duration,
        "elapsed": round(elapsed, 3),
        "max_lag": round(max(p["max_lag"] for p in parts), 4),
        "errors": errors,
        "series": series,
    }
