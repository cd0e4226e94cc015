"""Prometheus metrics of the API, in a registry per app (tests build many apps): requests by
method, route and status ``code`` (the label name Prometheus' own instrumentation libraries
use), their latency, ``connguard_build_info``, and the standard process (``process_*``: CPU,
memory, open files) and Python (``python_info``, ``python_gc_*``) collectors."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST, GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, Counter, Histogram, Info,
    generate_latest,
)

from connguard import __version__


def install(app: FastAPI) -> None:
    registry = CollectorRegistry()
    # the default registry's collectors describe this process, whichever registry serves them
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    Info("connguard_build", "connguard version serving this API", registry=registry).info({"version": __version__})
    requests = Counter("connguard_api_requests", "API requests", ["method", "route", "code"], registry=registry)
    latency = Histogram("connguard_api_request_seconds", "API request latency", ["method", "route"],
                        registry=registry)
    app.state.metrics_registry = registry

    @app.middleware("http")
    async def _measure(request: Request, call_next):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        if request.url.path.startswith("/v2.0/") and not path.startswith("/v2.0"):
            path = "/v2.0" + path  # routes of included routers carry their path without the prefix
        latency.labels(request.method, path).observe(time.perf_counter() - start)
        requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
