"""``/v2.0/ports``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from connguard.db.services import ports as svc
from connguard.server.deps import BodyDep, CallerDep, IfMatchDep, SessionDep, member
from connguard.server.listing import QueryDep, envelope, select_fields

router = APIRouter(prefix="/ports", tags=["ports"])


@router.get("")
def list_ports(request: Request, session: SessionDep, caller: CallerDep, query: QueryDep) -> JSONResponse:
    return envelope(request, "ports", svc.list_ports(session, caller=caller, query=query))


@router.post("", status_code=201)
def create_port(session: SessionDep, caller: CallerDep, body: BodyDep) -> dict[str, Any]:
    out = svc.create_port(session, caller=caller, body=member(body, "port"))
    session.commit()
    return {"port": out}


@router.get("/{port_id}")
def show_port(request: Request, port_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return {"port": select_fields(svc.show_port(session, caller=caller, port_id=port_id), request)}


@router.get("/{port_id}/statistics")
def port_statistics(port_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """connguard's counters and offenders of the port, from its agent's reports."""
    return {"statistics": svc.port_statistics(session, caller=caller, port_id=port_id)}


@router.put("/{port_id}")
def update_port(port_id: str, session: SessionDep, caller: CallerDep, body: BodyDep,
                if_match: IfMatchDep) -> dict[str, Any]:
    out = svc.update_port(session, caller=caller, port_id=port_id, body=member(body, "port"), if_match=if_match)
    session.commit()
    return {"port": out}


@router.delete("/{port_id}", status_code=204)
def delete_port(port_id: str, session: SessionDep, caller: CallerDep, if_match: IfMatchDep) -> Response:
    svc.delete_port(session, caller=caller, port_id=port_id, if_match=if_match)
    session.commit()
    return Response(status_code=204)
