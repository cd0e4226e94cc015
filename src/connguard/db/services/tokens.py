"""API tokens: random secrets, stored as their SHA-256 only."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connguard.db.errors import BadRequest, NotAuthorized, NotFound
from connguard.db.models import Token
from connguard.db.services.common import ROLES, Caller, iso

PREFIX = "cg_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_public(token: Token) -> dict[str, Any]:
    return {"id": token.id, "project_id": token.project_id, "role": token.role, "host": token.host,
            "description": token.description, "created_at": iso(token.created_at)}


def create_token(session: Session, *, project_id: str, role: str, host: str | None = None,
                 description: str = "", caller: Caller | None = None) -> tuple[str, dict[str, Any]]:
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
    secret = PREFIX + secrets.token_urlsafe(32)
    token = Token(token_hash=_hash(secret), project_id=project_id, role=role, host=host,
                  description=description[:255])
    session.add(token)
    session.flush()
    return secret, token_public(token)


def authenticate(session: Session, *, secret: str) -> Caller | None:
    token = session.scalars(select(Token).where(Token.token_hash == _hash(secret))).first()
    if token is None:
        return None
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
