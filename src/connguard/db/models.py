"""SQLAlchemy models. The migrations under ``migrations/versions`` must match these exactly
(tests/api/test_migrations.py compares them with Alembic's autogenerate)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


Id = String(36)
ProjectId = String(64)
When = DateTime(timezone=True)


class Versioned:
    """Mutable rows: ``revision_number`` is SQLAlchemy's version counter, so an UPDATE carries
    ``WHERE revision_number = <the value read>`` and a lost race fails (StaleDataError)."""

    revision_number: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(When, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(When, nullable=False, default=utcnow, onupdate=utcnow)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    project_id: Mapped[str] = mapped_column(ProjectId, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    host: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(When, nullable=False, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(When)  # None: never
    # Written at most once per LAST_USED_RESOLUTION (services/tokens.py): a read per request.
    last_used_at: Mapped[datetime | None] = mapped_column(When)


class QosPolicy(Versioned, Base):
    __tablename__ = "qos_policies"
    # One default per project, also under concurrent writers (the service checks first to
    # answer a precise 409; this index settles races).
    __table_args__ = (
        Index("uq_qos_policies_default_project", "project_id", unique=True,
              sqlite_where=text("is_default"), postgresql_where=text("is_default")),
        # Collections are paginated in SQL in (created_at, id) order, per project or overall.
        Index("ix_qos_policies_project_id_created_at", "project_id", "created_at", "id"),
        Index("ix_qos_policies_created_at", "created_at", "id"),
        Index("ix_qos_policies_shared", "shared"),
    )
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ProjectId, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    shared: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    enforcement: Mapped[str] = mapped_column(String(16), nullable=False, default="enforce")
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    __mapper_args__ = {"version_id_col": Versioned.revision_number}


class QosRule(Versioned, Base):
    """One rule of any type. ``params`` holds the fields the client gave (defaults are
    recomputed by the model class on every read, so a changed max_cps moves a defaulted
    max_burst_cps with it); ``rule_key`` is the model's uniqueness key within a policy."""

    __tablename__ = "qos_rules"
    __table_args__ = (UniqueConstraint("policy_id", "rule_key", name="uq_qos_rules_policy_id_rule_key"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    policy_id: Mapped[str] = mapped_column(
        Id, ForeignKey("qos_policies.id", ondelete="CASCADE"), nullable=False, index=True
    )
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    rule_key: Mapped[str] = mapped_column(String(512), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    __mapper_args__ = {"version_id_col": Versioned.revision_number}


class Port(Versioned, Base):
    __tablename__ = "ports"
    __table_args__ = (
        UniqueConstraint("host_id", "interface_name", name="uq_ports_host_id_interface_name"),
        Index("ix_ports_project_id_created_at", "project_id", "created_at", "id"),
        Index("ix_ports_created_at", "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ProjectId, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    host_id: Mapped[str | None] = mapped_column(String(255), index=True)
    mac_address: Mapped[str | None] = mapped_column(String(17))
    fixed_ips: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    device_owner: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="ACTIVE")
    # Why the agent set ``status`` (the kernel's message for ERROR); empty otherwise.
    status_message: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    interface_name: Mapped[str] = mapped_column(String(15), nullable=False)
    qos_policy_id: Mapped[str | None] = mapped_column(Id, ForeignKey("qos_policies.id"), index=True)
    __mapper_args__ = {"version_id_col": Versioned.revision_number}


class AllowlistEntry(Versioned, Base):
    __tablename__ = "allowlist"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    project_id: Mapped[str | None] = mapped_column(ProjectId, index=True)  # None: cloud-wide
    remote_ip_prefix: Mapped[str] = mapped_column(String(64), nullable=False)
    description: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    __mapper_args__ = {"version_id_col": Versioned.revision_number}


class Ban(Base):
    __tablename__ = "bans"
    __table_args__ = (Index("ix_bans_created_at", "created_at", "id"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    ip_address: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    port_id: Mapped[str | None] = mapped_column(Id)
    project_id: Mapped[str | None] = mapped_column(ProjectId, index=True)  # None: cloud-wide
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    origin: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    host: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(When, nullable=False, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(When)
    offence_count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_project_id_created_at", "project_id", "created_at", "id"),
        Index("ix_events_created_at_id", "created_at", "id"),
        Index("ix_events_actor_token_id_created_at", "actor_token_id", "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    event_type: Mapped[str] = mapped_column(String(32), nullable=False)
    project_id: Mapped[str | None] = mapped_column(ProjectId)
    port_id: Mapped[str | None] = mapped_column(Id)
    rule_id: Mapped[str | None] = mapped_column(Id)
    host: Mapped[str | None] = mapped_column(String(255))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    message: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(When, nullable=False, default=utcnow)
    # Who caused it (services/audit.py): the token, its project and role; an agent's host.
    actor_token_id: Mapped[str | None] = mapped_column(Id)
    actor_project_id: Mapped[str | None] = mapped_column(ProjectId)
    actor_role: Mapped[str | None] = mapped_column(String(16))
    actor_host: Mapped[str | None] = mapped_column(String(255))


class Agent(Base):
    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    agent_type: Mapped[str] = mapped_column(String(64), nullable=False, default="connguard agent")
    host: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    configurations: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    started_at: Mapped[datetime] = mapped_column(When, nullable=False, default=utcnow)
    heartbeat_timestamp: Mapped[datetime] = mapped_column(When, nullable=False, default=utcnow)
    # What the agent last reported about its host (None: never reported).
    version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    conntrack_count: Mapped[int | None] = mapped_column(BigInteger)
    conntrack_max: Mapped[int | None] = mapped_column(BigInteger)
    apply_latency_seconds: Mapped[float | None] = mapped_column(Float)
    apply_errors_total: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    last_apply_error: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    queue_overflow_total: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    last_full_report_at: Mapped[datetime | None] = mapped_column(When)


class PortCounter(Base):
    """The latest counters of one rule on one port, as server-side monotonic totals: each
    report's raw totals (which restart at 0 with the agent) are folded in through ``last_*``,
    so a counter reset adds the new raw value instead of going backwards."""

    __tablename__ = "port_counters"
    port_id: Mapped[str] = mapped_column(Id, ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True)
    rule_id: Mapped[str] = mapped_column(Id, primary_key=True)
    admitted: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    would_refuse: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    set_full: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    last_admitted: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    last_refused: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    last_would_refuse: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    last_set_full: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(When, nullable=False, default=utcnow)


class PortObservation(Base):
    """What the agent last saw on a port beyond its status: the top offenders (bounded)."""

    __tablename__ = "port_observations"
    port_id: Mapped[str] = mapped_column(Id, ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True)
    offenders: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    updated_at: Mapped[datetime] = mapped_column(When, nullable=False, default=utcnow)


class HostRevision(Base):
    """Monotonic revision of each host's desired state (agents ask "what changed since N")."""

    __tablename__ = "host_revisions"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
