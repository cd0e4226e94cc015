"""QoS rules of every type, and rule-type discovery derived from the model classes."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connguard.db.errors import BadRequest, Conflict, NotFound
from connguard.db.models import QosPolicy, QosRule, new_id, utcnow
from connguard.db.services.audit import changed, record_event
from connguard.db.services.common import Caller, check_revision, iso, validate
from connguard.db.services.listing import ListQuery, Page, page_in_memory
from connguard.db.services.policies import get_policy_row, touch_policy_hosts, writable_policy
from connguard.db.services.rule_types import rule_class
from connguard.db.services.rule_view import rule_public
from connguard.model.objects import MAX_RULES_PER_POLICY
from connguard.model.rules import RULE_TYPES

NOT_FOUND = "QosRuleNotFound"


def _key(rule: Any) -> str:
    return json.dumps(list(rule.key()))


def _policy(session: Session, *, caller: Caller, policy_id: str, write: bool) -> QosPolicy:
    if write:
        return writable_policy(session, caller=caller, policy_id=policy_id)
    return get_policy_row(session, caller=caller, policy_id=policy_id)


def _row(session: Session, *, policy: QosPolicy, rule_type: str, rule_id: str) -> QosRule:
    row = session.get(QosRule, rule_id)
    if row is None or row.policy_id != policy.id or row.type != rule_type:
        raise NotFound(f"QoS rule {rule_id} could not be found in policy {policy.id}", type=NOT_FOUND)
    return row


def _store(session: Session, *, policy: QosPolicy, row: QosRule, params: dict[str, Any]) -> None:
    rule = validate(RULE_TYPES[row.type], params)
    given = set(params) - {"type"}
    with session.no_autoflush:
        row.params = rule.model_dump(mode="json", include=given)
        row.rule_key = _key(rule)
        clash = select(QosRule.id).where(
            QosRule.policy_id == policy.id, QosRule.rule_key == row.rule_key, QosRule.id != row.id
        )
        if session.scalars(clash).first():
            raise Conflict(f"policy {policy.id} already has a {row.type} rule with this direction, scope and match",
                           type="QosRuleExists")
    policy.updated_at = utcnow()  # a rule change is a change of its policy: bump its revision
    try:
        session.flush()
    except IntegrityError:  # a concurrent request added the same rule first
        raise Conflict(f"policy {policy.id} already has such a {row.type} rule", type="QosRuleExists") from None
    touch_policy_hosts(session, policy=policy)


def create_rule(session: Session, *, caller: Caller, policy_id: str, rule_type: str,
                body: dict[str, Any]) -> dict[str, Any]:
    rule_class(rule_type)
    policy = _policy(session, caller=caller, policy_id=policy_id, write=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    count = session.scalar(select(func.count()).select_from(QosRule).where(QosRule.policy_id == policy.id))
    if count >= MAX_RULES_PER_POLICY:  # the state file's bound (connguard.model.objects), same words
        raise BadRequest(f"Invalid input for rules: at most {MAX_RULES_PER_POLICY} rules per policy, "
                         f"policy {policy.id} has {count}")
    row = QosRule(id=new_id(), policy_id=policy.id, type=rule_type, params={}, rule_key="")
    session.add(row)
    _store(session, policy=policy, row=row, params=body)
    record_event(session, event_type="rule_created", project_id=policy.project_id, caller=caller, rule_id=row.id,
                 message=f"{rule_type} rule {row.id} created in policy {policy.id}")
    return rule_public(row)


COMMON = ("id", "qos_policy_id", "revision_number", "created_at", "updated_at")


def rule_fields(rule_type: str) -> frozenset[str]:
    return frozenset(rule_class(rule_type).model_fields) | frozenset(COMMON)


def list_rules(session: Session, *, caller: Caller, policy_id: str, rule_type: str,
               query: ListQuery = ListQuery()) -> Page:
    """One policy's rules of one type. Their fields are the model's, with defaults computed by
    the model class, so the query runs over the loaded rows (a policy has a handful)."""
    fields = rule_fields(rule_type)
    policy = _policy(session, caller=caller, policy_id=policy_id, write=False)
    q = select(QosRule).where(QosRule.policy_id == policy.id, QosRule.type == rule_type)
    rows = [rule_public(r) for r in session.scalars(q.order_by(QosRule.created_at, QosRule.id))]
    return page_in_memory(rows, fields=fields, query=query)


def show_rule(session: Session, *, caller: Caller, policy_id: str, rule_type: str, rule_id: str) -> dict[str, Any]:
    policy = _policy(session, caller=caller, policy_id=policy_id, write=False)
    return rule_public(_row(session, policy=policy, rule_type=rule_type, rule_id=rule_id))


def update_rule(session: Session, *, caller: Caller, policy_id: str, rule_type: str, rule_id: str,
                body: dict[str, Any], if_match: int | None = None) -> dict[str, Any]:
    policy = _policy(session, caller=caller, policy_id=policy_id, write=True)
    row = _row(session, policy=policy, rule_type=rule_type, rule_id=rule_id)
    check_revision(row, if_match)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    row.updated_at = utcnow()
    before = rule_public(row)
    # Merge with what the client gave before; defaults are recomputed by the model class.
    _store(session, policy=policy, row=row, params={**row.params, **body})
    after = rule_public(row)
    record_event(session, event_type="rule_updated", project_id=policy.project_id, caller=caller, rule_id=row.id,
                 message=f"{rule_type} rule {row.id} of policy {policy.id} updated: "
                         f"{changed(before, {k: v for k, v in after.items() if k not in COMMON})}")
    return after


def delete_rule(session: Session, *, caller: Caller, policy_id: str, rule_type: str, rule_id: str,
                if_match: int | None = None) -> None:
    policy = _policy(session, caller=caller, policy_id=policy_id, write=True)
    row = _row(session, policy=policy, rule_type=rule_type, rule_id=rule_id)
    check_revision(row, if_match)
    record_event(session, event_type="rule_deleted", project_id=policy.project_id, caller=caller, rule_id=row.id,
                 message=f"{rule_type} rule {row.id} deleted from policy {policy.id}")
    session.delete(row)
    policy.updated_at = utcnow()
    session.flush()
    touch_policy_hosts(session, policy=policy)
