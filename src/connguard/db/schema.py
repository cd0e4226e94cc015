"""The database schema's revision and its upgrade (programmatic Alembic: no alembic.ini, the
scripts ship in the package so an installed connguard can migrate its database).

Upgrades run under a lock, so that servers started at the same moment on one fresh database
(or ``connguard db upgrade`` run while a server starts) migrate it once, one after the other,
instead of racing to create the same tables (the loser died with ``UniqueViolation`` on
``alembic_version``): PostgreSQL holds a session-level advisory lock for the whole upgrade;
SQLite's write lock is taken by the upgrade's own transaction, which the engine begins with
``BEGIN IMMEDIATE`` (session.make_engine), so a second process waits up to the engine's
30 s busy timeout. The revision is read again under the lock: the process that waited finds
the schema at head and has nothing to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, text

from connguard.exceptions import ConnguardError

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_lock key of connguard's migrations (first 8 bytes of sha256("connguard schema
# migrations"), signed): any process migrating a connguard database takes this one.
LOCK_KEY = 590365037993071564
UPGRADE_HINT = "run `connguard db upgrade` (or start the server with --migrate)"

log = logging.getLogger(__name__)

# (from revision or None, to revision, the revision's title, seconds it took)
StepCallback = Callable[[str | None, str, str, float], None]


class SchemaError(ConnguardError):
    """The database schema is not the one this connguard runs on."""


class SchemaTooNew(SchemaError):
    """The database was migrated by a newer connguard than this one (or is not connguard's)."""


class SchemaBehind(SchemaError):
    """The database is empty or at an older revision: it needs ``connguard db upgrade``."""


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: no connguard schema (an empty database)
    head: str
    known: bool  # current is one of this connguard's revisions (or None)
    pending: tuple[str, ...]  # what an upgrade to head applies, oldest first

    @property
    def state(self) -> str:
        if not self.known:
            return "newer"
        if self.current is None:
            return "empty"
        return "behind" if self.pending else "current"

    def error(self) -> SchemaError | None:
        """Why a server may not run on this schema as it is (None: it may)."""
        if self.state == "newer":
            return SchemaTooNew(
                f"the database schema is at revision {self.current!r}, newer than this connguard "
                f"(which knows up to {self.head!r}); upgrade connguard or use another database")
        if self.state == "empty":
            return SchemaBehind(f"the database has no connguard schema (this connguard's is at revision "
                                f"{self.head!r}): {UPGRADE_HINT}")
        if self.state == "behind":
            return SchemaBehind(f"the database schema is at revision {self.current!r}, behind this connguard's "
                                f"{self.head!r} ({len(self.pending)} to apply: {', '.join(self.pending)}): "
                                f"{UPGRADE_HINT}")
        return None


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def _script() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _status(conn: Connection, script: ScriptDirectory) -> SchemaStatus:
    current = MigrationContext.configure(conn).get_current_revision()
    head = script.get_current_head()
    assert head is not None, "the migration scripts have no head"
    try:
        script.get_revision(current)
    except CommandError:
        return SchemaStatus(current=current, head=head, known=False, pending=())
    pending = tuple(reversed([s.revision for s in script.iterate_revisions(head, current)]))
    return SchemaStatus(current=current, head=head, known=True, pending=pending)


def schema_status(engine: Engine) -> SchemaStatus:
    with engine.connect() as conn:
        return _status(conn, _script())


def check_current(engine: Engine) -> None:
    """Raise SchemaBehind or SchemaTooNew unless the database is at this connguard's head."""
    error = schema_status(engine).error()
    if error is not None:
        raise error


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection that holds the migration lock (see the module docstring)."""
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            yield conn  # SQLite: the upgrade's BEGIN IMMEDIATE is the lock
            return
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
            log.info("another process is migrating the database: waiting for it")
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        conn.commit()  # the lock is the session's: it outlives this transaction
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            conn.commit()


def migrate(engine: Engine, *, revision: str = "head", on_step: StepCallback | None = None) -> SchemaStatus:
    """Upgrade the schema under the migration lock; refuse when the database is newer than this
    code. Returns the status found under the lock, before upgrading (``pending`` is what ran
    when upgrading to head). ``on_step`` is told of each revision applied, as it completes."""
    script = _script()
    with _migration_lock(engine) as conn:
        status = _status(conn, script)  # in the upgrade's transaction (SQLite: under its lock)
        error = status.error()
        if isinstance(error, SchemaTooNew):
            raise error
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        if on_step is not None:
            started = [time.monotonic()]

            def on_version_apply(*, ctx, step, heads, run_args) -> None:  # noqa: ANN001 - Alembic's hook
                now = time.monotonic()
                down = step.down_revision_ids[0] if step.down_revision_ids else None
                on_step(down, step.up_revision_id, (step.up_revision.doc or "").strip(), now - started[0])
                started[0] = now

            cfg.attributes["on_version_apply"] = on_version_apply
        command.upgrade(cfg, revision)
        if conn.in_transaction():
            conn.commit()
    return status
