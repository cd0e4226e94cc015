"""Traffic for bench/dataplane_bench.py, run inside lab namespaces (``ip netns exec NS python
dataplane_bench.py _serve|_connect|_keep|_hold``). Imports nothing from connguard, so it starts
fast."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import struct
import sys
import time

CONNECT_TIMEOUT = 0.25         # a lost SYN stalls one connector process this long (not 1 s)


def run_server(port: int, workers: int) -> None:
    """Accept and close, in ``workers`` processes sharing one listening socket."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    kids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            while True:
                try:
                    c, _ = s.accept()
                    c.close()
                except OSError:
                    pass
        kids.append(pid)
    print("ready", flush=True)
    try:
        sys.stdin.read()   # until the parent closes our stdin
    finally:
        for k in kids:
            os.kill(k, signal.SIGKILL)
        for _ in kids:
            os.wait()


def run_connector(target: str, port: int, procs: int, duration: float, warmup: float) -> None:
    """Closed loop: each process connects and resets as fast as it can; prints one JSON line
    with connections completed (and failures by errno) within the measured window."""
    linger = struct.pack("ii", 1, 0)
    t_start = time.monotonic() + 0.3
    pipes = []
    for _ in range(procs):
        r, w = os.pipe()
        if os.fork() == 0:
            os.close(r)
            ok, errs, lost, every = 0, {}, 0.0, 0
            begin, end = t_start + warmup, t_start + warmup + duration
            while time.monotonic() < t_start:
                time.sleep(0.001)
            counting = False
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                if not counting and now >= begin:
                    counting, ok, errs, lost = True, 0, {}, 0.0
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                s.settimeout(CONNECT_TIMEOUT)
                try:
                    s.connect((target, port))
                    ok += 1
                    every += 1
                except OSError as exc:
                    lost += time.monotonic() - now
                    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
                    errs[name] = errs.get(name, 0) + 1
                s.close()
            os.write(w, json.dumps([ok, errs, lost, every]).encode())
            os._exit(0)
        os.close(w)
        pipes.append(r)
    parts = []
    for r in pipes:
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        parts.append(json.loads(data))
    for _ in pipes:
        os.wait()
    errs: dict[str, int] = {}
    for _, e, _, _ in parts:
        for k, v in e.items():
            errs[k] = errs.get(k, 0) + v
    ok = sum(p[0] for p in parts)
    print(json.dumps({"ok": ok, "ok_with_warmup": sum(p[3] for p in parts), "errors": errs, "lost": sum(p[2] for p in parts), "duration": duration,
                      "rate": ok / duration}))


def _more_files(n: int) -> None:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n + 64))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def run_keeper(port: int, n: int) -> None:
    """``--hold``'s server: accept every connection and keep it open until the client resets it
    (then close our end), until stdin closes."""
    import selectors

    _more_files(2 * n)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    sel.register(sys.stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is s:
                c, _ = s.accept()
                sel.register(c, selectors.EVENT_READ)
            elif key.fileobj is sys.stdin:
                if not sys.stdin.readline():
                    return
            else:
                try:
                    gone = not key.fileobj.recv(4096)
                except OSError:
                    gone = True
                if gone:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()


def run_holder(target: str, port: int, n: int) -> None:
    """``--hold``'s client: open ``n`` connections, report how many, keep them until stdin
    closes, then reset them (SO_LINGER 0)."""
    _more_files(n)
    linger = struct.pack("ii", 1, 0)
    held = []
    for _ in range(n):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        c.settimeout(2)
        try:
            c.connect((target, port))
            held.append(c)
        except OSError:
            c.close()
    print(json.dumps({"held": len(held)}), flush=True)
    sys.stdin.read()
    for c in held:
        c.close()
