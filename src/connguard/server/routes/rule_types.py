"""``/v2.0/qos/rule-types``: discovery, parameters derived from the model classes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from connguard.db.services import rule_types as svc
from connguard.server.deps import CallerDep
from connguard.server.listing import in_memory, select_fields

router = APIRouter(prefix="/qos/rule-types", tags=["qos rule types"])


@router.get("")
def list_rule_types(request: Request, _caller: CallerDep) -> JSONResponse:
    return in_memory(request, "rule_types", svc.list_rule_types(), fields=("type",))


@router.get("/{rule_type}")
def show_rule_type(request: Request, rule_type: str, _caller: CallerDep) -> dict[str, Any]:
    return {"rule_type": select_fields(svc.rule_type_public(rule_type, detail=True), request)}
