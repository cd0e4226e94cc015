"""Fail-static against a misbehaving server: a fake server (a tiny HTTP server in the test)
gives a real agent process one good snapshot, then malformed JSON, a truncated snapshot, a
snapshot failing validation and a lower revision. The agent keeps the last good state, says
so in its reports, and ``nft list table`` stays byte-identical."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connguard.lab import Lab
from nsenforce import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]
PORT_ID = "11111111-2222-3333-4444-555555555555"
POLICY_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
RULE_ID = "99999999-8888-7777-6666-555555555555"


def snapshot(revision: int, tap: str, max_cps: int = 25) -> dict:
    return {"host_state": {
        "host": "host0", "revision": revision,
        "ports": [{"id": PORT_ID, "name": "vm0", "project_id": "p", "interface_name": tap, "fixed_ips": [],
                   "device_owner": "", "effective_qos_policy_id": POLICY_ID}],
        "policies": [{"id": POLICY_ID, "name": "web", "enforcement": "enforce", "rules": [
            {"id": RULE_ID, "type": "connection_rate_limit", "direction": "ingress", "max_cps": max_cps,
             "qos_policy_id": POLICY_ID, "revision_number": 1}]}],
        "allowlist": [], "bans": []}}


class FakeServer:
    """Answers each state request with the next scripted body (bytes), or, with none queued,
    holds the long-poll a little and answers the current good snapshot. Records reports."""

    def __init__(self, good: bytes):
        self.good = good
        self.script: queue.Queue[bytes] = queue.Queue()
        self.served: list[bytes] = []
        self.reports: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                try:
                    body = fake.script.get(timeout=0.5 if "wait=" in self.path else 0)
                except queue.Empty:
                    body = fake.good
                fake.served.append(body)
                self._answer(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                fake.reports.append(json.loads(self.rfile.read(n))["report"])
                self._answer(b'{"agent": {}, "revision": 0, "ignored_port_ids": [], "ignored_interfaces": []}')

            def _answer(self, body: bytes):
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent stopped with a long-poll in flight

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def table(netns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "connguard"],
                          capture_output=True, text=True).stdout


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    built = Lab.up(vms=1, clients=1, sources=1)
    try:
        yield built
    finally:
        built.down()


def test_garbage_truncated_invalid_and_older_snapshots_leave_the_kernel_unchanged(lab, tmp_path):
    tap = lab.vms[0].tap
    fake = FakeServer(json.dumps(snapshot(5, tap)).encode())
    (tmp_path / "token").write_text("t\n")
    (tmp_path / "token").chmod(0o600)  # the agent refuses a token file others can read
    log = open(tmp_path / "agent.log", "w")
    agent = subprocess.Popen([*CLI, "agent", "--server", fake.url, "--token-file", str(tmp_path / "token"),
                              "--host", "host0", "--netns", lab.host, "--workdir", str(tmp_path / "w"),
                              "--report-interval", "0.5", "--interval", "0.3"], stdout=log, stderr=log)
    try:
        wait_for(lambda: "25/second" in table(lab.host), 15, what=f"the good snapshot applied: {_tail(tmp_path)}")
        wait_for(lambda: fake.reports, 5, what="a first report")
        before = table(lab.host)
        bad = [
            (b'{"host_state": {"host": "host0", "revision": 6, "ports": [', "not JSON"),
            (json.dumps({"host_state": {"host": "host0", "revision": 6, "ports": []}}).encode(), "truncated"),
            (json.dumps(snapshot(6, "bad tap name", max_cps=50)).encode(), "interface_name"),
            (json.dumps(snapshot(4, tap, max_cps=50)).encode(), "below the 5 held"),
        ]
        for body, why in bad:
            fake.script.put(body)
            wait_for(lambda: body in fake.served, 15, what=f"the agent fetched the {why} answer")
            report = wait_for(lambda: [r for r in fake.reports[-3:] if why in r["apply"]["last_error"]], 10,
                              what=f"a report of the {why} error")[0]
            assert report["apply"]["errors_total"] >= 1, report["apply"]
            assert report["heartbeat"]["configurations"]["revision"] == 5, report["heartbeat"]
            after = table(lab.host)
            assert after == before, f"the kernel changed after a {why} answer"
        assert agent.poll() is None, _tail(tmp_path)
        # a good, newer snapshot is still taken
        fake.good = json.dumps(snapshot(7, tap, max_cps=50)).encode()
        wait_for(lambda: "50/second" in table(lab.host), 15, what="the newer good snapshot applied")
        wait_for(lambda: fake.reports[-1]["apply"]["last_error"] == "", 10, what="the error cleared in reports")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
        fake.close()
        log.close()


def _tail(tmp_path) -> str:
    return (tmp_path / "agent.log").read_text()[-2000:]
