"""End-to-end benchmarks of issue 6 (whole processes), and the two nft executors side by side.

    python3 bench/e2e_bench.py [--db sqlite --db postgresql] [--only write,watch,snapshot,nft]

1. e2e_write.py: API write -> enforced in the kernel, one host, 200 writes.
2. e2e_watch.py: 1,000 simulated agents watching one server; a shared ban's fan-out; idle cost.
3. e2e_snapshot.py: a 10,000-port host's full snapshot, server and agent side.
4. here: the calls the agent's loop makes most, through the ``nft`` tool and libnftables.

PostgreSQL needs CONNGUARD_TEST_PG_URL (a temporary database is made beside it). Every figure
is printed by this run; the load average before and after is printed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_common import load, log, netns, pct, tmpdir  # noqa: E402


def nft_calls(n: int = 200) -> None:
    """Per call, each executor in turn on one namespace holding a 1,000-port ruleset."""
    from connguard.compiler import compile_host
    from connguard.model import parse_state
    from connguard.nft import Applier, NftCli, NftLib, observe

    state = parse_state({"policies": [{"name": "p", "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20},
        {"type": "brute_force", "profile": "ssh"}]}],
        "ports": [{"interface_name": f"tap{i:04d}", "fixed_ips": [f"10.1.{i // 250}.{i % 250 + 1}"], "policy": "p"}
                  for i in range(1000)]})
    elem = {"family": "inet", "table": "connguard", "name": "ban4",
            "elem": [{"concat": ["tap0001", "192.0.2.9"]}]}
    with netns("cgnft") as ns:
        lib, cli = NftLib(ns), NftCli(ns)
        try:
            Applier(cli).apply(compile_host(state))
            calls = {
                "query: list tables": lambda ex: ex.query("list", "tables"),
                "query: list sets -t (the observer's)": lambda ex: ex.query("list", "sets", "table", "inet",
                                                                            "connguard", terse=True),
                "batch: add + delete one ban": lambda ex: ex.batch({"nftables": [{"add": {"element": elem}},
                                                                                  {"delete": {"element": elem}}]}),
                "observe (bans, offenders, counters)": lambda ex: observe(ex),
            }
            rows = []
            for name, fn in calls.items():
                per = {}
                for label, ex in (("cli", cli), ("lib", lib)):
                    fn(ex)
                    ts = []
                    for _ in range(n if "observe" not in name else n // 4):
                        t0 = time.perf_counter()
                        fn(ex)
                        ts.append(time.perf_counter() - t0)
                    per[label] = ts
                rows.append((name, per))
        finally:
            lib.close()
    print(f"\n### 4. nft executors: the agent's small calls, one namespace with 1,000 ports ({n} calls each; ms)\n")
    print(f"{'call':<40}{'cli p50':>9}{'cli p99':>9}{'lib p50':>9}{'lib p99':>9}{'cli/lib p50':>13}")
    for name, per in rows:
        c, li = per["cli"], per["lib"]
        print(f"{name:<40}{pct(c, 50) * 1e3:>9.2f}{pct(c, 99) * 1e3:>9.2f}{pct(li, 50) * 1e3:>9.2f}"
              f"{pct(li, 99) * 1e3:>9.2f}{pct(c, 50) / pct(li, 50):>13.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    ap.add_argument("--only", default="write,watch,snapshot,nft")
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--agents", type=int, default=1000)
    a = ap.parse_args()
    dbs = a.db or ["sqlite"]
    only = set(a.only.split(","))
    t0, before = time.perf_counter(), load()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {before}, git {os.popen('git rev-parse --short HEAD').read().strip()}")
    with tmpdir() as tmp:
        if "nft" in only:
            nft_calls()
        if "write" in only:
            import e2e_write

            e2e_write.main(a.writes, dbs, tmp)
        if "snapshot" in only:
            import e2e_snapshot

            e2e_snapshot.main(dbs, tmp)
        if "watch" in only:
            import e2e_watch

            e2e_watch.main(a.agents, dbs, tmp)
    log("done")
    print(f"\n{time.perf_counter() - t0:.0f} s; {before} before, {load()} after")


if __name__ == "__main__":
    main()
