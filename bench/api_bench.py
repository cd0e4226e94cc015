"""API micro-benchmark: latency of the main operations on SQLite and PostgreSQL, side by side,
with ratios. In-process (FastAPI TestClient, no network), small and short on purpose (~20 s).

    python3 bench/api_bench.py [--pg URL] [-n 200]

PostgreSQL runs when --pg or CONNGUARD_TEST_PG_URL is given, in a temporary database that is
dropped afterwards. Results go to docs/benchmarks.md, section "API".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from connguard.db.services.tokens import create_token  # noqa: E402
from connguard.server import create_app  # noqa: E402


@contextmanager
def pg_database(url: str) -> Iterator[str]:
    name = f"connguard_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def timed(fn: Callable[[int], None], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run(db_url: str, n: int) -> dict[str, list[float]]:
    app = create_app(db_url)
    with app.state.sessions() as s:
        token = create_token(s, project_id="bench", role="admin")[0]
        agent = create_token(s, project_id="bench", role="agent", host="h1")[0]
        s.commit()
    c = TestClient(app)
    h = {"X-Auth-Token": token}
    ids: list[str] = []

    def ok(r):  # noqa: ANN001, ANN202
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    results = {}
    results["POST policy"] = timed(lambda i: ids.append(ok(c.post("/v2.0/qos/policies", json={"policy": {"name": f"p{i}"}}, headers=h))["policy"]["id"]), n)
    results["POST rule"] = timed(lambda i: ok(c.post(f"/v2.0/qos/policies/{ids[i]}/connection_rate_limit_rules", json={"connection_rate_limit_rule": {"max_cps": 10 + i}}, headers=h)), n)
    results["GET policy"] = timed(lambda i: ok(c.get(f"/v2.0/qos/policies/{ids[i]}", headers=h)), n)
    results["PUT policy (If-Match)"] = timed(lambda i: ok(c.put(f"/v2.0/qos/policies/{ids[i]}", json={"policy": {"description": "x"}}, headers={**h, "If-Match": "revision_number=2"})), n)
    results["POST port"] = timed(lambda i: ok(c.post("/v2.0/ports", json={"port": {"binding:host_id": "h1", "qos_policy_id": ids[i]}}, headers=h)), n)
    results[f"GET policies ({n})"] = timed(lambda i: ok(c.get("/v2.0/qos/policies", headers=h)), max(n // 10, 5))
    results[f"GET policies?limit=20 ({n})"] = timed(lambda i: ok(c.get("/v2.0/qos/policies?limit=20", headers=h)), max(n // 10, 5))
    results[f"GET host state ({n} ports)"] = timed(lambda i: ok(c.get("/v2.0/connguard/hosts/h1/state", headers={"X-Auth-Token": agent})), max(n // 20, 5))

    def wake(i: int) -> None:
        """Time from a rule write to the long-polling agent's answer."""
        rev = ok(c.get("/v2.0/connguard/hosts/h1/state?fields=revision", headers={"X-Auth-Token": agent}))["host_state"]["revision"]
        box = {}

        def poll() -> None:
            poller = TestClient(app)
            ok(poller.get(f"/v2.0/connguard/hosts/h1/state?revision={rev}&wait=10", headers={"X-Auth-Token": agent}))
            box["t"] = time.perf_counter()

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        ok(c.put(f"/v2.0/qos/policies/{ids[i]}", json={"policy": {"description": f"w{i}"}}, headers=h))
        t.join(15)
        box.setdefault("t", float("nan"))
        wake_ms.append((box["t"] - t0) * 1000)

    wake_ms: list[float] = []
    for i in range(5):
        wake(i)
    results["write -> long-poll answer"] = wake_ms
    app.state.engine.dispose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default=os.environ.get("CONNGUARD_TEST_PG_URL"))
    ap.add_argument("-n", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"sqlite": run(f"sqlite:///{tmp}/bench.db", args.n)}
    if args.pg:
        with pg_database(args.pg) as url:
            backends["postgresql"] = run(url, args.n)
    names = list(backends)
    head = f"{'operation':34}" + "".join(f"{b + ' p50 ms':>18}{b + ' p95 ms':>18}" for b in names)
    if len(names) == 2:
        head += f"{'pg/sqlite p50':>15}"
    print(head)
    for op in backends["sqlite"]:
        row = f"{op:34}"
        p50s = []
        for b in names:
            vals = sorted(backends[b][op])
            p50 = statistics.median(vals)
            p95 = vals[min(len(vals) - 1, int(len(vals) * 0.95))]
            p50s.append(p50)
            row += f"{p50:18.2f}{p95:18.2f}"
        if len(p50s) == 2:
            row += f"{p50s[1] / p50s[0]:15.2f}"
        print(row)
    show = statistics.median(backends["sqlite"]["GET policy"])
    listing = statistics.median(backends["sqlite"][f"GET policies ({args.n})"])
    print(f"\nsqlite: listing {args.n} policies costs {listing / show:.1f}x one show")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
