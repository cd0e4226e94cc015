"""``/v2.0/agents`` (Neutron-like, admin only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from connguard.db.models import Agent
from connguard.db.services import hosts as svc
from connguard.server.deps import CallerDep, SessionDep
from connguard.server.listing import collection, select_fields

router = APIRouter(prefix="/agents", tags=["agents"])
FIELDS = frozenset(svc.agent_public(Agent()))


@router.get("")
def list_agents(request: Request, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return collection(request, "agents", svc.list_agents(session, caller=caller), fields=FIELDS)


@router.get("/{agent_id}")
def show_agent(request: Request, agent_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return {"agent": select_fields(svc.show_agent(session, caller=caller, agent_id=agent_id), request)}
