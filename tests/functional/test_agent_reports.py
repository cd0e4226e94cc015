"""What a real server-driven agent reports of real traffic (issue 6, reports and
observability): per port and rule, admitted and refused totals from the kernel's per-port
counter sets, within 5% of what the traffic generator saw; in enforce mode the refused
source as the port's offender, with how often it was refused; totals that do not go backwards when
the ruleset is re-applied with other numbers; and the agent loop's own /metrics
(``--metrics-listen``), in server mode and standalone.

The server is the scripted fake of test_agent_failstatic.py (it records every report), so the
figures are the agent's own, not a server's aggregation of them (test_up_metrics.py checks that).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nsenforce import wait_for
from test_agent_failstatic import CLI, PORT_ID, RULE_ID, FakeServer, lab, snapshot, table  # noqa: F401

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

RATE = 25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def totals(reports: list[dict]) -> dict[str, int]:
    """The latest totals of our port and rule (deltas carry only counters that moved)."""
    out: dict[str, int] = {}
    for r in reports:
        for p in r["ports"]:
            for c in p["counters"]:
                if p["port_id"] == PORT_ID and c["rule_id"] == RULE_ID:
                    out = c
    return out


def settled(fake, *, quiet: float, timeout: float) -> dict:
    """The totals once they have not moved for ``quiet`` seconds (reports come every 0.5 s)."""
    deadline = time.monotonic() + timeout
    last, since = dict(totals(fake.reports)), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = dict(totals(fake.reports))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"counters still moving after {timeout} s: {last}")


def test_admitted_and_refused_match_the_traffic_and_survive_a_reapply(lab, tmp_path):
    vm, cl = lab.vms[0], lab.clients[0]
    fake = FakeServer(json.dumps(snapshot(5, vm.tap, max_cps=RATE)).encode())
    (tmp_path / "token").write_text("t\n")
    (tmp_path / "token").chmod(0o600)  # the agent refuses a token file others can read
    mport = free_port()
    log = open(tmp_path / "agent.log", "w")
    agent = subprocess.Popen([*CLI, "agent", "--server", fake.url, "--token-file", str(tmp_path / "token"),
                              "--host", "host0", "--netns", lab.host, "--workdir", str(tmp_path / "w"),
                              "--report-interval", "0.5", "--interval", "0.3",
                              "--metrics-listen", f"127.0.0.1:{mport}"], stdout=log, stderr=log)
    tail = lambda: (tmp_path / "agent.log").read_text()[-2000:]  # noqa: E731
    try:
        with vm.serve(tcp=[80]):
            wait_for(lambda: f"{RATE}/second" in table(lab.host), 15, what=f"the snapshot applied: {tail()}")
            wait_for(lambda: totals(fake.reports), 10, what="a first report with counters")
            start = dict(totals(fake.reports))
            seen = cl.flood(vm, 80, rate=4 * RATE, duration=4)
            not_admitted = seen.attempted - seen.admitted
            assert seen.admitted >= 2 * RATE and not_admitted >= 2 * RATE, seen

            got = settled(fake, quiet=2.0, timeout=15)
            admitted = got["admitted"] - start.get("admitted", 0)
            refused = got["refused"] - start.get("refused", 0)
            print(f"traffic: {seen.admitted} admitted, {not_admitted} not admitted of {seen.attempted}; "
                  f"reported: {admitted} admitted, {refused} refused")
            assert abs(admitted - seen.admitted) <= 0.05 * seen.admitted, (admitted, seen.admitted)
            assert abs(refused - not_admitted) <= 0.05 * not_admitted, (refused, not_admitted)
            assert got["would_refuse"] == 0 and got["set_full"] == 0, got
            # enforce mode reports its offenders: the one source, with the SYNs it had refused
            offenders = [p["offenders"] for r in fake.reports for p in r["ports"]
                         if p["port_id"] == PORT_ID and p.get("offenders") is not None][-1]
            assert [o["ip_address"] for o in offenders] == [cl.ipv4], offenders
            assert abs(offenders[0]["count"] - refused) <= 0.05 * refused, (offenders, refused)

            # a re-apply with another rate: the per-port counter sets are kept, totals go on
            fake.good = json.dumps(snapshot(6, vm.tap, max_cps=2 * RATE)).encode()
            wait_for(lambda: f"{2 * RATE}/second" in table(lab.host), 15, what="the new rate applied")
            n = len(fake.reports)
            wait_for(lambda: len(fake.reports) >= n + 3, 10, what="reports after the re-apply")
            after = [totals(fake.reports[:i]) for i in range(n, len(fake.reports) + 1)]
            assert all(a["admitted"] >= got["admitted"] and a["refused"] >= got["refused"] for a in after), after
            full = [r for r in fake.reports if r["full"]]
            assert full, "no full report"

        m = metrics(mport)
        assert m.get("connguard_agent_apply_seconds_count", 0) >= 2, m  # the first apply and the re-apply
        assert m.get("connguard_agent_apply_seconds_sum", 0) > 0, m
        assert m.get("connguard_agent_apply_errors_total") == 0, m
        assert m.get("connguard_agent_report_queue_length") == 0 and m.get("connguard_agent_server_reachable") == 1, m
        assert m.get("connguard_agent_reports_sent_total", 0) >= 3 and m.get("connguard_agent_enforcing") == 1, m
        assert agent.poll() is None, tail()
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
        fake.close()
        log.close()


def test_standalone_agent_serves_its_loop_metrics(lab, tmp_path):
    state = tmp_path / "state.yaml"
    state.write_text(json.dumps({"policies": [{"name": "web", "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "max_cps": 30}]}],
        "ports": [{"interface_name": lab.vms[0].tap, "policy": "web"}]}))
    mport = free_port()
    log = open(tmp_path / "agent.log", "w")
    agent = subprocess.Popen([*CLI, "agent", "--state-file", str(state), "--netns", lab.host, "--workdir",
                              str(tmp_path / "w"), "--interval", "0.3", "--metrics-listen", f"127.0.0.1:{mport}"],
                             stdout=log, stderr=log)
    try:
        wait_for(lambda: "30/second" in table(lab.host), 15, what="the state applied")
        m = wait_for(lambda: (lambda m: m if m.get("connguard_agent_apply_seconds_count", 0) >= 1 else None)(
            _try(metrics, mport)), 5, 0.2, what="an apply in the agent's /metrics")
        assert m["connguard_agent_enforcing"] == 1 and m["connguard_agent_apply_errors_total"] == 0, m
        assert "connguard_agent_report_queue_length" not in m, "a standalone agent has no report queue"
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
        log.close()


def _try(fn, *a):
    try:
        return fn(*a)
    except httpx.HTTPError:
        return {}
