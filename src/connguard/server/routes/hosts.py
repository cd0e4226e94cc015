"""``/v2.0/connguard/hosts/{host}/...``: the agent channel. ``state`` answers the host's
desired state; with ``revision=N&wait=S`` it waits up to S seconds for a revision above N.
``report`` takes the agent's typed report (``db/services/report_schema.py``, at most
``MAX_REPORT_BYTES``). The contract is docs/api.md, "Agent channel"."""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from connguard.db.services import hosts as svc
from connguard.db.services import reports
from connguard.db.services.common import Caller
from connguard.server.deps import AnyCallerDep, ChannelCallerDep, ReportBodyDep, SessionDep, member

router = APIRouter(prefix="/connguard/hosts/{host}", tags=["agent channel"])
MAX_WAIT = 300


def _read(request: Request, caller: Caller, host: str) -> dict[str, Any]:
    with request.app.state.sessions() as session:
        try:
            return svc.host_state(session, caller=caller, host=host)
        finally:
            session.rollback()


@router.get("/state")
async def host_state(request: Request, host: str, caller: ChannelCallerDep,
                     revision: Annotated[int | None, Query(ge=0)] = None,
                     wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0) -> JSONResponse:
    svc.check_host_access(caller, host)
    watch = request.app.state.watch
    deadline = time.monotonic() + wait
    state = None
    if not _closing(request):
        # server/watch.py reads for every agent waiting at once: revisions in one query, and
        # states in batches of hosts. A long-poll that times out answers the current state.
        if revision is not None and wait > 0:
            state = await watch.wait(host, revision, max(deadline - time.monotonic(), 0))
        else:
            state = await watch.current(host)
    if state is None:
        # A server that is stopping (``connguard up`` sets ``closing``) answers its long-polls
        # with the current state instead of having them cancelled mid-wait.
        state = await anyio.to_thread.run_sync(_read, request, caller, host, limiter=watch.limiter())
    return JSONResponse({"host_state": state})  # plain JSON values: skip FastAPI's encoder


def _closing(request: Request) -> bool:
    return bool(getattr(request.app.state, "closing", False))


@router.post("/report")
def report(host: str, session: SessionDep, caller: AnyCallerDep, body: ReportBodyDep) -> dict[str, Any]:
    out = reports.report(session, caller=caller, host=host, body=member(body, "report"))
    session.commit()
    return out
