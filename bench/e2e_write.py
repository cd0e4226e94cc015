"""API write -> enforced in the kernel, on one host, whole processes.

A ``connguard server`` process, a ``connguard agent --server`` process for one namespace this
script creates (one dummy ``tap`` interface registered as a port through the API, a policy with
a per-port connection-rate limit). Each write is a PUT of the rule's ``max_cps`` (a new value
each time); the time runs from just before the request until the namespace's kernel holds the
new rate, read in this process through libnftables every millisecond. Once with the agent on
the ``nft`` tool and once on libnftables in-process (CONNGUARD_NFT_BACKEND), per database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from e2e_common import CLI, Server, database, log, netns, pct

from connguard.nft import NftLib

HOST = "bench-write"
IFNAME = "tapbench0"


def rates(nft: NftLib) -> set[int]:
    """The per-second limit rates in our table (terse: no set elements)."""
    out: set[int] = set()

    def walk(x):
        if isinstance(x, dict):
            lim = x.get("limit")
            if isinstance(lim, dict) and lim.get("per") == "second":
                out.add(lim["rate"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    try:
        walk(nft.query("list", "table", "inet", "connguard", terse=True))
    except Exception:  # noqa: BLE001 - no table yet
        pass
    return out


def wait_rate(nft: NftLib, value: int, timeout: float = 30.0) -> float:
    deadline = time.perf_counter() + timeout
    while value not in rates(nft):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the kernel never held rate {value}")
        time.sleep(0.001)
    return time.perf_counter()


def run_one(db_kind: str, backend: str, n: int, tmp: Path) -> dict[str, list[float]]:
    with database(db_kind, tmp) as db, netns("cgbw") as ns:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "tuntap", "add", "dev", IFNAME, "mode", "tap"], check=True)
        server = Server(db, tmp)
        agent = None
        nft = NftLib(ns)
        try:
            pol = server.api("POST", "qos/policies", json={"policy": {"name": "bench"}})["policy"]
            rule = server.api("POST", f"qos/policies/{pol['id']}/connection_rate_limit_rules", json={
                "connection_rate_limit_rule": {"direction": "ingress", "scope": "port", "max_cps": 1000}})
            rule_id = rule["connection_rate_limit_rule"]["id"]
            server.api("POST", "ports", json={"port": {"name": "p0", "binding:host_id": HOST, "interface_name": IFNAME,
                                                      "fixed_ips": [{"ip_address": "10.9.0.5"}],
                                                      "qos_policy_id": pol["id"]}})
            tok = tmp / f"{db_kind}-{backend}.token"
            tok.write_text(server.token(HOST) + "\n")
            os.chmod(tok, 0o600)
            alog = open(tmp / f"agent-{db_kind}-{backend}.log", "w")
            agent = subprocess.Popen([*CLI, "agent", "--server", server.url, "--token-file", str(tok), "--host", HOST,
                                      "--netns", ns, "--workdir", str(tmp / f"agent-{db_kind}-{backend}")],
                                     stdout=alog, stderr=subprocess.STDOUT,
                                     env={**os.environ, "CONNGUARD_NFT_BACKEND": backend})
            wait_rate(nft, 1000, 60)
            api, kernel = [], []
            path = f"qos/policies/{pol['id']}/connection_rate_limit_rules/{rule_id}"
            for i in range(n + 5):
                value = 2000 + i
                t0 = time.perf_counter()
                server.api("PUT", path, json={"connection_rate_limit_rule": {"max_cps": value, "max_burst_cps": value}})
                t1 = time.perf_counter()
                t2 = wait_rate(nft, value)
                if i >= 5:  # warm-up: first requests, caches
                    api.append(t1 - t0)
                    kernel.append(t2 - t0)
            return {"api": api, "kernel": kernel}
        finally:
            nft.close()
            if agent is not None:
                agent.send_signal(signal.SIGTERM)
                agent.wait(20)
            server.stop()


def main(n: int, dbs: list[str], tmp: Path) -> dict:
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    for db in dbs:
        for backend in ("cli", "lib"):
            log(f"write -> kernel: {db}, agent executor {backend}, {n} writes")
            results[(db, backend)] = run_one(db, backend, n, tmp)
    print(f"\n### 1. API write -> enforced in the kernel, one host ({n} writes per row; ms)\n")
    print(f"{'database':<11}{'agent executor':<16}{'API p50':>9}{'API p99':>9}{'kernel p50':>12}{'kernel p99':>12}"
          f"{'max':>8}{'p50 vs cli':>12}")
    for (db, backend), r in results.items():
        base = pct(results[(db, 'cli')]["kernel"], 50)
        k = r["kernel"]
        print(f"{db:<11}{backend:<16}{pct(r['api'], 50) * 1e3:>9.1f}{pct(r['api'], 99) * 1e3:>9.1f}"
              f"{pct(k, 50) * 1e3:>12.1f}{pct(k, 99) * 1e3:>12.1f}{max(k) * 1e3:>8.1f}{pct(k, 50) / base:>12.2f}")
    worst = max(pct(r["kernel"], 99) for r in results.values())
    print(f"\ngoal p99 < 500 ms: {'met' if worst < 0.5 else 'NOT met'} (worst p99 {worst * 1e3:.1f} ms)")
    return {f"{db}/{b}": r for (db, b), r in results.items()}


if __name__ == "__main__":
    import argparse

    from e2e_common import tmpdir

    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    a = ap.parse_args()
    with tmpdir() as t:
        main(a.n, a.db or ["sqlite"], t)
