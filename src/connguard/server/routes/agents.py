"""``/v2.0/agents`` (Neutron-like, admin only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from connguard.db.services import hosts as svc
from connguard.server.deps import CallerDep, SessionDep
from connguard.server.listing import QueryDep, envelope, select_fields

router = APIRouter(prefix="/agents", tags=["agents"])


@router.get("")
def list_agents(request: Request, session: SessionDep, caller: CallerDep, query: QueryDep) -> JSONResponse:
    return envelope(request, "agents", svc.list_agents(session, caller=caller, query=query))


@router.get("/{agent_id}")
def show_agent(request: Request, agent_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return {"agent": select_fields(svc.show_agent(session, caller=caller, agent_id=agent_id), request)}
