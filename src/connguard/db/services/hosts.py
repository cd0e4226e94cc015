"""The agent channel: per-host desired state (revisioned) and agents (reports: ``reports``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import String, cast, literal_column, or_, select
from sqlalchemy.orm import Session

from connguard.db.errors import NotAuthorized, NotFound
from connguard.db.models import Agent, AllowlistEntry, Ban, HostRevision, Port, QosPolicy, utcnow
from connguard.db.services.common import Caller, aware, iso
from connguard.db.services.listing import Col, Columns, ListQuery, Page, page
from connguard.db.services.policies import present_policies
from connguard.db.services.ports import WITH_EFFECTIVE, port_public
from connguard.db.services.security import allow_public, ban_public

AGENT_DOWN_SECONDS = 75  # Neutron's agent_down_time


def check_host_access(caller: Caller, host: str) -> None:
    if caller.is_admin or (caller.role == "agent" and caller.host == host):
        return
    raise NotAuthorized(f"this token may not use the channel of host {host}")


def host_state(session: Session, *, caller: Caller, host: str) -> dict[str, Any]:
    """Everything ``host`` must enforce, with the revision it corresponds to: six queries
    whatever the number of ports (revision, ports with their effective policy, policies,
    their rules, allowlist, bans)."""
    check_host_access(caller, host)
    return host_states(session, [host])[host]


def host_states(session: Session, hosts: list[str]) -> dict[str, dict[str, Any]]:
    """``host_state`` of several hosts at once, for the server's watch (server/watch.py): the
    same six queries for all of them, and each policy, allowlist entry and ban presented once,
    so that a change every host sees (a cloud-wide ban) costs one read, not one per host.
    The caller has checked access."""
    hosts = sorted(set(hosts))
    revisions = dict(session.execute(select(HostRevision.host, HostRevision.revision)
                                     .where(HostRevision.host.in_(hosts))).all())
    rows = session.execute(WITH_EFFECTIVE.where(Port.host_id.in_(hosts))
                           .order_by(Port.host_id, Port.interface_name)).all()
    by_host: dict[str, list] = {h: [] for h in hosts}
    for port, pid in rows:
        by_host[port.host_id].append((port, pid))
    wanted = {pid for _, pid in rows if pid}
    policies = list(session.scalars(select(QosPolicy).where(QosPolicy.id.in_(wanted)).order_by(QosPolicy.id)))
    presented = dict(zip([p.id for p in policies], present_policies(session, policies)))
    projects = sorted({p.project_id for p, _ in rows})
    port_ids = [p.id for p, _ in rows]
    allow = list(session.scalars(
        select(AllowlistEntry)
        .where(or_(AllowlistEntry.project_id.is_(None), AllowlistEntry.project_id.in_(projects)))
        .order_by(AllowlistEntry.remote_ip_prefix, AllowlistEntry.id)
    ))
    now = utcnow()
    bans = list(session.scalars(
        select(Ban)
        .where(or_(Ban.expires_at.is_(None), Ban.expires_at > now))
        .where(or_(Ban.scope == "cloud", Ban.project_id.in_(projects), Ban.port_id.in_(port_ids)))
        .order_by(Ban.ip_address, Ban.id)
    ))
    allow_out = [(a, allow_public(a)) for a in allow]
    bans_out = [(b, ban_public(b)) for b in bans]
    out = {}
    for host in hosts:
        mine = by_host[host]
        ids = {p.id for p, _ in mine}
        projs = {p.project_id for p, _ in mine}
        out[host] = {
            "host": host,
            "revision": revisions.get(host, 0),
            "ports": [port_public(port, pid) for port, pid in mine],
            "policies": [presented[i] for i in sorted({pid for _, pid in mine if pid})],
            "allowlist": [a for row, a in allow_out if row.project_id is None or row.project_id in projs],
            "bans": [b for row, b in bans_out
                     if (row.scope == "cloud" or row.project_id in projs or row.port_id in ids)
                     and (row.scope != "port" or row.port_id in ids)],
        }
    return out


def agent_public(agent: Agent) -> dict[str, Any]:
    beat = aware(agent.heartbeat_timestamp)
    return {"id": agent.id, "agent_type": agent.agent_type, "binary": "connguard-agent", "host": agent.host,
            "alive": beat is not None and utcnow() - beat < timedelta(seconds=AGENT_DOWN_SECONDS),
            "admin_state_up": agent.admin_state_up, "heartbeat_timestamp": iso(agent.heartbeat_timestamp),
            "started_at": iso(agent.started_at), "configurations": agent.configurations or {},
            # what the agent last reported about its host (docs/api.md, "Agent channel")
            "version": agent.version, "conntrack_count": agent.conntrack_count,
            "conntrack_max": agent.conntrack_max, "apply_latency_seconds": agent.apply_latency_seconds,
            "apply_errors_total": agent.apply_errors_total, "last_apply_error": agent.last_apply_error,
            "queue_overflow_total": agent.queue_overflow_total,
            "last_full_report_at": iso(agent.last_full_report_at)}


def _agent_columns() -> Columns:
    alive = Agent.heartbeat_timestamp > utcnow() - timedelta(seconds=AGENT_DOWN_SECONDS)
    return {
        "id": Col(Agent.id), "agent_type": Col(Agent.agent_type), "binary": Col(cast(literal_column("'connguard-agent'"), String)),
        "host": Col(Agent.host), "alive": Col(alive, "bool"), "admin_state_up": Col(Agent.admin_state_up, "bool"),
        "heartbeat_timestamp": Col(Agent.heartbeat_timestamp, "time"), "started_at": Col(Agent.started_at, "time"),
        "configurations": Col(None), "version": Col(Agent.version),
        "conntrack_count": Col(Agent.conntrack_count, "int", nullable=True),
        "conntrack_max": Col(Agent.conntrack_max, "int", nullable=True), "apply_latency_seconds": Col(None),
        "apply_errors_total": Col(Agent.apply_errors_total, "int"), "last_apply_error": Col(Agent.last_apply_error),
        "queue_overflow_total": Col(Agent.queue_overflow_total, "int"),
        "last_full_report_at": Col(Agent.last_full_report_at, "time", nullable=True),
    }


def list_agents(session: Session, *, caller: Caller, query: ListQuery = ListQuery()) -> Page:
    if not caller.is_admin:
        raise NotAuthorized("only an admin may list agents")
    return page(session, select(Agent), columns=_agent_columns(), query=query, default_order=(Agent.host, Agent.id),
                present=lambda rows: [agent_public(r[0]) for r in rows])


def show_agent(session: Session, *, caller: Caller, agent_id: str) -> dict[str, Any]:
    if not caller.is_admin:
        raise NotAuthorized("only an admin may show agents")
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id} could not be found", type="AgentNotFound")
    return agent_public(agent)
