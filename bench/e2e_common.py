"""What the end-to-end benchmarks share: a real server process (``connguard server``, uvicorn)
on SQLite or a temporary PostgreSQL database, an admin token, a small API client, percentiles,
and the process's CPU and memory read from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]
PG_URL = os.environ.get("CONNGUARD_TEST_PG_URL")
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


def pct(vals: list[float], p: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"connguard {' '.join(args)}: {proc.stderr}")
    return proc.stdout


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        import uuid

        yield f"sqlite:///{tmp / f'connguard-{uuid.uuid4().hex[:8]}.db'}"
        return
    if not PG_URL:
        raise SystemExit("postgresql needs CONNGUARD_TEST_PG_URL")
    from connguard.db.scratch import temporary_database

    with temporary_database(PG_URL, prefix="connguard_benche2e") as url:
        yield url


class Server:
    """``connguard server`` as its own process; ``api()`` speaks to it with the admin token."""

    def __init__(self, db: str, tmp: Path, *, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = open(tmp / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen([*CLI, "server", "--db", db, "--bind", f"127.0.0.1:{self.port}",
                                      "--log-level", "warning"], stdout=self.logfile, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while not _healthy(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {Path(self.logfile.name).read_text()[-2000:]}")
            time.sleep(0.1)
        self.admin = cli("token", "create", "--db", db, "--project", "admin", "--role", "admin").strip()
        self.http = httpx.Client(base_url=f"{self.url}/v2.0", headers={"X-Auth-Token": self.admin}, timeout=60)

    def api(self, method: str, path: str, **kw):
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    def token(self, host: str) -> str:
        return self.api("POST", "connguard/tokens", json={"token": {"project_id": "admin", "role": "agent",
                                                                     "host": host}})["token"]["token"]

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle_cpu(pid: int, seconds: float) -> float:
    """Share of one core ``pid`` used over ``seconds``."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


@contextlib.contextmanager
def netns(prefix: str) -> Iterator[str]:
    name = f"{prefix}{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@contextlib.contextmanager
def tmpdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cg-bench-") as d:
        yield Path(d)


def load() -> str:
    return f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
