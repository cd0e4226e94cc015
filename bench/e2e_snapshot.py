"""A full snapshot of a 10,000-port host: the server's time to produce it (one whole HTTP
request to a ``connguard server`` process), and the agent's time from those bytes to the kernel
(JSON parse -> HostState through the model -> compile -> one atomic apply into a fresh
namespace), each step timed, with the agent on the ``nft`` tool and on libnftables in-process.

The data set is bulk-inserted before the server starts: one host, 10,000 ports over 100
policies of 3 rules (connection rate, connection limit, brute force), two ports in three with
their own policy, the others on the project default, and 1,000 active bans.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from e2e_common import Server, database, log, netns, pct

HOST = "snap-host"
PROJECT = "bench"
RULES = {
    "connection_rate_limit": {"direction": "ingress", "scope": "remote_ip", "max_cps": 20},
    "connection_limit": {"direction": "ingress", "scope": "remote_ip", "max_connections": 200},
    "brute_force": {"profile": "ssh"},
}


def populate(db: str, ports: int, policies: int, bans: int) -> str:
    from sqlalchemy import insert

    from connguard.db.models import Ban, HostRevision, Port, QosPolicy, QosRule
    from connguard.db.services.tokens import create_token
    from connguard.model.rules import RULE_TYPES
    from connguard.server import create_app

    app = create_app(db)  # migrates
    now = datetime.now(timezone.utc)
    base = now - timedelta(days=1)
    pols, rules = [], []
    for i in range(policies):
        pid = str(uuid.uuid4())
        at = base + timedelta(milliseconds=i)
        pols.append({"id": pid, "project_id": PROJECT, "name": f"pol-{i:03d}", "description": "", "shared": False,
                     "is_default": i == 0, "enforcement": "enforce", "tags": [], "revision_number": 1,
                     "created_at": at, "updated_at": at})
        for t, params in RULES.items():
            rule = RULE_TYPES[t].model_validate(params)
            rules.append({"id": str(uuid.uuid4()), "policy_id": pid, "type": t, "params": params,
                          "rule_key": json.dumps(list(rule.key())), "revision_number": 1, "created_at": at,
                          "updated_at": at})
    rows = []
    for i in range(ports):
        at = base + timedelta(milliseconds=i)
        rows.append({"id": str(uuid.uuid4()), "project_id": PROJECT, "name": f"vm-{i:05d}", "host_id": HOST,
                     "mac_address": None, "fixed_ips": [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"],
                     "device_owner": "compute:nova", "status": "ACTIVE", "interface_name": f"tap{i:05d}",
                     "qos_policy_id": pols[i % policies]["id"] if i % 3 else None,
                     "revision_number": 1, "created_at": at, "updated_at": at})
    ban_rows = [{"id": str(uuid.uuid4()), "ip_address": f"203.{i // 65536}.{i // 256 % 256}.{i % 256}/32",
                 "port_id": None, "project_id": PROJECT, "scope": "project", "origin": "manual", "reason": "bench",
                 "host": None, "created_at": now, "expires_at": now + timedelta(hours=4), "offence_count": 1}
                for i in range(bans)]
    with app.state.sessions() as s:
        s.execute(insert(QosPolicy), pols)
        s.execute(insert(QosRule), rules)
        for k in range(0, len(rows), 1000):
            s.execute(insert(Port), rows[k:k + 1000])
        for k in range(0, len(ban_rows), 1000):
            s.execute(insert(Ban), ban_rows[k:k + 1000])
        s.execute(insert(HostRevision), [{"host": HOST, "revision": 1}])
        token = create_token(s, project_id=PROJECT, role="agent", host=HOST)[0]
        s.commit()
    app.state.engine.dispose()
    return token


def agent_steps(body: bytes, ns: str, backend: str) -> dict[str, float]:
    """What the server-driven agent does with a snapshot (agent/server_source.py, reconciler),
    step by step, into a namespace holding nothing yet."""
    from connguard.agent.gcpause import gc_paused
    from connguard.agent.snapshot import from_host_state
    from connguard.compiler import compile_host
    from connguard.nft import Applier, make_executor

    ex = make_executor(ns, backend)
    t = [time.perf_counter()]
    with gc_paused():  # as the agent: server_source.fetch_once, then reconciler reload and tick
        doc = json.loads(body)
        t.append(time.perf_counter())
        desired = from_host_state(doc, host=HOST)
        t.append(time.perf_counter())
    with gc_paused():
        ruleset = compile_host(desired.state)
    t.append(time.perf_counter())
    with gc_paused():
        Applier(ex).apply(ruleset)
    t.append(time.perf_counter())
    if hasattr(ex, "close"):
        ex.close()
    return {"parse": t[1] - t[0], "model": t[2] - t[1], "compile": t[3] - t[2], "apply": t[4] - t[3],
            "total": t[4] - t[0]}


def run_one(db_kind: str, tmp: Path, *, ports: int, repeat: int) -> dict:
    with database(db_kind, tmp) as db:
        t = time.perf_counter()
        token = populate(db, ports, 100, 1000)
        log(f"{db_kind}: {ports} ports loaded in {time.perf_counter() - t:.1f} s")
        server = Server(db, tmp)
        try:
            url = f"{server.url}/v2.0/connguard/hosts/{HOST}/state"
            times, body = [], b""
            with httpx.Client(headers={"X-Auth-Token": token}, timeout=120) as http:
                for i in range(repeat + 1):
                    t0 = time.perf_counter()
                    r = http.get(url)
                    body = r.content
                    if r.status_code != 200:
                        raise RuntimeError(f"{r.status_code} {r.text[:300]}")
                    if i:  # the first warms the server's caches
                        times.append(time.perf_counter() - t0)
        finally:
            server.stop()
    steps = {}
    for backend in ("cli", "lib"):
        runs = []
        for _ in range(repeat):
            with netns("cgsnap") as ns:
                runs.append(agent_steps(body, ns, backend))
        steps[backend] = {k: pct([r[k] for r in runs], 50) for k in runs[0]}
    return {"server": times, "bytes": len(body), "steps": steps}


def main(dbs: list[str], tmp: Path, *, ports: int = 10_000, repeat: int = 3) -> dict:
    results = {db: run_one(db, tmp, ports=ports, repeat=repeat) for db in dbs}
    print(f"\n### 3. Full snapshot of a {ports}-port host (100 policies x 3 rules, 1,000 bans); "
          f"median of {repeat}, seconds\n")
    print(f"{'database':<11}{'MB':>6}{'server p50':>12}{'max':>7}  agent: {'executor':<9}{'parse':>7}{'model':>7}"
          f"{'compile':>9}{'apply':>7}{'total':>7}{'server+agent':>14}")
    for db, r in results.items():
        for backend, s in r["steps"].items():
            print(f"{db:<11}{r['bytes'] / 1e6:>6.1f}{pct(r['server'], 50):>12.2f}{max(r['server']):>7.2f}  "
                  f"       {backend:<9}{s['parse']:>7.2f}{s['model']:>7.2f}{s['compile']:>9.2f}{s['apply']:>7.2f}"
                  f"{s['total']:>7.2f}{pct(r['server'], 50) + s['total']:>14.2f}")
    for db, r in results.items():
        c, li = r["steps"]["cli"], r["steps"]["lib"]
        print(f"{db}: apply lib/cli {li['apply'] / c['apply']:.2f}, agent total lib/cli {li['total'] / c['total']:.2f}")
    worst = max(pct(r["server"], 50) + min(s["total"] for s in r["steps"].values()) for r in results.values())
    print(f"goal < 2 s server + agent: {'met' if worst < 2 else 'NOT met'} (worst {worst:.2f} s, best executor)")
    return results


if __name__ == "__main__":
    import argparse

    from e2e_common import tmpdir

    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    a = ap.parse_args()
    with tmpdir() as t:
        main(a.db or ["sqlite"], t, ports=a.ports, repeat=a.repeat)
