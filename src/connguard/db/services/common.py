"""Who is calling, visibility and write checks, revisions, validation and host revisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from connguard.db.errors import BadRequest, NotAuthorized, NotFound, PreconditionFailed
from connguard.db.models import HostRevision, Port
from connguard.model.state import validation_errors

from connguard.db.roles import ROLES  # noqa: E402,F401 - re-exported
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Caller:
    role: str
    project_id: str
    host: str | None = None
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees(self, project_id: str | None, *, shared: bool = False) -> bool:
        """Read access: admins everything; others their project and shared objects.
        Cloud-wide objects (project_id None) are visible to every project."""
        return self.is_admin or shared or project_id is None or project_id == self.project_id

    def require_writer(self) -> None:
        if self.role not in ("admin", "member"):
            raise NotAuthorized(f"role {self.role} may not change anything")

    def check_write(self, project_id: str | None, *, what: str, shared: bool = False, not_found: str) -> None:
        """Write access to an existing object: invisible ones answer 404, visible but not
        owned ones (shared policies, cloud-wide entries) 403."""
        self.require_writer()
        if self.is_admin or project_id == self.project_id:
            return
        if self.sees(project_id, shared=shared):
            raise NotAuthorized(f"only an admin may change this {what}")
        raise NotFound(f"{what} could not be found", type=not_found)

    def target_project(self, body: dict[str, Any]) -> str:
        """The project a new object belongs to: the caller's, or any for an admin."""
        tenant = body.pop("tenant_id", None)
        project = body.pop("project_id", None) or tenant
        if project is not None and tenant is not None and project != tenant:
            raise BadRequest("project_id and tenant_id differ")
        if project is None or project == self.project_id:
            return self.project_id
        if not self.is_admin:
            raise NotAuthorized("only an admin may create objects in another project")
        return project


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:  # naive values (SQLite) are UTC already
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.isoformat(timespec="seconds") + "Z"


def aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def validate(schema: type[M], data: Any) -> M:
    """Validate through a model class; errors name the field and the reason."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(
            "; ".join(f"Invalid input for {f}: {r}" for f, r in validation_errors(exc))
        ) from None


def check_keys(body: dict[str, Any], allowed: Iterable[str], *, what: str) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"Invalid input for {unknown[0]}: unknown field or not allowed to change on {what}")


def check_revision(obj: Any, if_match: int | None) -> None:
    if if_match is not None and obj.revision_number != if_match:
        raise PreconditionFailed(
            f"revision_number {if_match} does not match the current {obj.revision_number}"
        )


def get_or_404(session: Session, model: type, obj_id: str, *, caller: Caller, not_found: str, what: str,
               shared_attr: str | None = None) -> Any:
    obj = session.get(model, obj_id)
    if obj is None or not caller.sees(obj.project_id, shared=bool(shared_attr and getattr(obj, shared_attr))):
        raise NotFound(f"{what} {obj_id} could not be found", type=not_found)
    return obj


HOSTS_CHANNEL = "connguard_hosts"  # PostgreSQL NOTIFY channel: some host's revision moved
HOSTS_TOUCHED = "connguard.hosts_touched"  # Session.info key: this transaction bumped a revision


def touch_hosts(session: Session, *, hosts: Iterable[str | None]) -> None:
    """Bump the desired-state revision of each named host (monotonic, race-free)."""
    names = sorted({h for h in hosts if h})
    if not names:
        return
    dialect = session.get_bind().dialect.name
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(HostRevision)
    stmt = ins.values([{"host": name, "revision": 1} for name in names]).on_conflict_do_update(
        index_elements=["host"], set_={"revision": HostRevision.revision + 1}
    )
    session.execute(stmt)  # one statement for all the hosts
    session.info[HOSTS_TOUCHED] = True  # the server's notifier wakes long-polls after the commit
    if dialect == "postgresql":
        # Delivered to every server process LISTENing (server/notify.py) when, and only if,
        # this transaction commits: their long-polls wake at once.
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": HOSTS_CHANNEL})


def touch_project(session: Session, *, project_id: str | None) -> None:
    """Bump every host with a port of ``project_id`` (None: every host with a port)."""
    q = select(Port.host_id).where(Port.host_id.is_not(None)).distinct()
    if project_id is not None:
        q = q.where(Port.project_id == project_id)
    touch_hosts(session, hosts=session.scalars(q))


def host_revision(session: Session, *, host: str) -> int:
    row = session.get(HostRevision, host)
    return row.revision if row else 0


__all__ = ["Caller", "ROLES", "check_keys", "check_revision", "get_or_404", "host_revision", "iso", "touch_hosts",
           "touch_project", "validate"]
