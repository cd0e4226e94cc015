"""The app factory."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from connguard import __version__
from connguard.db.services.security import DEFAULT_WIDEST, WidestPrefix
from connguard.db.session import check_current, make_engine, migrate, session_factory
from connguard.server import docs, errors, metrics, report_metrics
from connguard.server.authcache import CallerCache
from connguard.server.notify import Notifier, PgListener
from connguard.server.watch import HostWatch
from connguard.server.routes import API_ROUTERS, ROOT_ROUTER


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    freeze_startup_heap()
    listener = None
    if app.state.engine.dialect.name == "postgresql":  # other server processes' writes wake us too
        listener = PgListener(app.state.engine, app.state.notifier)
        listener.start()
    app.state.listener = listener
    try:
        yield
    finally:
        if listener is not None:
            listener.stop()


def freeze_startup_heap() -> None:
    """Move everything alive at start-up (modules, models, the app) out of the collector's
    reach: a full collection otherwise walks it all, 40-50 ms that land on some request
    (the p99 of listings; see docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


def create_app(db_url: str, *, run_migrations: bool = True, require_current: bool = False,
               widest_prefix: WidestPrefix = DEFAULT_WIDEST) -> FastAPI:
    """Build the API over the database at ``db_url``, migrating it first (under the migration
    lock) unless told not to; with ``require_current`` and no migration, refuse a database not
    at this code's schema. Raises ``connguard.db.session.SchemaTooNew`` when the database is
    newer than the code, ``SchemaBehind`` when it is behind and may not be migrated.
    ``widest_prefix``: the widest ban or cloud-wide allowlist prefix taken without ``force``."""
    engine = make_engine(db_url)
    try:
        if run_migrations:
            migrate(engine)
        elif require_current:
            check_current(engine)
    except Exception:
        engine.dispose()
        raise
    # docs_url/redoc_url None: FastAPI's own pages load their scripts from a CDN (server/docs.py)
    app = FastAPI(title="connguard", version=__version__, lifespan=_lifespan, docs_url=None, redoc_url=None,
                  description="Connection-abuse protection for cloud VMs; Neutron-compatible REST API.")
    app.state.engine = engine
    app.state.widest_prefix = widest_prefix
    app.state.sessions = session_factory(engine)
    app.state.notifier = Notifier()
    app.state.notifier.watch(app.state.sessions)
    app.state.callers = CallerCache()
    app.state.callers.watch(app.state.sessions)
    app.state.watch = HostWatch(app.state.sessions, app.state.notifier,
                                closing=lambda: bool(getattr(app.state, "closing", False)))
    errors.install(app)
    docs.install(app)
    metrics.install(app)
    report_metrics.install(app)
    app.include_router(ROOT_ROUTER)
    for router in API_ROUTERS:
        app.include_router(router, prefix="/v2.0")
    return app
