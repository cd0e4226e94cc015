"""The server as systemd runs it (issue 11, items 2-4): the real ``connguard server`` process
configured by a config file and the environment, NOTIFY_SOCKET pointing at a socket the test
reads (sdwatch.py), JSON logs.

- READY=1 arrives once the API answers: GET / is answered the moment READY arrives.
- The SQLite database it creates is mode 0600 (and so are SQLite's -wal and -shm files).
- SIGHUP re-reads the file: the log level changes live, a changed bind is logged as needing a
  restart, a broken file is refused with the key named and the server keeps serving.
- SIGTERM: STOPPING=1, a log line, exit 0.
"""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys

import httpx
import pytest

from nsenforce import wait_for
from sdwatch import NotifySocket

CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sd(tmp_path):
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def messages(path) -> list[str]:
    return [r["message"] for r in records(path)]


def test_server_ready_reload_and_stop_under_a_notify_socket(tmp_path, sd):
    port = free_port()
    db = tmp_path / "data" / "connguard.db"
    db.parent.mkdir()
    config = tmp_path / "connguard.toml"
    body = f'[server]\ndb = "sqlite:///{db}"\nbind = "127.0.0.1:{port}"\nlog_level = "info"\n'
    config.write_text(body)
    log = tmp_path / "server.log"
    env = sd.env(CONNGUARD_CONFIG=str(config), CONNGUARD_SERVER_LOG_FORMAT="json")
    answered = {}

    def on_message(msg):
        if msg.get("READY") == "1" and not answered:
            answered["status"] = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code

    with open(log, "w") as fh:
        proc = subprocess.Popen([*CLI, "server"], env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        ready = sd.wait_for("READY", 60, on_message=on_message)
        assert answered["status"] == 200, answered
        assert ready["STATUS"] == f"serving the API on 127.0.0.1:{port}, database sqlite:///{db}", ready
        assert int(ready["MAINPID"]) == proc.pid
        for f in [db] + [p for p in db.parent.iterdir() if p.name.startswith("connguard.db-")]:
            mode = stat.S_IMODE(f.stat().st_mode)
            assert mode == 0o600, f"{f}: mode {mode:04o}"
        # every line is JSON (env CONNGUARD_SERVER_LOG_FORMAT over the file's default), uvicorn's too
        assert any(r["logger"].startswith("uvicorn") for r in records(log)), log.read_text()

        config.write_text(body.replace('"info"', '"debug"').replace(f":{port}", f":{port + 1}"))
        proc.send_signal(signal.SIGHUP)
        sd.wait_for("RELOADING", 10)
        sd.wait_for("READY", 10)
        wait_for(lambda: "SIGHUP: server.log_level is now debug (was info)" in messages(log), 10,
                 what=f"the log level change: {messages(log)}")
        assert f"SIGHUP: server.bind changed in {config}: it takes effect at the next restart" in messages(log)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200

        config.write_text(body + 'workers = 4\n')
        proc.send_signal(signal.SIGHUP)
        sd.wait_for("READY", 10)
        expected = (f"SIGHUP: configuration not reloaded, the running settings stay: {config}: server.workers: "
                    "unknown key (known: db, database_password_file, bind, log_level, log_format, widest_prefix)")
        wait_for(lambda: expected in messages(log), 10, what=f"the refusal: {messages(log)}")
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        stopping = sd.wait_for("STOPPING", 5)
        assert stopping["STATUS"] == "stopping", stopping
        said = messages(log)
        assert "SIGTERM: stopping (requests in flight get 5 s)" in said and said[-1] == "server stopped (SIGTERM)", said
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
