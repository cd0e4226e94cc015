"""QoS policies: create, read, update, delete, and which policy a port effectively gets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, aliased

from connguard.db.errors import Conflict, NotAuthorized
from connguard.db.models import Port, QosPolicy, QosRule, utcnow
from connguard.db.services.audit import changed, record_event
from connguard.db.services.common import (
    Caller,
    check_keys,
    check_revision,
    get_or_404,
    iso,
    touch_hosts,
    touch_project,
    validate,
)
from connguard.db.services.listing import Col, Columns, ListQuery, Page, page
from connguard.db.services.rule_view import rule_public
from connguard.db.services.schemas import POLICY_MUTABLE, PolicyCreate

NOT_FOUND = "QosPolicyNotFound"


def policy_public(policy: QosPolicy, rules: list[QosRule]) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "project_id": policy.project_id,
        "tenant_id": policy.project_id,
        "shared": policy.shared,
        "is_default": policy.is_default,
        "enforcement": policy.enforcement,
        "rules": [rule_public(r) for r in rules],
        "tags": list(policy.tags or []),
        "revision_number": policy.revision_number,
        "created_at": iso(policy.created_at),
        "updated_at": iso(policy.updated_at),
    }


def _rules_of(session: Session, policy_ids: list[str]) -> dict[str, list[QosRule]]:
    out: dict[str, list[QosRule]] = {pid: [] for pid in policy_ids}
    if policy_ids:
        q = select(QosRule).where(QosRule.policy_id.in_(policy_ids)).order_by(QosRule.created_at, QosRule.id)
        for rule in session.scalars(q):
            out[rule.policy_id].append(rule)
    return out


def get_policy_row(session: Session, *, caller: Caller, policy_id: str) -> QosPolicy:
    return get_or_404(session, QosPolicy, policy_id, caller=caller, not_found=NOT_FOUND,
                      what="QoS policy", shared_attr="shared")


def writable_policy(session: Session, *, caller: Caller, policy_id: str) -> QosPolicy:
    policy = get_policy_row(session, caller=caller, policy_id=policy_id)
    caller.check_write(policy.project_id, what="QoS policy", shared=policy.shared, not_found=NOT_FOUND)
    return policy


def show_policy(session: Session, *, caller: Caller, policy_id: str) -> dict[str, Any]:
    policy = get_policy_row(session, caller=caller, policy_id=policy_id)
    return policy_public(policy, _rules_of(session, [policy.id])[policy.id])


COLUMNS: Columns = {
    "id": Col(QosPolicy.id), "name": Col(QosPolicy.name), "description": Col(QosPolicy.description),
    "project_id": Col(QosPolicy.project_id), "tenant_id": Col(QosPolicy.project_id),
    "shared": Col(QosPolicy.shared, "bool"), "is_default": Col(QosPolicy.is_default, "bool"),
    "enforcement": Col(QosPolicy.enforcement), "rules": Col(None), "tags": Col(QosPolicy.tags, "list"),
    "revision_number": Col(QosPolicy.revision_number, "int"), "created_at": Col(QosPolicy.created_at, "time"),
    "updated_at": Col(QosPolicy.updated_at, "time"),
}


def present_policies(session: Session, policies: list[QosPolicy]) -> list[dict[str, Any]]:
    rules = _rules_of(session, [p.id for p in policies])
    return [policy_public(p, rules[p.id]) for p in policies]


def list_policies(session: Session, *, caller: Caller, query: ListQuery = ListQuery()) -> Page:
    """The policies the caller sees (its project's and shared ones; an admin all): one
    query for the page, one for the page's rules."""
    q = select(QosPolicy)
    if not caller.is_admin:
        q = q.where(or_(QosPolicy.project_id == caller.project_id, QosPolicy.shared))
    return page(session, q, columns=COLUMNS, query=query, default_order=(QosPolicy.created_at, QosPolicy.id),
                present=lambda rows: present_policies(session, [r[0] for r in rows]))


def _check_default(session: Session, *, caller: Caller, policy: QosPolicy) -> None:
    if policy.shared and not caller.is_admin:
        raise NotAuthorized("only an admin may share a QoS policy")
    if not policy.is_default:
        return
    others = select(QosPolicy.id).where(QosPolicy.is_default.is_(True), QosPolicy.id != policy.id)
    with session.no_autoflush:  # check before the unique index would refuse the flush
        if session.scalars(others.where(QosPolicy.project_id == policy.project_id)).first():
            raise Conflict(f"project {policy.project_id} already has a default QoS policy",
                           type="QosPolicyDefaultExists")
        if policy.shared and session.scalars(others.where(QosPolicy.shared.is_(True))).first():
            raise Conflict("the cloud already has a default QoS policy (shared and is_default)",
                           type="QosPolicyDefaultExists")


def touch_policy_hosts(session: Session, *, policy: QosPolicy, default_too: bool = False) -> None:
    """Bump every host whose ports may enforce ``policy``."""
    if policy.is_default or default_too:
        touch_project(session, project_id=None if policy.shared else policy.project_id)
    else:
        touch_hosts(session, hosts=session.scalars(select(Port.host_id).where(Port.qos_policy_id == policy.id)))


def create_policy(session: Session, *, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    caller.require_writer()
    body = dict(body)
    project_id = caller.target_project(body)
    data = validate(PolicyCreate, body)
    policy = QosPolicy(project_id=project_id, **data.model_dump())
    _check_default(session, caller=caller, policy=policy)
    session.add(policy)
    session.flush()
    record_event(session, event_type="policy_created", project_id=project_id, caller=caller,
                 message=f"policy {policy.name!r} ({policy.id}) created")
    if policy.is_default:
        touch_policy_hosts(session, policy=policy)
    return policy_public(policy, [])


def update_policy(session: Session, *, caller: Caller, policy_id: str, body: dict[str, Any],
                  if_match: int | None = None) -> dict[str, Any]:
    policy = writable_policy(session, caller=caller, policy_id=policy_id)
    check_revision(policy, if_match)
    check_keys(body, POLICY_MUTABLE, what="a QoS policy")
    current = {k: getattr(policy, k) for k in POLICY_MUTABLE}
    data = validate(PolicyCreate, {**current, **body}).model_dump()
    was_default, was_shared = policy.is_default, policy.shared
    for key, value in data.items():
        setattr(policy, key, value)
    _check_default(session, caller=caller, policy=policy)
    policy.updated_at = utcnow()
    session.flush()
    record_event(session, event_type="policy_updated", project_id=policy.project_id, caller=caller,
                 message=f"policy {policy.name!r} ({policy.id}) updated: {changed(current, data)}")
    touch_policy_hosts(session, policy=policy, default_too=was_default)
    if was_shared and was_default:
        touch_project(session, project_id=None)
    return show_policy(session, caller=caller, policy_id=policy_id)


def delete_policy(session: Session, *, caller: Caller, policy_id: str, if_match: int | None = None) -> None:
    policy = writable_policy(session, caller=caller, policy_id=policy_id)
    check_revision(policy, if_match)
    in_use = session.scalars(select(Port.id).where(Port.qos_policy_id == policy.id).limit(1)).first()
    if in_use:
        raise Conflict(f"QoS policy {policy_id} is used by port {in_use}", type="QosPolicyInUse")
    record_event(session, event_type="policy_deleted", project_id=policy.project_id, caller=caller,
                 message=f"policy {policy.name!r} ({policy.id}) deleted")
    touch_policy_hosts(session, policy=policy)
    session.delete(policy)
    session.flush()


def _effective_policy_id() -> ColumnElement[str | None]:
    own, cloud = aliased(QosPolicy), aliased(QosPolicy)
    project_default = (select(own.id).where(own.project_id == Port.project_id, own.is_default)
                       .order_by(own.created_at).limit(1).correlate(Port).scalar_subquery())
    cloud_default = (select(cloud.id).where(cloud.is_default, cloud.shared)
                     .order_by(cloud.created_at).limit(1).scalar_subquery())
    return func.coalesce(Port.qos_policy_id, project_default, cloud_default)


# A port's effective policy, in SQL (selected with the port row, so a page of ports costs one
# query): its own policy, else its project's default (the partial unique index finds it), else
# the cloud default (an uncorrelated subquery, evaluated once per statement).
EFFECTIVE_POLICY_ID = _effective_policy_id()
