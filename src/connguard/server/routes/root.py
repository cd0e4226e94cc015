"""``/`` (Neutron's version document), ``/v2.0`` and its extensions, ``/healthz``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

router = APIRouter()

# Extensions a Neutron client may look for before using QoS.
EXTENSIONS = [
    ("qos", "Quality of Service", "Connection-abuse protection policies and rules (connguard)"),
    ("qos-rule-type-details", "Details of QoS rule types", "Supported parameters of each rule type"),
    ("qos-default", "QoS default policy", "is_default on QoS policies"),
    ("standard-attr-revisions", "Resource revision numbers", "revision_number on resources"),
    ("revision-if-match", "If-Match constraints based on revision_number", "If-Match: revision_number=N"),
    ("pagination", "Pagination support", "limit and marker"),
    ("sorting", "Sorting support", "sort_key and sort_dir"),
    ("binding", "Port Binding", "binding:host_id"),
]


def _links(request: Request, path: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": str(request.base_url).rstrip("/") + path}]


@router.get("/", tags=["discovery"])
def versions(request: Request) -> dict[str, Any]:
    return {"versions": [{"id": "v2.0", "status": "CURRENT", "links": _links(request, "/v2.0/")}]}


@router.get("/v2.0", tags=["discovery"])
@router.get("/v2.0/", tags=["discovery"], include_in_schema=False)
def resources(request: Request) -> dict[str, Any]:
    names = ["qos/policies", "qos/rule-types", "ports", "agents", "connguard/bans", "connguard/allowlist",
             "connguard/events"]
    return {"resources": [{"name": n, "collection": n, "links": _links(request, f"/v2.0/{n}")} for n in names]}


@router.get("/v2.0/extensions", tags=["discovery"])
def extensions() -> dict[str, Any]:
    return {"extensions": [{"alias": a, "name": n, "description": d, "links": [], "updated": "2026-01-01T00:00:00-00:00"}
                           for a, n, d in EXTENSIONS]}


@router.get("/healthz", tags=["discovery"])
def healthz(request: Request) -> dict[str, Any]:
    with request.app.state.sessions() as session:
        session.execute(text("SELECT 1"))
        session.rollback()
    # How long-polls learn of writes by other server processes: "listening" (PostgreSQL
    # LISTEN/NOTIFY connected) or "polling" (re-read every second: SQLite, or the listener down).
    listener = getattr(request.app.state, "listener", None)
    return {"status": "ok", "wakeups": "listening" if listener is not None and listener.connected.is_set()
            else "polling"}
