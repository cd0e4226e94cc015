"""Helpers of the API tests (a module with a unique name: test directories share
``sys.path`` and a second ``conftest`` or ``helpers`` would shadow this one)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

import pytest

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from fastapi.testclient import TestClient  # noqa: E402

PROJECT_A = "project-a"
PROJECT_B = "project-b"
ADMIN_PROJECT = "admin"
CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]


def pg_url() -> str | None:
    url = os.environ.get("CONNGUARD_TEST_PG_URL")
    if not url and os.environ.get("CI") == "true":
        pytest.fail("CONNGUARD_TEST_PG_URL is not set in CI: the API suite must run against PostgreSQL")
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(db_url: str, log_path: Path) -> Iterator[str]:
    """A real ``connguard server`` process over ``db_url`` on a free port; yields its URL."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([*CLI, "server", "--db", db_url,
                             "--bind", f"127.0.0.1:{port}", "--log-level", "warning"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise AssertionError(log_path.read_text())
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError(f"the server at {url} did not stop within 15 s of SIGTERM") from None
        finally:
            log.close()


@dataclass
class Api:
    """A client holding one token; ``call`` returns (status, json or None)."""

    client: TestClient
    token: str

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        hdrs = {"X-Auth-Token": self.token, **{k.replace("_", "-"): v for k, v in headers.items()}}
        r = self.client.request(method, "/v2.0/" + path.lstrip("/"), json=body, headers=hdrs)
        return r.status_code, (r.json() if r.content else None)

    def get(self, path: str, **h: str) -> tuple[int, Any]:
        return self.call("GET", path, **h)

    def post(self, path: str, body: Any, **h: str) -> tuple[int, Any]:
        return self.call("POST", path, body, **h)

    def put(self, path: str, body: Any, **h: str) -> tuple[int, Any]:
        return self.call("PUT", path, body, **h)

    def delete(self, path: str, **h: str) -> tuple[int, Any]:
        return self.call("DELETE", path, **h)

    def ok(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        status, data = self.call(method, path, body)
        want = expect or {"POST": 201, "DELETE": 204}.get(method, 200)
        assert status == want, (method, path, status, data)
        return data


def error_type(data: Any) -> str:
    assert set(data) == {"NeutronError"}, data
    assert set(data["NeutronError"]) == {"type", "message", "detail"}, data
    return data["NeutronError"]["type"]
