"""``/v2.0/connguard/bans``: active bans; POST bans, DELETE unbans everywhere."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from connguard.db.services import security as svc
from connguard.server.deps import BodyDep, CallerDep, SessionDep, member
from connguard.server.listing import QueryDep, envelope, select_fields

router = APIRouter(prefix="/connguard/bans", tags=["bans"])


@router.get("")
def list_bans(request: Request, session: SessionDep, caller: CallerDep, query: QueryDep) -> JSONResponse:
    return envelope(request, "bans", svc.list_bans(session, caller=caller, query=query))


@router.post("", status_code=201)
def create_ban(request: Request, session: SessionDep, caller: CallerDep, body: BodyDep) -> dict[str, Any]:
    out = svc.create_ban(session, caller=caller, body=member(body, "ban"),
                    widest=request.app.state.widest_prefix)
    session.commit()
    return {"ban": out}


@router.get("/{ban_id}")
def show_ban(request: Request, ban_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return {"ban": select_fields(svc.show_ban(session, caller=caller, ban_id=ban_id), request)}


@router.delete("/{ban_id}", status_code=204)
def delete_ban(ban_id: str, session: SessionDep, caller: CallerDep) -> Response:
    svc.delete_ban(session, caller=caller, ban_id=ban_id)
    session.commit()
    return Response(status_code=204)
