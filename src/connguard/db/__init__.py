"""The server's database: SQLAlchemy models, engine/session set-up, Alembic migrations shipped
inside the package, and the service layer (keyword-only data-access functions) that both the
HTTP routes and the bootstrap CLI call.

Invariants:
- every write happens inside one transaction that the caller commits; a failed request writes
  nothing;
- mutable rows carry ``revision_number`` (SQLAlchemy's version counter: an UPDATE that lost a
  race matches no row and fails instead of overwriting);
- every change to what a host must enforce bumps that host's revision in ``host_revisions``.
"""

from connguard.db.session import DEFAULT_BIND, default_db_url, make_engine, migrate, session_factory

__all__ = ["DEFAULT_BIND", "default_db_url", "make_engine", "migrate", "session_factory"]
