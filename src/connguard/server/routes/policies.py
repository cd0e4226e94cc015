"""``/v2.0/qos/policies``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from connguard.db.services import policies as svc
from connguard.server.deps import BodyDep, CallerDep, IfMatchDep, SessionDep, member
from connguard.server.listing import QueryDep, envelope, select_fields

router = APIRouter(prefix="/qos/policies", tags=["qos policies"])


@router.get("")
def list_policies(request: Request, session: SessionDep, caller: CallerDep, query: QueryDep) -> JSONResponse:
    return envelope(request, "policies", svc.list_policies(session, caller=caller, query=query))


@router.post("", status_code=201)
def create_policy(session: SessionDep, caller: CallerDep, body: BodyDep) -> dict[str, Any]:
    out = svc.create_policy(session, caller=caller, body=member(body, "policy"))
    session.commit()
    return {"policy": out}


@router.get("/{policy_id}")
def show_policy(request: Request, policy_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return {"policy": select_fields(svc.show_policy(session, caller=caller, policy_id=policy_id), request)}


@router.put("/{policy_id}")
def update_policy(policy_id: str, session: SessionDep, caller: CallerDep, body: BodyDep,
                  if_match: IfMatchDep) -> dict[str, Any]:
    out = svc.update_policy(session, caller=caller, policy_id=policy_id, body=member(body, "policy"),
                            if_match=if_match)
    session.commit()
    return {"policy": out}


@router.delete("/{policy_id}", status_code=204)
def delete_policy(policy_id: str, session: SessionDep, caller: CallerDep, if_match: IfMatchDep) -> Response:
    svc.delete_policy(session, caller=caller, policy_id=policy_id, if_match=if_match)
    session.commit()
    return Response(status_code=204)
