"""Alembic migrations of the server database (run by ``connguard.db.migrate``)."""
