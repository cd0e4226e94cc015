"""Events, and who caused them: every change a token makes to what hosts enforce (bans,
unbans, allowlist entries, policies, rules, ports) is recorded with the token's id, project and
role, and for an agent token its host (agent-reported bans). Imports no other service, so
every service can record."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from connguard.db.models import Event
from connguard.db.services.common import Caller


def actor_fields(caller: Caller | None) -> dict[str, Any]:
    """The ``actor_*`` columns of an event ``caller`` caused (None: no token, e.g. the
    bootstrap path)."""
    if caller is None:
        return {}
    return {"actor_token_id": caller.token_id, "actor_project_id": caller.project_id, "actor_role": caller.role,
            "actor_host": caller.host}


def record_event(session: Session, *, event_type: str, project_id: str | None, message: str = "",
                 caller: Caller | None = None, **fields: Any) -> None:
    session.add(Event(event_type=event_type, project_id=project_id, message=message[:1024], **actor_fields(caller),
                      **fields))


def changed(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``"name, is_default"``: the keys whose values differ (for an update's message)."""
    keys = [k for k in after if before.get(k) != after[k]]
    return ", ".join(keys) if keys else "nothing"


__all__ = ["actor_fields", "changed", "record_event"]
