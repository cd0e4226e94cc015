"""The server's database: SQLAlchemy models (``models``), engine/session set-up and migrations
(``session``; Alembic scripts ship inside the package under ``migrations``), and the service
layer (``services``: keyword-only data-access functions) that both the HTTP routes and the
bootstrap CLI call.

Invariants:
- every write happens inside one transaction that the caller commits; a failed request writes
  nothing;
- mutable rows carry ``revision_number`` (SQLAlchemy's version counter: an UPDATE that lost a
  race matches no row and fails instead of overwriting);
- every change to what a host must enforce bumps that host's revision in ``host_revisions``.

This package imports nothing on import, so the CLI stays quick to start.
"""
