"""Engine, sessions and migrations (programmatic Alembic: no alembic.ini, the scripts ship in
the package so an installed connguard can migrate its database)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from connguard.exceptions import ConnguardError

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaTooNew(ConnguardError):
    """The database was migrated by a newer connguard than this one."""


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


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, *, revision: str = "head") -> None:
    """Upgrade the schema; refuse when the database is newer than this code."""
    cfg = alembic_config(engine)
    script = ScriptDirectory.from_config(cfg)
    current = current_revision(engine)
    if current is not None:
        try:
            script.get_revision(current)
        except CommandError:
            raise SchemaTooNew(
                f"the database schema is at revision {current!r}, newer than this connguard "
                f"(which knows up to {script.get_current_head()!r}); upgrade connguard or use another database"
            ) from None
    command.upgrade(cfg, revision)
