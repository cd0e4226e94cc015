"""One error body for the whole API: ``{"NeutronError": {"type", "message", "detail"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from connguard.db.errors import ServiceError
from connguard.model.state import format_loc

log = logging.getLogger("connguard.server")

_HTTP_TYPES = {400: "HTTPBadRequest", 401: "NotAuthenticated", 403: "NotAuthorized", 404: "HTTPNotFound",
               405: "HTTPMethodNotAllowed", 409: "Conflict", 412: "PreconditionFailed",
               413: "HTTPRequestEntityTooLarge"}


def error_response(status: int, type_: str, message: str) -> JSONResponse:
    return JSONResponse({"NeutronError": {"type": type_, "message": message, "detail": ""}}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(_req: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.type, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = tuple(p for p in err.get("loc", ()) if p not in ("query", "path", "header", "body"))
            parts.append(f"Invalid input for {format_loc(loc) or 'request'}: {err.get('msg')}")
        return error_response(400, "HTTPBadRequest", "; ".join(parts))

    @app.exception_handler(StaleDataError)
    async def _stale(_req: Request, _exc: StaleDataError) -> JSONResponse:
        return error_response(412, "PreconditionFailed", "the object was changed by another request; read it again")

    @app.exception_handler(IntegrityError)
    async def _integrity(_req: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity error: %s", exc.orig)
        return error_response(409, "Conflict", "the change conflicts with existing objects")

    @app.exception_handler(OperationalError)
    async def _operational(_req: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database error: %s", exc.orig)
        return error_response(503, "ServiceUnavailable", "the database is unavailable or busy; retry")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "The resource could not be found."
        return error_response(exc.status_code, _HTTP_TYPES.get(exc.status_code, "HTTPError"), message)
