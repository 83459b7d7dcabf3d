"""The recplane error tree: every failure a user can cause has a class, a stable code and an HTTP status.

Errors survive the wire: the server serialises them with :meth:`RecplaneError.to_dict` and the remote
client rebuilds the same class with :func:`error_from_dict`, so embedded and remote callers catch the same
exceptions.

    RecplaneError                      500 internal
    ├── InvalidInput                   422 invalid_input
    │   ├── InvalidSpec                422 invalid_spec
    │   └── PayloadTooLarge            413 payload_too_large
    ├── NotFound                       404 not_found
    ├── AlreadyExists                  409 already_exists
    ├── SchemaChangeRefused            409 schema_change_refused
    ├── Unauthenticated                401 unauthenticated
    ├── Forbidden                      403 forbidden
    ├── Overloaded                     429 overloaded   (carries retry_after seconds)
    ├── QualityGateFailed              409 quality_gate_failed
    └── BackendUnavailable             503 backend_unavailable
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "BackendUnavailable",
    "Forbidden",
    "InvalidInput",
    "InvalidSpec",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "QualityGateFailed",
    "RecplaneError",
    "SchemaChangeRefused",
    "TrainingFailed",
    "Unauthenticated",
    "error_from_dict",
]


class RecplaneError(Exception):
    """Base of every error recplane raises on purpose."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(RecplaneError):
    """The caller sent something malformed: a bad value, row, option or request body."""

    code = "invalid_input"
    status = 422


class InvalidSpec(InvalidInput):
    """A dataset/feature/job definition is not valid."""

    code = "invalid_spec"


class PayloadTooLarge(InvalidInput):
    """A request body is over the configured size limit."""

    code = "payload_too_large"
    status = 413


class NotFound(RecplaneError):
    """The named object (dataset, version, token, report ...) does not exist."""

    code = "not_found"
    status = 404


class AlreadyExists(RecplaneError):
    """An object with that name exists already."""

    code = "already_exists"
    status = 409


class SchemaChangeRefused(RecplaneError):
    """A schema change would break readers (drop, rename, narrowing, incompatible type)."""

    code = "schema_change_refused"
    status = 409


class Unauthenticated(RecplaneError):
    """No token, or a token that is not valid."""

    code = "unauthenticated"
    status = 401


class Forbidden(RecplaneError):
    """The token is valid but its team may not touch this object."""

    code = "forbidden"
    status = 403


class Overloaded(RecplaneError):
    """The server is at capacity; retry after ``retry_after`` seconds."""

    code = "overloaded"
    status = 429

    def __init__(self, message: str, *, retry_after: float = 1.0, details: dict[str, Any] | None = None):
        super().__init__(message, details={**(details or {}), "retry_after": retry_after})
        self.retry_after = retry_after


class QualityGateFailed(RecplaneError):
    """A blocking data-quality rule failed."""

    code = "quality_gate_failed"
    status = 409


class TrainingFailed(RecplaneError):
    """A training run (or one of its data-parallel workers) failed; the message says where and why."""

    code = "training_failed"
    status = 500


class BackendUnavailable(RecplaneError):
    """A backend (database, broker, store) cannot be reached or an optional dependency is missing."""

    code = "backend_unavailable"
    status = 503


def _all_error_classes() -> dict[str, type[RecplaneError]]:
    found: dict[str, type[RecplaneError]] = {}
    pending: list[type[RecplaneError]] = [RecplaneError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls
        pending.extend(cls.__subclasses__())
    return found


def error_from_dict(payload: dict[str, Any]) -> RecplaneError:
    """Rebuild the error the server raised from its wire form (unknown codes become RecplaneError)."""
    cls = _all_error_classes().get(str(payload.get("code")), RecplaneError)
    message = str(payload.get("message", "unknown error"))
    details = dict(payload.get("details") or {})
    if cls is Overloaded:
        return Overloaded(message, retry_after=float(details.pop("retry_after", 1.0)), details=details)
    return cls(message, details=details)
