"""Request dependencies: the database session, the caller, If-Match and the JSON body."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Iterator

import anyio
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from connguard.db.errors import BadRequest, NotAuthorized, TooLarge, Unauthenticated
from connguard.db.services.common import Caller
from connguard.db.services.report_schema import MAX_REPORT_BYTES
from connguard.db.services.tokens import authenticate

MAX_BODY = 64 * 1024


def get_session(request: Request) -> Iterator[Session]:
    """One session, one transaction per request: handlers commit on success; anything else
    (an exception, a handler that returns without committing) rolls back."""
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_caller(request: Request, x_auth_token: Annotated[str | None, Header()] = None) -> Caller:
    if not x_auth_token:
        raise Unauthenticated("authentication required: send the X-Auth-Token header")
    # A short session of its own: long-polling handlers must not hold a transaction open.
    # Committed: authenticate writes the token's last_used_at (at most once a minute).
    with request.app.state.sessions() as session:
        caller = authenticate(session, secret=x_auth_token)
        session.commit()
    if caller is None:
        raise Unauthenticated("the token is not valid")
    return caller


async def get_channel_caller(request: Request, x_auth_token: Annotated[str | None, Header()] = None) -> Caller:
    """``get_caller`` through the short-lived cache of server/authcache.py (the long-polls)."""
    if not x_auth_token:
        raise Unauthenticated("authentication required: send the X-Auth-Token header")
    cache = request.app.state.callers
    key = hashlib.sha256(x_auth_token.encode()).hexdigest()  # the secret itself is not kept
    caller = cache.get(key)
    if caller is None:
        caller = await anyio.to_thread.run_sync(get_caller, request, x_auth_token)
        cache.put(key, caller)
    return caller


def get_user(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if caller.role == "agent":
        raise NotAuthorized("an agent token may only use its host's channel")
    return caller


AnyCallerDep = Annotated[Caller, Depends(get_caller)]
ChannelCallerDep = Annotated[Caller, Depends(get_channel_caller)]
CallerDep = Annotated[Caller, Depends(get_user)]

_IF_MATCH = re.compile(r"^\s*revision_number=(\d+)\s*$")


def get_if_match(if_match: Annotated[str | None, Header()] = None) -> int | None:
    if if_match is None:
        return None
    m = _IF_MATCH.match(if_match)
    if not m:
        raise BadRequest("Invalid input for If-Match: expected revision_number=N")
    return int(m.group(1))


IfMatchDep = Annotated[int | None, Depends(get_if_match)]


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, refused with 413 past ``limit`` bytes (before reading it when the
    client declares its length, else as soon as the stream passes the limit)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is larger than {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None


async def get_body(request: Request) -> Any:
    return await read_json(request, MAX_BODY)


async def get_report_body(request: Request) -> Any:
    return await read_json(request, MAX_REPORT_BYTES)


BodyDep = Annotated[Any, Depends(get_body)]
ReportBodyDep = Annotated[Any, Depends(get_report_body)]


def member(body: Any, name: str) -> dict[str, Any]:
    """The object inside Neutron's envelope ``{"<name>": {...}}``."""
    if not isinstance(body, dict) or set(body) != {name} or not isinstance(body[name], dict):
        raise BadRequest(f"the body must be {{\"{name}\": {{...}}}}")
    return body[name]
