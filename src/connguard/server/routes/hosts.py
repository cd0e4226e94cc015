"""``/v2.0/connguard/hosts/{host}/...``: the agent channel. ``state`` answers the host's
desired state; with ``revision=N&wait=S`` it waits up to S seconds for a revision above N.
``report`` takes the agent's typed report (``db/services/report_schema.py``, at most
``MAX_REPORT_BYTES``). The contract is docs/api.md, "Agent channel"."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from connguard.db.services import hosts as svc
from connguard.db.services import reports
from connguard.db.services.common import Caller, host_revision
from connguard.server.deps import AnyCallerDep, ReportBodyDep, SessionDep, member

router = APIRouter(prefix="/connguard/hosts/{host}", tags=["agent channel"])
MAX_WAIT = 300


def _read(request: Request, caller: Caller, host: str, since: int | None) -> dict[str, Any] | None:
    with request.app.state.sessions() as session:
        try:
            if since is not None and host_revision(session, host=host) <= since:
                return None
            return svc.host_state(session, caller=caller, host=host)
        finally:
            session.rollback()


@router.get("/state")
async def host_state(request: Request, host: str, caller: AnyCallerDep,
                     revision: Annotated[int | None, Query(ge=0)] = None,
                     wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0) -> JSONResponse:
    svc.check_host_access(caller, host)
    deadline = time.monotonic() + wait
    while True:
        # A server that is stopping (``connguard up`` sets ``closing``) answers its long-polls
        # with the current state at the next wake instead of having them cancelled mid-wait.
        last = time.monotonic() >= deadline or getattr(request.app.state, "closing", False)
        state = await run_in_threadpool(_read, request, caller, host, None if last else revision)
        if state is not None:
            return JSONResponse({"host_state": state})  # plain JSON values: skip FastAPI's encoder
        # Woken at once by a commit in this process or (PostgreSQL) a NOTIFY from another
        # server process; re-read anyway now and then (server/notify.py says how often).
        notifier = request.app.state.notifier
        await notifier.wait(min(notifier.reread_seconds, max(deadline - time.monotonic(), 0)))


@router.post("/report")
def report(host: str, session: SessionDep, caller: AnyCallerDep, body: ReportBodyDep) -> dict[str, Any]:
    out = reports.report(session, caller=caller, host=host, body=member(body, "report"))
    session.commit()
    return out
