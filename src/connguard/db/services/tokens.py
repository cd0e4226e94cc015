"""API tokens: random secrets, stored as their SHA-256 only. A token may expire
(``expires_at``); when it was last used is written at most once per ``LAST_USED_RESOLUTION``
(a conditional UPDATE when the stored time is older), so authenticating stays one read on
almost every request, whatever the request rate and the number of server processes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from connguard.db.errors import BadRequest, NotAuthorized, NotFound, TokenExpired
from connguard.db.models import Token, utcnow
from connguard.db.services.common import ROLES, Caller, aware, iso

PREFIX = "cg_"
LAST_USED_RESOLUTION = timedelta(seconds=60)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_public(token: Token) -> dict[str, Any]:
    return {"id": token.id, "project_id": token.project_id, "role": token.role, "host": token.host,
            "description": token.description, "created_at": iso(token.created_at),
            "expires_at": iso(token.expires_at), "last_used_at": iso(token.last_used_at)}


def parse_expiry(value: Any, *, now: datetime | None = None) -> datetime | None:
    """``expires_at`` from the API: ISO 8601, UTC when it names no zone; in the future."""
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            raise BadRequest(f"Invalid input for expires_at: {value!r} is not an ISO 8601 time "
                             f"(e.g. 2027-01-01T00:00:00Z)") from None
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    if when <= (now or utcnow()):
        raise BadRequest(f"Invalid input for expires_at: {iso(when)} is not in the future")
    return when


def create_token(session: Session, *, project_id: str, role: str, host: str | None = None,
                 description: str = "", expires_at: Any = None,
                 caller: Caller | None = None) -> tuple[str, dict[str, Any]]:
    """Create a token; return (the secret, shown once, and its public record).
    ``caller`` None is the bootstrap path (direct database access)."""
    if caller is not None and not caller.is_admin:
        raise NotAuthorized("only an admin may create tokens")
    if role not in ROLES:
        raise BadRequest(f"Invalid input for role: must be one of {', '.join(ROLES)}")
    if not project_id or len(project_id) > 64:
        raise BadRequest("Invalid input for project_id: 1-64 characters")
    if role == "agent" and not host:
        raise BadRequest("Invalid input for host: an agent token needs the host it serves")
    if role != "agent" and host:
        raise BadRequest("Invalid input for host: only agent tokens are scoped to a host")
    expiry = parse_expiry(expires_at)
    secret = PREFIX + secrets.token_urlsafe(32)
    token = Token(token_hash=_hash(secret), project_id=project_id, role=role, host=host,
                  description=description[:255], expires_at=expiry)
    session.add(token)
    session.flush()
    return secret, token_public(token)


def authenticate(session: Session, *, secret: str, now: datetime | None = None) -> Caller | None:
    """The caller a secret names (None: no such token); raises TokenExpired for an expired
    one. May write ``last_used_at`` (see the module docstring): the caller commits."""
    token = session.scalars(select(Token).where(Token.token_hash == _hash(secret))).first()
    if token is None:
        return None
    now = now or utcnow()
    expires = aware(token.expires_at)
    if expires is not None and expires <= now:
        raise TokenExpired(f"the token {token.id} expired at {iso(expires)}; ask an admin for a new one")
    last = aware(token.last_used_at)
    if last is None or now - last >= LAST_USED_RESOLUTION:
        cutoff = now - LAST_USED_RESOLUTION  # another process may have written it meanwhile
        session.execute(update(Token).where(Token.id == token.id, or_(Token.last_used_at.is_(None),
                                                                      Token.last_used_at <= cutoff))
                        .values(last_used_at=now)
                        # not evaluated against the session's Token: SQLite hands back naive
                        # times, and comparing them with the aware cutoff raised (a 500)
                        .execution_options(synchronize_session=False))
    return Caller(role=token.role, project_id=token.project_id, host=token.host, token_id=token.id)


def list_tokens(session: Session, *, caller: Caller | None = None) -> list[dict[str, Any]]:
    if caller is not None and not caller.is_admin:
        raise NotAuthorized("only an admin may list tokens")
    return [token_public(t) for t in session.scalars(select(Token).order_by(Token.created_at, Token.id))]


def revoke_token(session: Session, *, token_id: str, caller: Caller | None = None) -> None:
    if caller is not None and not caller.is_admin:
        raise NotAuthorized("only an admin may revoke tokens")
    token = session.get(Token, token_id)
    if token is None:
        raise NotFound(f"token {token_id} could not be found", type="TokenNotFound")
    session.delete(token)
    session.flush()
