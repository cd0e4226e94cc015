"""API benchmark at scale: latency (p50/p95/p99) and throughput on SQLite and PostgreSQL side by
side, each database holding 10,000 ports and 1,000 policies with 3 rules each.

    python3 bench/api_bench.py [--pg URL] [--quick] [-n 500]

In-process: the FastAPI app is driven through Starlette's TestClient (ASGI, no sockets), so the
times are the server's work plus the client's (a few hundred microseconds), without network.
The data is bulk-inserted (one project "bench" owns everything, as the worst case for its
member; plus an admin cloud default policy); the requests are made with a member token of
"bench" (so the visibility predicate ``project_id = X OR shared`` runs) and the agent token of a
host with 200 ports. PostgreSQL runs when --pg or CONNGUARD_TEST_PG_URL is given, in a temporary
database dropped afterwards. Results go to docs/benchmarks.md, section "API".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from connguard.db.scratch import temporary_database  # noqa: E402
from connguard.db.models import HostRevision, Port, QosPolicy, QosRule  # noqa: E402
from connguard.db.services.tokens import create_token  # noqa: E402
from connguard.model.rules import RULE_TYPES  # noqa: E402
from connguard.server import create_app  # noqa: E402
from connguard.server.app import freeze_startup_heap  # noqa: E402

PORTS, POLICIES, HOSTS = 10_000, 1_000, 50  # 200 ports per host
PROJECT = "bench"
SEED_RULES = {  # 3 rules per policy; POST rule adds a brute_force one
    "connection_rate_limit": {"direction": "ingress", "scope": "remote_ip", "max_cps": 20},
    "connection_limit": {"direction": "any", "max_connections": 2000},
    "syn_flood": {"port_range_min": 80, "max_syn_rate": 1000},
}
NEW_RULE = ("brute_force", {"profile": "ssh", "max_attempts": 6})
SINGLE_READS = ("GET one policy", "GET one port", "GET one rule")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rule_row(policy_id: str, rule_type: str, params: dict[str, Any], at: datetime) -> dict[str, Any]:
    rule = RULE_TYPES[rule_type].model_validate(params)
    return {"id": str(uuid.uuid4()), "policy_id": policy_id, "type": rule_type, "params": params,
            "rule_key": json.dumps(list(rule.key())), "revision_number": 1, "created_at": at, "updated_at": at}


def populate(app: Any) -> dict[str, Any]:
    """Bulk-insert the data set; return the ids the requests use."""
    t0 = time.perf_counter()
    base = datetime.now(timezone.utc) - timedelta(days=1)
    policies, rules = [], []
    for i in range(POLICIES):
        at = base + timedelta(milliseconds=i)
        pid = str(uuid.uuid4())
        policies.append({"id": pid, "project_id": PROJECT, "name": f"pol-{i:04d}", "description": "", "shared": False,
                         "is_default": i == 0, "enforcement": "enforce", "tags": ["bench"], "revision_number": 1,
                         "created_at": at, "updated_at": at})
        rules += [_rule_row(pid, t, p, at) for t, p in SEED_RULES.items()]
    cloud = {**policies[0], "id": str(uuid.uuid4()), "project_id": "admin", "name": "cloud", "shared": True,
             "is_default": True, "tags": []}
    ports = []
    for i in range(PORTS):
        at = base + timedelta(milliseconds=i)
        port_id = str(uuid.uuid4())
        ports.append({"id": port_id, "project_id": PROJECT, "name": f"vm-{i:05d}", "host_id": f"host-{i % HOSTS:02d}",
                      "mac_address": None, "fixed_ips": [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"],
                      "device_owner": "compute:nova", "status": "ACTIVE", "interface_name": "tap" + port_id[:11],
                      # two ports in three carry a policy; the others get the project default
                      "qos_policy_id": policies[i % POLICIES]["id"] if i % 3 else None,
                      "revision_number": 1, "created_at": at, "updated_at": at})
    with app.state.sessions() as s:
        s.execute(insert(QosPolicy), policies + [cloud])
        for start in range(0, len(rules), 1000):
            s.execute(insert(QosRule), rules[start:start + 1000])
        for start in range(0, len(ports), 1000):
            s.execute(insert(Port), ports[start:start + 1000])
            if (start + 1000) % 5000 == 0:
                log(f"  ports {start + 1000}/{PORTS}")
        s.execute(insert(HostRevision), [{"host": f"host-{h:02d}", "revision": 1} for h in range(HOSTS)])
        member = create_token(s, project_id=PROJECT, role="member")[0]
        agent = create_token(s, project_id="admin", role="agent", host="host-00")[0]
        s.commit()
    if app.state.engine.dialect.name == "postgresql":
        with app.state.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
    log(f"  populated {len(policies) + 1} policies, {len(rules)} rules, {len(ports)} ports "
        f"in {time.perf_counter() - t0:.1f} s")
    return {"member": member, "agent": agent, "policies": [p["id"] for p in policies],
            "ports": [p["id"] for p in ports], "rules": [r["id"] for r in rules if r["type"] == "connection_limit"]}


def timed(fn: Callable[[int], None], n: int, *, warmup: int = 5) -> list[float]:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(warmup, warmup + n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def throughput(app: Any, token: str, fn: Callable[[TestClient, dict[str, str], int], None], n: int,
               clients: int) -> float:
    """Requests per second of ``clients`` concurrent clients making ``n`` requests in all."""
    per = n // clients
    threads = []
    start = threading.Barrier(clients + 1)

    def work(k: int) -> None:
        c = TestClient(app)
        start.wait()
        for i in range(per):
            fn(c, {"X-Auth-Token": token}, k * per + i)

    for k in range(clients):
        threads.append(threading.Thread(target=work, args=(k,)))
        threads[-1].start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return per * clients / (time.perf_counter() - t0)


def run(db_url: str, n: int, n_list: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    app = create_app(db_url)
    ids = populate(app)
    freeze_startup_heap()  # what the server's start-up (ASGI lifespan) does
    c = TestClient(app)
    h, agent = {"X-Auth-Token": ids["member"]}, {"X-Auth-Token": ids["agent"]}
    rnd = random.Random(1)
    rule_of = {}  # rule id -> its policy

    def ok(r: Any) -> Any:
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    # The markers of the middle pages: the 500th policy, the 5,000th port in (created_at, id) order.
    mid_policy, mid_port = ids["policies"][POLICIES // 2 - 1], ids["ports"][PORTS // 2 - 1]
    pol_path = "/v2.0/qos/policies/{}/connection_limit_rules/{}"
    with app.state.sessions() as s:
        rule_of = dict(s.execute(text("SELECT id, policy_id FROM qos_rules WHERE type = 'connection_limit'")).all())
    rule_ids = list(rule_of)
    results: dict[str, list[float]] = {}
    log("  single objects")
    results["GET one policy"] = timed(lambda i: ok(c.get(f"/v2.0/qos/policies/{rnd.choice(ids['policies'])}",
                                                         headers=h)), n)
    results["GET one port"] = timed(lambda i: ok(c.get(f"/v2.0/ports/{rnd.choice(ids['ports'])}", headers=h)), n)

    def get_rule(_i: int) -> None:
        rid = rnd.choice(rule_ids)
        ok(c.get(pol_path.format(rule_of[rid], rid), headers=h))

    results["GET one rule"] = timed(get_rule, n)
    created: list[tuple[str, str]] = []
    coll, one = f"{NEW_RULE[0]}_rules", f"{NEW_RULE[0]}_rule"

    def post_rule(i: int) -> None:  # a fresh policy each time (the rule is unique per policy)
        pid = ids["policies"][i % POLICIES]
        out = ok(c.post(f"/v2.0/qos/policies/{pid}/{coll}", json={one: NEW_RULE[1]}, headers=h))
        created.append((pid, out[one]["id"]))

    results["POST rule"] = timed(post_rule, min(n, POLICIES - 5))
    for pid, rid in created:  # untimed clean-up
        ok(c.delete(f"/v2.0/qos/policies/{pid}/{coll}/{rid}", headers=h))
    log("  collections")
    results["GET policies?limit=100 (first)"] = timed(lambda i: ok(c.get("/v2.0/qos/policies?limit=100", headers=h)),
                                                      n_list)
    results["GET policies?limit=100 (middle)"] = timed(
        lambda i: ok(c.get(f"/v2.0/qos/policies?limit=100&marker={mid_policy}", headers=h)), n_list)
    results["GET ports?limit=100 (first)"] = timed(lambda i: ok(c.get("/v2.0/ports?limit=100", headers=h)), n_list)
    results["GET ports?limit=100 (middle)"] = timed(
        lambda i: ok(c.get(f"/v2.0/ports?limit=100&marker={mid_port}", headers=h)), n_list)
    results["GET host state (200 ports)"] = timed(
        lambda i: ok(c.get("/v2.0/connguard/hosts/host-00/state", headers=agent)), n_list)
    page = ok(c.get("/v2.0/qos/policies?limit=100", headers=h))
    assert len(page["policies"]) == 100 and page["policies_links"][0]["rel"] == "next"
    middle = ok(c.get(f"/v2.0/ports?limit=100&marker={mid_port}", headers=h))["ports"]
    assert [p["id"] for p in middle] == ids["ports"][PORTS // 2:PORTS // 2 + 100]
    state = ok(c.get("/v2.0/connguard/hosts/host-00/state", headers=agent))["host_state"]
    assert len(state["ports"]) == PORTS // HOSTS

    log("  throughput")
    rps: dict[str, float] = {}

    def create(cl: TestClient, hd: dict[str, str], i: int) -> None:
        pid = ids["policies"][i % POLICIES]
        out = ok(cl.post(f"/v2.0/qos/policies/{pid}/{coll}", json={one: NEW_RULE[1]}, headers=hd))
        created2.append((pid, out[one]["id"]))

    def listing(cl: TestClient, hd: dict[str, str], _i: int) -> None:
        ok(cl.get("/v2.0/qos/policies?limit=100", headers=hd))

    for clients in (1, 4):
        created2: list[tuple[str, str]] = []
        rps[f"POST rule, {clients} client{'s' * (clients > 1)}"] = throughput(app, ids["member"], create,
                                                                            min(n, POLICIES - 5), clients)
        for pid, rid in created2:
            ok(c.delete(f"/v2.0/qos/policies/{pid}/{coll}/{rid}", headers=h))
        rps[f"GET policies?limit=100, {clients} client{'s' * (clients > 1)}"] = throughput(
            app, ids["member"], listing, n_list, clients)
    app.state.engine.dispose()
    return results, rps


def pct(vals: list[float], p: float) -> float:
    vals = sorted(vals)
    return vals[min(len(vals) - 1, max(0, round(p / 100 * len(vals)) - 1))]


def report(backends: dict[str, tuple[dict[str, list[float]], dict[str, float]]], args: argparse.Namespace) -> None:
    names = list(backends)
    short = {"sqlite": "sqlite", "postgresql": "pg"}
    head = f"{'operation (ms)':34}" + "".join(f"{short[b] + ' ' + q:>12}" for b in names for q in ("p50", "p95", "p99"))
    if len(names) == 2:
        head += f"{'pg/sqlite':>11}"
    print(head)
    first = backends[names[0]][0]
    for op in first:
        row = f"{op + f' x{len(first[op])}':34}"
        for b in names:
            vals = backends[b][0][op]
            row += "".join(f"{pct(vals, q):12.2f}" for q in (50, 95, 99))
        if len(names) == 2:
            row += f"{statistics.median(backends[names[1]][0][op]) / statistics.median(first[op]):11.2f}"
        print(row)
    print()
    print(f"{'throughput (requests/s)':34}" + "".join(f"{b:>12}" for b in names)
          + (f"{'pg/sqlite':>11}" if len(names) == 2 else ""))
    for op in backends[names[0]][1]:
        vals = [backends[b][1][op] for b in names]
        print(f"{op:34}" + "".join(f"{v:12.0f}" for v in vals) + (f"{vals[1] / vals[0]:11.2f}" if len(vals) == 2 else ""))
    print()
    for b in names:
        worst = max(pct(backends[b][0][op], 99) for op in SINGLE_READS)
        verdict = "met" if worst < 50 else "NOT met"
        print(f"target p99 < 50 ms for single-object reads, {b}: {verdict} (worst p99 {worst:.2f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default=os.environ.get("CONNGUARD_TEST_PG_URL"))
    ap.add_argument("--quick", action="store_true", help="fewer requests (under a minute)")
    ap.add_argument("-n", type=int, default=None, help="requests per single-object operation (default 500; lists 60%% of it)")
    args = ap.parse_args()
    n = args.n or (60 if args.quick else 500)
    n_list = max(n // 3, 20) if args.quick else max(n * 3 // 5, 20)
    t0, load_before = time.perf_counter(), os.getloadavg()
    backends = {}
    with tempfile.TemporaryDirectory() as tmp:
        log("sqlite")
        backends["sqlite"] = run(f"sqlite:///{tmp}/bench.db", n, n_list)
    if args.pg:
        with temporary_database(args.pg, "connguard_bench") as url:
            log("postgresql")
            backends["postgresql"] = run(url, n, n_list)
    report(backends, args)
    # Tails are sensitive to other work on the machine: say how loaded it was.
    print(f"\n{time.perf_counter() - t0:.0f} s; load average (1 min) {load_before[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
