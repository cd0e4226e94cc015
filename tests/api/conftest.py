"""API tests run against SQLite and PostgreSQL (``CONNGUARD_TEST_PG_URL``; in CI its absence
is an error, never a skip). Each backend's schema is rebuilt once per session by the
migrations, and every test starts from empty tables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pytest

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import text  # noqa: E402

from connguard.db.models import Base  # noqa: E402
from connguard.db.services.tokens import create_token  # noqa: E402
from connguard.server import create_app  # noqa: E402

PROJECT_A = "project-a"
PROJECT_B = "project-b"
ADMIN_PROJECT = "admin"


def pg_url() -> str | None:
    url = os.environ.get("CONNGUARD_TEST_PG_URL")
    if not url and os.environ.get("CI") == "true":
        pytest.fail("CONNGUARD_TEST_PG_URL is not set in CI: the API suite must run against PostgreSQL")
    return url


def reset_pg_schema(url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'connguard.db'}"
    url = pg_url()
    if not url:
        pytest.skip("CONNGUARD_TEST_PG_URL not set (set it to run against PostgreSQL)")
    reset_pg_schema(url)
    return url


@pytest.fixture(scope="session")
def app_for_backend(db_url: str) -> Any:
    app = create_app(db_url)
    yield app
    app.state.engine.dispose()


@pytest.fixture
def app(app_for_backend: Any) -> Any:
    with app_for_backend.state.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    return app_for_backend


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


@dataclass
class Actors:
    admin: Api
    member_a: Api
    reader_a: Api
    member_b: Api
    agent: Api
    anonymous: Api


@pytest.fixture
def actors(app: Any) -> Iterator[Actors]:
    client = TestClient(app)
    with app.state.sessions() as s:
        tok = {
            "admin": create_token(s, project_id=ADMIN_PROJECT, role="admin")[0],
            "member_a": create_token(s, project_id=PROJECT_A, role="member")[0],
            "reader_a": create_token(s, project_id=PROJECT_A, role="reader")[0],
            "member_b": create_token(s, project_id=PROJECT_B, role="member")[0],
            "agent": create_token(s, project_id=ADMIN_PROJECT, role="agent", host="host-1")[0],
        }
        s.commit()
    yield Actors(**{k: Api(client, v) for k, v in tok.items()}, anonymous=Api(client, ""))


def error_type(data: Any) -> str:
    assert set(data) == {"NeutronError"}, data
    assert set(data["NeutronError"]) == {"type", "message", "detail"}, data
    return data["NeutronError"]["type"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]


@pytest.fixture
def server(app, db_url, tmp_path):
    """A live server over the (emptied) test database; yields its URL."""
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([*CLI, "server", "--db", db_url,
                             "--bind", f"127.0.0.1:{port}", "--log-level", "warning"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "server.log").read_text())
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


