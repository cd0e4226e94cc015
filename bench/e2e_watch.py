"""One server, N simulated agents watching: how fast a shared ban reaches all of them, and what
the watching costs the server while nothing happens.

The server is a real ``connguard server`` process. Each simulated agent is a lightweight
asyncio client with its own agent token and host (one port each, all on one policy with a
``brute_force`` rule shared cloud-wide) speaking the host channel as the real agent does
(agent/server_source.py): one full snapshot, then long-polls ``?revision=N&wait=25`` on a
keep-alive HTTP/1.1 connection. Host 0 then reports a detected ban (POST .../report, the path a
real agent's reporter takes); each client notes when a snapshot holding that address arrives.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from e2e_common import Server, cpu_seconds, database, idle_cpu, load, log, pct, rss_mb

WAIT = 25


class Watcher:
    def __init__(self, port: int, host: str, token: str):
        self.port, self.host, self.token = port, host, token
        self.revision: int | None = None
        self.bans: set[str] = set()
        self.seen: dict[str, float] = {}  # ban address -> when this client first held it
        self.waiting = False
        self.answers = 0
        self.errors = 0

    async def _get(self, reader, writer, query: str) -> dict:
        writer.write((f"GET /v2.0/connguard/hosts/{self.host}/state{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-Auth-Token: {self.token}\r\nAccept: application/json\r\n\r\n").encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = await reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"{self.host}: {status} {body[:200]!r}")
        return json.loads(body)["host_state"]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.errors += 1
                await asyncio.sleep(1)
                continue
            try:
                state = await self._get(reader, writer, "")
                self._take(state)
                while not stop.is_set():
                    self.waiting = True
                    state = await self._get(reader, writer, f"?revision={self.revision}&wait={WAIT}")
                    self.waiting = False
                    self._take(state)
            except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError) as exc:
                if not stop.is_set():
                    self.errors += 1
                    log(f"{self.host}: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.5)
            finally:
                self.waiting = False
                writer.close()

    def _take(self, state: dict) -> None:
        now = time.perf_counter()
        self.answers += 1
        self.revision = state["revision"]
        self.bans = {b["ip_address"].removesuffix("/32") for b in state["bans"]}
        for ip in self.bans:
            self.seen.setdefault(ip, now)


def provision(server: Server, n: int) -> tuple[list[tuple[str, str]], dict]:
    """n hosts with one port each on one policy, and an agent token per host."""
    pol = server.api("POST", "qos/policies", json={"policy": {"name": "watch"}})["policy"]
    rule = server.api("POST", f"qos/policies/{pol['id']}/brute_force_rules", json={
        "brute_force_rule": {"profile": "ssh", "share": "cloud"}})["brute_force_rule"]
    hosts = [f"w{i:04d}" for i in range(n)]

    def one(i: int) -> tuple[str, str, str]:
        port = server.api("POST", "ports", json={"port": {
            "name": f"p{i}", "binding:host_id": hosts[i], "interface_name": "tapw0",
            "fixed_ips": [{"ip_address": f"10.{i // 250}.{i % 250}.5"}], "qos_policy_id": pol["id"]}})["port"]
        return hosts[i], server.token(hosts[i]), port["id"]

    with ThreadPoolExecutor(4) as ex:
        rows = list(ex.map(one, range(n)))
    return [(h, t) for h, t, _ in rows], {"port_id": rows[0][2], "rule_id": rule["id"], "token": rows[0][1],
                                           "host": rows[0][0]}


def report_ban(server: Server, first: dict, ip: str) -> float:
    import httpx

    now = datetime.now(timezone.utc)
    body = {"report": {"heartbeat": {"started_at": now.isoformat()}, "bans": [{
        "ip_address": ip, "port_id": first["port_id"], "rule_id": first["rule_id"], "banned_at": now.isoformat(),
        "expires_at": (now + timedelta(seconds=600)).isoformat(), "share": "cloud", "reason": "bench"}]}}
    t0 = time.perf_counter()
    r = httpx.post(f"{server.url}/v2.0/connguard/hosts/{first['host']}/report", json=body,
                   headers={"X-Auth-Token": first["token"]}, timeout=30)
    if r.status_code >= 400:
        raise RuntimeError(f"report: {r.status_code} {r.text[:300]}")
    return t0


async def _measure(server: Server, hosts, first, bans: int, idle: float) -> dict:
    stop = asyncio.Event()
    watchers = [Watcher(server.port, h, t) for h, t in hosts]
    tasks = [asyncio.create_task(w.run(stop)) for w in watchers]
    t_connect = time.perf_counter()
    while sum(w.waiting for w in watchers) < len(watchers):
        if time.perf_counter() - t_connect > 120:
            raise RuntimeError(f"only {sum(w.waiting for w in watchers)} of {len(watchers)} clients are watching")
        await asyncio.sleep(0.05)
    connect = time.perf_counter() - t_connect
    log(f"{len(watchers)} clients watching after {connect:.1f} s; idle for {idle:.0f} s")
    loop = asyncio.get_running_loop()
    rss_before = rss_mb(server.proc.pid)
    cpu = await loop.run_in_executor(None, idle_cpu, server.proc.pid, idle)
    rss = rss_mb(server.proc.pid)
    answers_idle = sum(w.answers for w in watchers)
    delays: list[float] = []
    post: list[float] = []
    fanout_cpu: list[float] = []
    me = os.getpid()
    for k in range(bans):
        ip = f"198.51.100.{10 + k}"
        c0, m0 = cpu_seconds(server.proc.pid), cpu_seconds(me)
        t0 = await loop.run_in_executor(None, report_ban, server, first, ip)
        post.append(time.perf_counter() - t0)
        deadline = time.perf_counter() + 60
        while sum(ip in w.seen for w in watchers) < len(watchers) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        missing = sum(ip not in w.seen for w in watchers)
        if missing:
            raise RuntimeError(f"ban {ip} reached {len(watchers) - missing} of {len(watchers)} clients in 60 s")
        delays.extend(w.seen[ip] - t0 for w in watchers)
        fanout_cpu.append((cpu_seconds(server.proc.pid) - c0, cpu_seconds(me) - m0))
        await asyncio.sleep(1)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"connect": connect, "rss_before": rss_before, "rss": rss, "cpu": cpu, "delays": delays,
            "post": post, "fanout_cpu": fanout_cpu, "errors": sum(w.errors for w in watchers), "answers_idle": answers_idle}


def run_one(db_kind: str, n: int, bans: int, idle: float, tmp: Path) -> dict:
    with database(db_kind, tmp) as db:
        server = Server(db, tmp)
        try:
            base = rss_mb(server.proc.pid)
            t = time.perf_counter()
            hosts, first = provision(server, n)
            log(f"{db_kind}: {n} hosts, ports and tokens in {time.perf_counter() - t:.1f} s")
            out = asyncio.run(_measure(server, hosts, first, bans, idle))
            out["rss_start"] = base
            return out
        finally:
            server.stop()


def main(n: int, dbs: list[str], tmp: Path, *, bans: int = 3, idle: float = 20.0) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * n + 100)), hard))
    results = {db: run_one(db, n, bans, idle, tmp) for db in dbs}
    print(f"\n### 2. {n} simulated agents watching one server; a ban shared cloud-wide, reported by one host "
          f"({bans} bans, {n * bans} arrivals per row)\n")
    print(f"{'database':<11}{'to all p50 ms':>14}{'p99 ms':>9}{'max ms':>9}{'report POST ms':>16}"
          f"{'RSS start MB':>14}{'RSS watching':>14}{'idle CPU':>10}{'errors':>8}")
    for db, r in results.items():
        d = r["delays"]
        print(f"{db:<11}{pct(d, 50) * 1e3:>14.0f}{pct(d, 99) * 1e3:>9.0f}{max(d) * 1e3:>9.0f}"
              f"{pct(r['post'], 50) * 1e3:>16.1f}{r['rss_start']:>14.0f}{r['rss']:>14.0f}"
              f"{r['cpu'] * 100:>9.1f}%{r['errors']:>8}")
    if len(results) == 2:
        s, p = results["sqlite"], results["postgresql"]
        print(f"\npg/sqlite: p50 {pct(p['delays'], 50) / pct(s['delays'], 50):.2f}, "
              f"p99 {pct(p['delays'], 99) / pct(s['delays'], 99):.2f}")
    for db, r in results.items():
        srv = sorted(c for c, _ in r["fanout_cpu"])[len(r["fanout_cpu"]) // 2]
        cl = sorted(c for _, c in r["fanout_cpu"])[len(r["fanout_cpu"]) // 2]
        print(f"{db}: CPU spent from the report to the last arrival (median of {bans}): server {srv:.2f} s, "
              f"the {n} clients {cl:.2f} s")
    print(load())
    worst = max(pct(r["delays"], 99) for r in results.values())
    print(f"goal p99 < 2 s: {'met' if worst < 2 else 'NOT met'} (worst p99 {worst * 1e3:.0f} ms); idle CPU is the "
          f"server's share of one core over {idle:.0f} s with every client in a long-poll")
    return results


if __name__ == "__main__":
    import argparse

    from e2e_common import tmpdir

    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--bans", type=int, default=3)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    a = ap.parse_args()
    with tmpdir() as t:
        main(a.n, a.db or ["sqlite"], t, bans=a.bans, idle=a.idle)
