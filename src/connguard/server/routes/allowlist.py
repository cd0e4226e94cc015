"""``/v2.0/connguard/allowlist``: remotes never limited or banned."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from connguard.db.services import security as svc
from connguard.server.deps import BodyDep, CallerDep, SessionDep, member
from connguard.server.listing import QueryDep, envelope, select_fields

router = APIRouter(prefix="/connguard/allowlist", tags=["allowlist"])


@router.get("")
def list_allowlist(request: Request, session: SessionDep, caller: CallerDep, query: QueryDep) -> JSONResponse:
    return envelope(request, "allowlist", svc.list_allow(session, caller=caller, query=query))


@router.post("", status_code=201)
def create_allowlist_entry(request: Request, session: SessionDep, caller: CallerDep,
                           body: BodyDep) -> dict[str, Any]:
    out = svc.create_allow(session, caller=caller, body=member(body, "allowlist_entry"),
                    widest=request.app.state.widest_prefix)
    session.commit()
    return {"allowlist_entry": out}


@router.get("/{entry_id}")
def show_allowlist_entry(request: Request, entry_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return {"allowlist_entry": select_fields(svc.show_allow(session, caller=caller, entry_id=entry_id), request)}


@router.delete("/{entry_id}", status_code=204)
def delete_allowlist_entry(entry_id: str, session: SessionDep, caller: CallerDep) -> Response:
    svc.delete_allow(session, caller=caller, entry_id=entry_id)
    session.commit()
    return Response(status_code=204)
