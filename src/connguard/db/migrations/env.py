"""Alembic environment. ``connguard.db.schema.migrate`` passes the connection that holds the
migration lock (``attributes["connection"]``) and a progress hook; other callers (tests'
downgrades) pass only the engine."""

from alembic import context

from connguard.db.models import Base

config = context.config


def _run(connection) -> None:  # noqa: ANN001
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      on_version_apply=config.attributes.get("on_version_apply"))
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


if config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    with config.attributes["engine"].connect() as conn:
        _run(conn)
