"""An in-process server for the agent's unit tests (SQLite, and PostgreSQL when
CONNGUARD_TEST_PG_URL is set), with helpers to write through its API."""

from __future__ import annotations

import os
import warnings
from typing import Any

import pytest

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from connguard.db.models import Base  # noqa: E402
from connguard.db.services.tokens import create_token  # noqa: E402
from connguard.server import create_app  # noqa: E402


def backends() -> list:
    url = os.environ.get("CONNGUARD_TEST_PG_URL")
    pg = pytest.param(url, id="postgresql") if url else pytest.param(
        None, id="postgresql", marks=pytest.mark.skip(reason="CONNGUARD_TEST_PG_URL not set"))
    return [pytest.param("sqlite", id="sqlite"), pg]


_apps: dict[str, Any] = {}


def make_app(kind: str, tmp_path_factory) -> Any:
    if kind not in _apps:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('agentdb') / 'connguard.db'}"
        else:
            url = kind
            engine = create_engine(url)
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            engine.dispose()
        _apps[kind] = create_app(url)
    app = _apps[kind]
    with app.state.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    return app


def token(app: Any, *, role: str, project: str = "admin", host: str | None = None) -> str:
    with app.state.sessions() as s:
        secret = create_token(s, project_id=project, role=role, host=host)[0]
        s.commit()
    return secret


class Api:
    def __init__(self, client: TestClient, tok: str):
        self.client, self.tok = client, tok

    def ok(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        r = self.client.request(method, "/v2.0/" + path, json=body, headers={"X-Auth-Token": self.tok})
        want = expect or {"POST": 201, "DELETE": 204}.get(method, 200)
        assert r.status_code == want, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def policy_with_rule(self, rule: dict, name: str = "web", **policy: Any) -> tuple[str, str]:
        pol = self.ok("POST", "qos/policies", {"policy": {"name": name, **policy}})["policy"]
        rule = dict(rule)
        kind = rule.pop("type")
        created = self.ok("POST", f"qos/policies/{pol['id']}/{kind}_rules", {f"{kind}_rule": rule})
        return pol["id"], created[f"{kind}_rule"]["id"]
