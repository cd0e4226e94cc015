"""API tests run against SQLite and PostgreSQL (``CONNGUARD_TEST_PG_URL``; in CI its absence
is an error, never a skip). Each backend's schema is rebuilt once per session by the
migrations, and every test starts from empty tables."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from fastapi.testclient import TestClient  # noqa: E402

from connguard.db.models import Base  # noqa: E402
from connguard.db.services.tokens import create_token  # noqa: E402
from connguard.db.scratch import reset_schema  # noqa: E402
from connguard.server import create_app  # noqa: E402
from apitest import ADMIN_PROJECT, PROJECT_A, PROJECT_B, Api, live_server, pg_url  # noqa: E402




@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'connguard.db'}"
    url = pg_url()
    if not url:
        pytest.skip("CONNGUARD_TEST_PG_URL not set (set it to run against PostgreSQL)")
    reset_schema(url)
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


@pytest.fixture
def server(app, db_url, tmp_path):
    """A live server over the (emptied) test database; yields its URL."""
    with live_server(db_url, tmp_path / "server.log") as url:
        yield url
