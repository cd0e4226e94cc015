"""Allowlist entries, bans and events.

Rails on what one request can do to a whole cloud: a manual ban expires
(``DEFAULT_MANUAL_BAN_SECONDS`` unless the request says how long), and a ban or a cloud-wide
allowlist entry wider than ``WidestPrefix`` (``0.0.0.0/0`` and ``::/0`` always are) needs
``"force": true`` in the body: one typo (``/1`` for ``/31``) would otherwise refuse or exempt
half the internet on every host.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from connguard.db.errors import BadRequest, NotAuthorized, NotFound
from connguard.db.models import AllowlistEntry, Ban, Event, utcnow
from connguard.db.services.audit import record_event
from connguard.db.services.common import Caller, aware, get_or_404, iso, touch_hosts, touch_project, validate
from connguard.db.services.listing import Col, Columns, ListQuery, Page, page
from connguard.db.services.ports import port_or_404
from connguard.db.services.schemas import AllowCreate, BanCreate


# fail2ban's bantime is 10 minutes, CrowdSec's cscli 4 hours: a ban an operator adds by hand is
# meant to outlast one attack wave, and still ends if forgotten.
DEFAULT_MANUAL_BAN_SECONDS = 4 * 3600


@dataclass(frozen=True)
class WidestPrefix:
    """The widest ban or cloud-wide allowlist prefix accepted without ``force`` (configurable:
    ``create_app(widest_prefix=...)``, ``connguard server --widest-prefix 16,32``)."""

    v4: int = 16
    v6: int = 32

    def check(self, prefix: str, *, field: str, force: bool, what: str) -> None:
        net = ipaddress.ip_network(prefix, strict=False)
        limit = self.v4 if net.version == 4 else self.v6
        if net.prefixlen >= limit or force:
            return
        everything = " (every IPv%d address)" % net.version if net.prefixlen == 0 else ""
        raise BadRequest(f"Invalid input for {field}: {net}{everything} is wider than /{limit}; "
                         f"a {what} that wide needs \"force\": true", type="PrefixTooWide")


DEFAULT_WIDEST = WidestPrefix()


def _force(body: dict[str, Any]) -> bool:
    force = body.pop("force", False)
    if not isinstance(force, bool):
        raise BadRequest("Invalid input for force: must be true or false")
    return force


def _visible(q: Any, model: Any, caller: Caller) -> Any:
    if caller.is_admin:
        return q
    return q.where(or_(model.project_id == caller.project_id, model.project_id.is_(None)))


def _cloud_wide(body: dict[str, Any], caller: Caller) -> tuple[bool, str | None]:
    """(cloud-wide?, project) from a body whose project_id may be an explicit null."""
    if "project_id" in body and body["project_id"] is None and "tenant_id" not in body:
        body.pop("project_id")
        if not caller.is_admin:
            raise NotAuthorized("only an admin may create cloud-wide entries (project_id null)")
        return True, None
    return False, caller.target_project(body)


# --- allowlist -------------------------------------------------------------------------------


def allow_public(entry: AllowlistEntry) -> dict[str, Any]:
    return {"id": entry.id, "remote_ip_prefix": entry.remote_ip_prefix, "project_id": entry.project_id,
            "tenant_id": entry.project_id, "description": entry.description,
            "revision_number": entry.revision_number, "created_at": iso(entry.created_at),
            "updated_at": iso(entry.updated_at)}


def create_allow(session: Session, *, caller: Caller, body: dict[str, Any],
                 widest: WidestPrefix = DEFAULT_WIDEST) -> dict[str, Any]:
    caller.require_writer()
    body = dict(body)
    force = _force(body)
    cloud, project_id = _cloud_wide(body, caller)
    data = validate(AllowCreate, body)
    if cloud:  # a project's own entry exempts remotes from its own project's punishment only
        widest.check(data.remote_ip_prefix, field="remote_ip_prefix", force=force, what="cloud-wide allowlist entry")
    entry = AllowlistEntry(project_id=project_id, **data.model_dump())
    session.add(entry)
    session.flush()
    record_event(session, event_type="allowlist_created", project_id=project_id, caller=caller,
                 ip_address=entry.remote_ip_prefix,
                 message=f"allowlist entry {entry.id} for {entry.remote_ip_prefix} created"
                         f"{' (cloud-wide)' if cloud else ''}")
    touch_project(session, project_id=project_id)
    return allow_public(entry)


ALLOW_COLUMNS: Columns = {
    "id": Col(AllowlistEntry.id), "remote_ip_prefix": Col(AllowlistEntry.remote_ip_prefix),
    "project_id": Col(AllowlistEntry.project_id, nullable=True), "tenant_id": Col(AllowlistEntry.project_id, nullable=True),
    "description": Col(AllowlistEntry.description), "revision_number": Col(AllowlistEntry.revision_number, "int"),
    "created_at": Col(AllowlistEntry.created_at, "time"), "updated_at": Col(AllowlistEntry.updated_at, "time"),
}


def list_allow(session: Session, *, caller: Caller, query: ListQuery = ListQuery()) -> Page:
    return page(session, _visible(select(AllowlistEntry), AllowlistEntry, caller), columns=ALLOW_COLUMNS,
                query=query, default_order=(AllowlistEntry.created_at, AllowlistEntry.id),
                present=lambda rows: [allow_public(r[0]) for r in rows])


def show_allow(session: Session, *, caller: Caller, entry_id: str) -> dict[str, Any]:
    return allow_public(get_or_404(session, AllowlistEntry, entry_id, caller=caller,
                                   not_found="AllowlistEntryNotFound", what="allowlist entry"))


def delete_allow(session: Session, *, caller: Caller, entry_id: str) -> None:
    entry = get_or_404(session, AllowlistEntry, entry_id, caller=caller, not_found="AllowlistEntryNotFound",
                       what="allowlist entry")
    caller.check_write(entry.project_id, what="allowlist entry", not_found="AllowlistEntryNotFound")
    record_event(session, event_type="allowlist_deleted", project_id=entry.project_id, caller=caller,
                 ip_address=entry.remote_ip_prefix,
                 message=f"allowlist entry {entry.id} for {entry.remote_ip_prefix} deleted")
    touch_project(session, project_id=entry.project_id)
    session.delete(entry)
    session.flush()


# --- bans ------------------------------------------------------------------------------------


def ban_public(ban: Ban) -> dict[str, Any]:
    return {"id": ban.id, "ip_address": ban.ip_address, "port_id": ban.port_id, "project_id": ban.project_id,
            "tenant_id": ban.project_id, "scope": ban.scope, "origin": ban.origin, "reason": ban.reason,
            "host": ban.host, "created_at": iso(ban.created_at), "expires_at": iso(ban.expires_at),
            "offence_count": ban.offence_count}


def _active(q: Any, now: datetime) -> Any:
    return q.where(or_(Ban.expires_at.is_(None), Ban.expires_at > now))


def _ban_hosts(session: Session, ban: Ban) -> None:
    if ban.host and ban.scope == "port":
        touch_hosts(session, hosts=[ban.host])
    else:
        touch_project(session, project_id=None if ban.scope == "cloud" else ban.project_id)


def create_ban(session: Session, *, caller: Caller, body: dict[str, Any], origin: str = "manual",
               host: str | None = None, widest: WidestPrefix = DEFAULT_WIDEST) -> dict[str, Any]:
    if origin == "manual":
        caller.require_writer()
    body = dict(body)
    force = _force(body)
    cloud, project_id = _cloud_wide(body, caller)
    data = validate(BanCreate, body)
    widest.check(data.ip_address, field="ip_address", force=force, what="ban")
    seconds = data.seconds if data.seconds is not None else \
        DEFAULT_MANUAL_BAN_SECONDS if origin == "manual" else None
    scope = data.scope or ("port" if data.port_id else "cloud" if cloud else "project")
    port = None
    if data.port_id:
        port = port_or_404(session, caller=caller, port_id=data.port_id)
        caller.check_write(port.project_id, what="port", not_found="PortNotFound")
        project_id = port.project_id
    elif scope == "port":
        raise BadRequest("Invalid input for port_id: a port-scoped ban needs the port")
    if scope == "cloud":
        if not caller.is_admin and origin == "manual":
            raise NotAuthorized("only an admin may ban cloud-wide")
        project_id = None
    now = utcnow()
    ban = Ban(ip_address=data.ip_address, port_id=data.port_id, project_id=project_id, scope=scope,
              origin=origin, reason=data.reason, host=host or (port.host_id if port else None),
              created_at=now, expires_at=now + timedelta(seconds=seconds) if seconds else None)
    session.add(ban)
    session.flush()
    record_event(session, event_type="ban", project_id=project_id, port_id=ban.port_id, host=ban.host,
                 caller=caller, ip_address=ban.ip_address,
                 message=f"{origin} ban of {ban.ip_address}: {ban.reason}".strip(": "))
    _ban_hosts(session, ban)
    return ban_public(ban)


# An offence is remembered this long after the ban it caused ended (as the agent's ban book).
RECENT_OFFENCE_SECONDS = 86_400


def _previous_ban(session: Session, *, ip_address: str, scope: str, project_id: str | None,
                  port_id: str, now: datetime) -> Ban | None:
    """The latest ban of ``ip_address`` in the same scope still active or recently ended."""
    q = select(Ban).where(Ban.ip_address == ip_address, Ban.scope == scope)
    if scope == "project":
        q = q.where(Ban.project_id == project_id)
    elif scope == "port":
        q = q.where(Ban.port_id == port_id)
    q = q.where(or_(Ban.expires_at.is_(None), Ban.expires_at > now - timedelta(seconds=RECENT_OFFENCE_SECONDS)))
    return session.scalars(q.order_by(Ban.created_at.desc(), Ban.id).limit(1)).first()


def record_detected_ban(session: Session, *, host: str, port: Any, ip_address: str, share: str,
                        banned_at: datetime, expires_at: datetime, offence_count: int, reason: str,
                        ban_for: Callable[[int], int] | None, now: datetime,
                        caller: Caller | None = None) -> Ban | None:
    """A ban an agent's kernel placed (``caller``: the agent's token, recorded on the event).
    With ``share`` (the rule's) project or cloud it becomes a ban of that scope, in the host
    state of every host holding ports of the scope (their revisions are bumped so their
    long-polls answer at once). Offences count across hosts: a ban of a
    source that already has an active or recent ban in the same scope is offence previous+1,
    and when the rule is known (``ban_for``) the server computes the escalated length, so
    every host, the detecting one included, enforces the same ``expires_at``. A report of a
    source still banned in that scope (a resend, or two hosts detecting it at once) adds no
    offence; it only lengthens the ban when the report's expiry is later. Returns the new
    row, or None when the report changed nothing new."""
    project_id = None if share == "cloud" else port.project_id
    prev = _previous_ban(session, ip_address=ip_address, scope=share, project_id=project_id, port_id=port.id,
                         now=now)
    prev_expiry = aware(prev.expires_at) if prev is not None else None
    if prev is not None and (prev_expiry is None or prev_expiry > now):
        if prev_expiry is not None and expires_at > prev_expiry:
            prev.expires_at = expires_at
            _ban_hosts(session, prev)
        return None
    offence = max(offence_count, prev.offence_count + 1 if prev is not None else 1)
    if ban_for is not None:
        expires_at = max(expires_at, banned_at + timedelta(seconds=ban_for(offence)))
    ban = Ban(ip_address=ip_address, port_id=port.id, project_id=project_id, scope=share, origin="detected",
              reason=reason, host=host, created_at=min(banned_at, now), expires_at=expires_at,
              offence_count=offence)
    session.add(ban)
    session.flush()
    record_event(session, event_type="ban", project_id=port.project_id, port_id=port.id, host=host,
                 caller=caller, ip_address=ip_address, count=offence,
                 message=f"detected ban of {ip_address} (offence {offence}, {share} scope): {reason}".strip(": "))
    _ban_hosts(session, ban)
    return ban


BAN_COLUMNS: Columns = {
    "id": Col(Ban.id), "ip_address": Col(Ban.ip_address), "port_id": Col(Ban.port_id, nullable=True),
    "project_id": Col(Ban.project_id, nullable=True), "tenant_id": Col(Ban.project_id, nullable=True),
    "scope": Col(Ban.scope), "origin": Col(Ban.origin), "reason": Col(Ban.reason),
    "host": Col(Ban.host, nullable=True), "created_at": Col(Ban.created_at, "time"),
    "expires_at": Col(Ban.expires_at, "time", nullable=True), "offence_count": Col(Ban.offence_count, "int"),
}


def list_bans(session: Session, *, caller: Caller, query: ListQuery = ListQuery()) -> Page:
    """Active bans the caller sees."""
    q = _active(_visible(select(Ban), Ban, caller), utcnow())
    return page(session, q, columns=BAN_COLUMNS, query=query, default_order=(Ban.created_at, Ban.id),
                present=lambda rows: [ban_public(r[0]) for r in rows])


def _ban_row(session: Session, *, caller: Caller, ban_id: str) -> Ban:
    ban = get_or_404(session, Ban, ban_id, caller=caller, not_found="BanNotFound", what="ban")
    expires = aware(ban.expires_at)
    if expires is not None and expires <= utcnow():
        raise NotFound(f"ban {ban_id} could not be found", type="BanNotFound")
    return ban


def show_ban(session: Session, *, caller: Caller, ban_id: str) -> dict[str, Any]:
    return ban_public(_ban_row(session, caller=caller, ban_id=ban_id))


def delete_ban(session: Session, *, caller: Caller, ban_id: str) -> None:
    """Unban everywhere: the row goes, and every host that enforced it gets a new revision."""
    ban = _ban_row(session, caller=caller, ban_id=ban_id)
    caller.check_write(ban.project_id, what="ban", not_found="BanNotFound")
    record_event(session, event_type="unban", project_id=ban.project_id, port_id=ban.port_id, host=ban.host,
                 caller=caller, ip_address=ban.ip_address, message=f"unban of {ban.ip_address}")
    _ban_hosts(session, ban)
    session.delete(ban)
    session.flush()


# --- events ----------------------------------------------------------------------------------


def event_public(event: Event) -> dict[str, Any]:
    return {"id": event.id, "event_type": event.event_type, "project_id": event.project_id,
            "tenant_id": event.project_id, "port_id": event.port_id, "rule_id": event.rule_id,
            "host": event.host, "ip_address": event.ip_address, "count": event.count,
            "message": event.message, "created_at": iso(event.created_at),
            "actor_token_id": event.actor_token_id, "actor_project_id": event.actor_project_id,
            "actor_role": event.actor_role, "actor_host": event.actor_host}


EVENT_COLUMNS: Columns = {
    "id": Col(Event.id), "event_type": Col(Event.event_type), "project_id": Col(Event.project_id, nullable=True),
    "tenant_id": Col(Event.project_id, nullable=True), "port_id": Col(Event.port_id, nullable=True),
    "rule_id": Col(Event.rule_id, nullable=True), "host": Col(Event.host, nullable=True),
    "ip_address": Col(Event.ip_address, nullable=True), "count": Col(Event.count, "int"),
    "message": Col(Event.message), "created_at": Col(Event.created_at, "time"),
    "actor_token_id": Col(Event.actor_token_id, nullable=True),
    "actor_project_id": Col(Event.actor_project_id, nullable=True),
    "actor_role": Col(Event.actor_role, nullable=True), "actor_host": Col(Event.actor_host, nullable=True),
}


def list_events(session: Session, *, caller: Caller, query: ListQuery = ListQuery()) -> Page:
    q = select(Event) if caller.is_admin else select(Event).where(Event.project_id == caller.project_id)
    return page(session, q, columns=EVENT_COLUMNS, query=query, default_order=(Event.created_at, Event.id),
                present=lambda rows: [event_public(r[0]) for r in rows])


def show_event(session: Session, *, caller: Caller, event_id: str) -> dict[str, Any]:
    event = session.get(Event, event_id)
    if event is None or not (caller.is_admin or event.project_id == caller.project_id):
        raise NotFound(f"event {event_id} could not be found", type="EventNotFound")
    return event_public(event)
