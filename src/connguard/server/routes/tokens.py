"""``/v2.0/connguard/tokens`` (admin only): the secret is returned once, on creation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from connguard.db.models import Token
from connguard.db.services import tokens as svc
from connguard.db.services.common import check_keys
from connguard.server.deps import BodyDep, CallerDep, SessionDep, member
from connguard.server.listing import in_memory

router = APIRouter(prefix="/connguard/tokens", tags=["tokens"])
FIELDS = frozenset(svc.token_public(Token()))


@router.get("")
def list_tokens(request: Request, session: SessionDep, caller: CallerDep) -> JSONResponse:
    return in_memory(request, "tokens", svc.list_tokens(session, caller=caller), fields=FIELDS)


@router.post("", status_code=201)
def create_token(session: SessionDep, caller: CallerDep, body: BodyDep) -> dict[str, Any]:
    data = member(body, "token")
    check_keys(data, ("project_id", "role", "host", "description", "expires_at"), what="a token")
    secret, out = svc.create_token(session, caller=caller, project_id=str(data.get("project_id") or ""),
                                   role=str(data.get("role") or ""), host=data.get("host"),
                                   description=str(data.get("description") or ""),
                                   expires_at=data.get("expires_at"))
    session.commit()
    return {"token": {**out, "token": secret}}


@router.delete("/{token_id}", status_code=204)
def revoke_token(token_id: str, session: SessionDep, caller: CallerDep) -> Response:
    svc.revoke_token(session, token_id=token_id, caller=caller)
    session.commit()
    return Response(status_code=204)
