"""Ports (a Neutron subset): ownership, the policy attached, and the effective policy."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connguard.db.errors import BadRequest, Conflict, NotFound
from connguard.db.models import Port, PortCounter, PortObservation, QosPolicy, QosRule, new_id, utcnow
from connguard.db.services.audit import changed, record_event
from connguard.db.services.common import (
    Caller,
    check_keys,
    check_revision,
    get_or_404,
    iso,
    touch_hosts,
    validate,
)
from connguard.db.services.listing import Col, Columns, ListQuery, Page, page
from connguard.db.services.policies import EFFECTIVE_POLICY_ID
from connguard.db.services.schemas import PORT_MUTABLE, PortCreate

NOT_FOUND = "PortNotFound"


def port_public(port: Port, effective_policy_id: str | None) -> dict[str, Any]:
    return {
        "id": port.id,
        "name": port.name,
        "project_id": port.project_id,
        "tenant_id": port.project_id,
        "binding:host_id": port.host_id,
        "mac_address": port.mac_address,
        "fixed_ips": [{"ip_address": ip} for ip in port.fixed_ips or []],
        "device_owner": port.device_owner,
        "status": port.status,
        "status_message": port.status_message,
        "interface_name": port.interface_name,
        "qos_policy_id": port.qos_policy_id,
        "effective_qos_policy_id": effective_policy_id,
        "revision_number": port.revision_number,
        "created_at": iso(port.created_at),
        "updated_at": iso(port.updated_at),
    }


COLUMNS: Columns = {
    "id": Col(Port.id), "name": Col(Port.name), "project_id": Col(Port.project_id),
    "tenant_id": Col(Port.project_id), "binding:host_id": Col(Port.host_id, nullable=True),
    "mac_address": Col(Port.mac_address, nullable=True), "fixed_ips": Col(Port.fixed_ips, "list"),
    "device_owner": Col(Port.device_owner), "status": Col(Port.status),
    "status_message": Col(Port.status_message),
    "interface_name": Col(Port.interface_name), "qos_policy_id": Col(Port.qos_policy_id, nullable=True),
    "effective_qos_policy_id": Col(EFFECTIVE_POLICY_ID, nullable=True),
    "revision_number": Col(Port.revision_number, "int"), "created_at": Col(Port.created_at, "time"),
    "updated_at": Col(Port.updated_at, "time"),
}
WITH_EFFECTIVE = select(Port, EFFECTIVE_POLICY_ID)


def _port_row(session: Session, *, caller: Caller, port_id: str) -> Port:
    return get_or_404(session, Port, port_id, caller=caller, not_found=NOT_FOUND, what="port")


def present(session: Session, port: Port) -> dict[str, Any]:
    """The public form of a port just read or written (one query for its effective policy)."""
    return port_public(port, session.scalar(select(EFFECTIVE_POLICY_ID).where(Port.id == port.id)))


def writable_port(session: Session, *, caller: Caller, port_id: str) -> Port:
    port = _port_row(session, caller=caller, port_id=port_id)
    caller.check_write(port.project_id, what="port", not_found=NOT_FOUND)
    return port


DISCOVERED = "connguard:discovered"  # device_owner of ports the server created from an agent's report


def _check_policy(session: Session, *, caller: Caller, port_project: str, policy_id: str | None) -> None:
    """A port may carry its own project's policies and shared ones, nothing else."""
    if policy_id is None:
        return
    policy = session.get(QosPolicy, policy_id)
    if policy is None or not caller.sees(policy.project_id, shared=policy.shared) or not (
        policy.shared or policy.project_id == port_project
    ):
        raise NotFound(f"QoS policy {policy_id} could not be found", type="QosPolicyNotFound")


def _apply(session: Session, *, port: Port, data: dict[str, Any]) -> None:
    port.name = data["name"]
    port.fixed_ips = list(data["fixed_ips"])
    port.host_id = data["binding_host_id"]
    port.mac_address = data["mac_address"]
    port.device_owner = data["device_owner"]
    port.status = data["status"]
    port.qos_policy_id = data["qos_policy_id"]
    port.interface_name = data["interface_name"] or "tap" + port.id[:11]
    with session.no_autoflush:
        clash = select(Port).where(Port.host_id == port.host_id, Port.interface_name == port.interface_name,
                                   Port.id != port.id)
        found = session.scalars(clash).first() if port.host_id is not None else None
        if found is not None and found.device_owner == DISCOVERED and port.device_owner != DISCOVERED \
                and found.project_id == port.project_id:
            # The operator registers the VM's port after the agent discovered its tap (Neutron
            # binds a port when the VM boots): the registration replaces the stand-in.
            # (a statement, not session.delete: the unit of work would insert the new port
            # before deleting this one, and the interface is unique per host)
            session.expunge(found)
            session.execute(delete(Port).where(Port.id == found.id))
            found = None
        if found is not None:
            raise Conflict(f"host {port.host_id} already has a port with interface {port.interface_name}",
                           type="PortInterfaceExists")
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"interface {port.interface_name} is taken on host {port.host_id}",
                       type="PortInterfaceExists") from None


def _audited(port: Port) -> dict[str, Any]:
    """What a port update's event names when it changes (in the API's terms)."""
    return {"name": port.name, "fixed_ips": list(port.fixed_ips or []), "interface_name": port.interface_name,
            "binding:host_id": port.host_id, "mac_address": port.mac_address, "device_owner": port.device_owner,
            "status": port.status, "qos_policy_id": port.qos_policy_id}


def create_port(session: Session, *, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    caller.require_writer()
    body = dict(body)
    project_id = caller.target_project(body)
    port_id = body.pop("id", None) or new_id()
    try:  # a port may keep the id Neutron gave it
        port_id = str(uuid.UUID(str(port_id)))
    except ValueError:
        raise BadRequest(f"Invalid input for id: {port_id!r} is not a UUID") from None
    data = validate(PortCreate, body).model_dump()
    _check_policy(session, caller=caller, port_project=project_id, policy_id=data["qos_policy_id"])
    if session.get(Port, port_id) is not None:
        raise Conflict(f"port {port_id} exists", type="PortExists")
    port = Port(id=port_id, project_id=project_id)
    session.add(port)
    _apply(session, port=port, data=data)
    record_event(session, event_type="port_created", project_id=project_id, caller=caller, port_id=port.id,
                 host=port.host_id, message=f"port {port.id} ({port.interface_name}) created"
                                            f"{f' on host {port.host_id}' if port.host_id else ''}")
    touch_hosts(session, hosts=[port.host_id])
    return present(session, port)


def show_port(session: Session, *, caller: Caller, port_id: str) -> dict[str, Any]:
    row = session.execute(WITH_EFFECTIVE.where(Port.id == port_id)).first()
    if row is None or not caller.sees(row[0].project_id):
        raise NotFound(f"port {port_id} could not be found", type=NOT_FOUND)
    return port_public(*row)


def list_ports(session: Session, *, caller: Caller, query: ListQuery = ListQuery()) -> Page:
    """The caller's project's ports (an admin's: all), one query per page."""
    q = WITH_EFFECTIVE if caller.is_admin else WITH_EFFECTIVE.where(Port.project_id == caller.project_id)
    return page(session, q, columns=COLUMNS, query=query, default_order=(Port.created_at, Port.id),
                present=lambda rows: [port_public(*r) for r in rows])


def update_port(session: Session, *, caller: Caller, port_id: str, body: dict[str, Any],
                if_match: int | None = None) -> dict[str, Any]:
    port = writable_port(session, caller=caller, port_id=port_id)
    check_revision(port, if_match)
    check_keys(body, PORT_MUTABLE, what="a port")
    current = {
        "name": port.name, "fixed_ips": port.fixed_ips, "interface_name": port.interface_name,
        "binding:host_id": port.host_id, "mac_address": port.mac_address, "device_owner": port.device_owner,
        "status": port.status, "qos_policy_id": port.qos_policy_id,
    }
    data = validate(PortCreate, {**current, **body}).model_dump()
    if data["qos_policy_id"] != port.qos_policy_id:
        _check_policy(session, caller=caller, port_project=port.project_id, policy_id=data["qos_policy_id"])
    old_host = port.host_id
    before = _audited(port)
    port.updated_at = utcnow()
    _apply(session, port=port, data=data)
    record_event(session, event_type="port_updated", project_id=port.project_id, caller=caller, port_id=port.id,
                 host=port.host_id, message=f"port {port.id} ({port.interface_name}) updated: "
                                            f"{changed(before, _audited(port))}")
    touch_hosts(session, hosts=[old_host, port.host_id])
    return present(session, port)


def delete_port(session: Session, *, caller: Caller, port_id: str, if_match: int | None = None) -> None:
    port = writable_port(session, caller=caller, port_id=port_id)
    check_revision(port, if_match)
    record_event(session, event_type="port_deleted", project_id=port.project_id, caller=caller, port_id=port.id,
                 host=port.host_id, message=f"port {port.id} ({port.interface_name}) deleted")
    touch_hosts(session, hosts=[port.host_id])
    session.delete(port)
    session.flush()


def port_or_404(session: Session, *, caller: Caller, port_id: str) -> Port:
    port = session.get(Port, port_id)
    if port is None or not caller.sees(port.project_id):
        raise NotFound(f"port {port_id} could not be found", type=NOT_FOUND)
    return port


def port_statistics(session: Session, *, caller: Caller, port_id: str) -> dict[str, Any]:
    """What the port's agent last reported beyond its status: per rule, the server-side totals
    of admitted, refused, would-refuse (monitor mode) and set-full bypasses; the offenders it
    lists (bounded; in enforce mode the sources refused, in monitor mode those that would be)."""
    port = _port_row(session, caller=caller, port_id=port_id)
    rows = session.execute(select(PortCounter, QosRule.type).outerjoin(QosRule, QosRule.id == PortCounter.rule_id)
                           .where(PortCounter.port_id == port.id).order_by(PortCounter.rule_id))
    rules = [{"rule_id": c.rule_id, "rule_type": kind, "admitted": c.admitted, "refused": c.refused,
              "would_refuse": c.would_refuse, "set_full": c.set_full, "updated_at": iso(c.updated_at)}
             for c, kind in rows]
    obs = session.get(PortObservation, port.id)
    return {"port_id": port.id, "status": port.status, "rules": rules,
            "offenders": list(obs.offenders) if obs is not None else [],
            "offenders_updated_at": iso(obs.updated_at) if obs is not None else None}
