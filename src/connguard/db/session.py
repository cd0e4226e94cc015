"""Engine and sessions. The schema's revision and its upgrade live in ``connguard.db.schema``
(re-exported here: ``migrate``, ``SchemaTooNew``, ...)."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from connguard.db.schema import (  # noqa: F401 - re-exported
    MIGRATIONS,
    SchemaBehind,
    SchemaError,
    SchemaTooNew,
    alembic_config,
    check_current,
    current_revision,
    migrate,
    schema_status,
)


def data_dir() -> Path:
    return Path(os.environ.get("CONNGUARD_DATA_DIR") or "/var/lib/connguard")


def default_db_url() -> str:
    return f"sqlite:///{data_dir() / 'connguard.db'}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # noqa: ANN001
            # Let SQLAlchemy, not pysqlite, issue BEGIN (see _on_begin).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # noqa: ANN001
            # Take the write lock up front: two deferred transactions that both read and then
            # write would otherwise fail with SQLITE_BUSY instead of queueing.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
