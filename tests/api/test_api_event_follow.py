"""``connguard event list --follow`` as a process against a live server: it prints an event
made after it started, within a few polls, and Ctrl-C (SIGINT) ends it with status 0."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

import httpx
from apitest import ADMIN_PROJECT, CLI

from connguard.db.services.tokens import create_token


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)


def test_event_list_follow_prints_new_events_and_exits_0_on_ctrl_c(server, app):
    with app.state.sessions() as s:
        token = create_token(s, project_id=ADMIN_PROJECT, role="admin")[0]
        s.commit()
    api = httpx.Client(base_url=server + "/v2.0/", headers={"X-Auth-Token": token}, timeout=10)
    assert api.post("connguard/bans", json={"ban": {"ip_address": "198.51.100.1"}}).status_code == 201
    proc = subprocess.Popen([*CLI, "event", "list", "--follow", "--interval", "0.2", "-f", "json"],
                            env={**os.environ, "CONNGUARD_URL": server, "CONNGUARD_TOKEN": token},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        first = json.loads(lines.get(timeout=30))  # the event that existed before it started
        assert (first["event_type"], first["ip_address"]) == ("ban", "198.51.100.1/32"), first
        assert api.post("connguard/bans", json={"ban": {"ip_address": "198.51.100.2"}}).status_code == 201
        t0 = time.monotonic()
        new = json.loads(lines.get(timeout=10))
        took = time.monotonic() - t0
        print(f"--follow printed the new event {took:.2f} s after it was made")
        assert (new["event_type"], new["ip_address"]) == ("ban", "198.51.100.2/32"), new
        assert took < 5, took
        time.sleep(0.5)
        assert lines.empty(), "an event was printed twice"
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
    err = proc.stderr.read()
    assert rc == 0, (rc, err)
    assert "Traceback" not in err and "Aborted" not in err, err
