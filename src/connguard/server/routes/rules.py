"""``/v2.0/qos/policies/{policy_id}/<type>_rules``: one sub-collection per rule type of
``connguard.model.RULE_TYPES``, all served by the same handlers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from connguard.db.services import rules as svc
from connguard.model.rules import RULE_TYPES
from connguard.server.deps import BodyDep, CallerDep, IfMatchDep, SessionDep, member
from connguard.server.listing import QueryDep, envelope, select_fields

router = APIRouter(prefix="/qos/policies/{policy_id}", tags=["qos rules"])


def _add(rule_type: str, cls: type) -> None:
    coll, one = f"{rule_type}_rules", f"{rule_type}_rule"
    body_schema = {"content": {"application/json": {"schema": {
        "type": "object", "properties": {one: cls.model_json_schema()}, "required": [one]}}}}

    def list_rules(request: Request, policy_id: str, session: SessionDep, caller: CallerDep,
                   query: QueryDep) -> JSONResponse:
        return envelope(request, coll, svc.list_rules(session, caller=caller, policy_id=policy_id,
                                                      rule_type=rule_type, query=query))

    def create_rule(policy_id: str, session: SessionDep, caller: CallerDep, body: BodyDep) -> dict[str, Any]:
        out = svc.create_rule(session, caller=caller, policy_id=policy_id, rule_type=rule_type,
                              body=member(body, one))
        session.commit()
        return {one: out}

    def show_rule(request: Request, policy_id: str, rule_id: str, session: SessionDep,
                  caller: CallerDep) -> dict[str, Any]:
        out = svc.show_rule(session, caller=caller, policy_id=policy_id, rule_type=rule_type, rule_id=rule_id)
        return {one: select_fields(out, request)}

    def update_rule(policy_id: str, rule_id: str, session: SessionDep, caller: CallerDep, body: BodyDep,
                    if_match: IfMatchDep) -> dict[str, Any]:
        out = svc.update_rule(session, caller=caller, policy_id=policy_id, rule_type=rule_type, rule_id=rule_id,
                              body=member(body, one), if_match=if_match)
        session.commit()
        return {one: out}

    def delete_rule(policy_id: str, rule_id: str, session: SessionDep, caller: CallerDep,
                    if_match: IfMatchDep) -> Response:
        svc.delete_rule(session, caller=caller, policy_id=policy_id, rule_type=rule_type, rule_id=rule_id,
                        if_match=if_match)
        session.commit()
        return Response(status_code=204)

    router.add_api_route(f"/{coll}", list_rules, methods=["GET"], name=f"list_{coll}")
    router.add_api_route(f"/{coll}", create_rule, methods=["POST"], status_code=201, name=f"create_{one}",
                         openapi_extra={"requestBody": body_schema})
    router.add_api_route(f"/{coll}/{{rule_id}}", show_rule, methods=["GET"], name=f"show_{one}")
    router.add_api_route(f"/{coll}/{{rule_id}}", update_rule, methods=["PUT"], name=f"update_{one}")
    router.add_api_route(f"/{coll}/{{rule_id}}", delete_rule, methods=["DELETE"], status_code=204,
                         name=f"delete_{one}")


for _type, _cls in RULE_TYPES.items():
    _add(_type, _cls)
