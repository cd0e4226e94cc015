"""``/v2.0/connguard/events``: bans, unbans, limit exceedances, port errors (read-only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from connguard.db.services import security as svc
from connguard.server.deps import CallerDep, SessionDep
from connguard.server.listing import QueryDep, envelope, select_fields

router = APIRouter(prefix="/connguard/events", tags=["events"])


@router.get("")
def list_events(request: Request, session: SessionDep, caller: CallerDep, query: QueryDep) -> JSONResponse:
    return envelope(request, "events", svc.list_events(session, caller=caller, query=query))


@router.get("/{event_id}")
def show_event(request: Request, event_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return {"event": select_fields(svc.show_event(session, caller=caller, event_id=event_id), request)}
