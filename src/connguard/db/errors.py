"""Domain errors raised by the service layer. Imports nothing from connguard.

Each carries a stable ``type`` name that the API puts in the NeutronError body; the HTTP status
is chosen by the class::

    ServiceError
    ├── BadRequest          400  HTTPBadRequest (or a more precise type)
    ├── Unauthenticated     401  NotAuthenticated, or TokenExpired
    ├── NotAuthorized       403
    ├── NotFound            404  e.g. QosPolicyNotFound, PortNotFound
    ├── Conflict            409  e.g. QosRuleExists, PolicyInUse, DefaultPolicyExists
    ├── PreconditionFailed  412  stale If-Match revision
    └── TooLarge            413  HTTPRequestEntityTooLarge (a body over its limit)
"""

from __future__ import annotations


class ServiceError(Exception):
    status = 500
    default_type = "InternalError"

    def __init__(self, message: str, *, type: str | None = None):
        super().__init__(message)
        self.message = message
        self.type = type or self.default_type


class BadRequest(ServiceError):
    status = 400
    default_type = "HTTPBadRequest"


class Unauthenticated(ServiceError):
    status = 401
    default_type = "NotAuthenticated"


class TokenExpired(Unauthenticated):
    default_type = "TokenExpired"


class NotAuthorized(ServiceError):
    status = 403
    default_type = "NotAuthorized"


class NotFound(ServiceError):
    status = 404
    default_type = "NotFound"


class Conflict(ServiceError):
    status = 409
    default_type = "Conflict"


class PreconditionFailed(ServiceError):
    status = 412
    default_type = "PreconditionFailed"


class TooLarge(ServiceError):
    status = 413
    default_type = "HTTPRequestEntityTooLarge"
