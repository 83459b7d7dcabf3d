"""Error responses: every RecplaneError becomes ``{"error": {code, message, details}}`` with its status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from recplane.errors import InvalidInput, Overloaded, RecplaneError

__all__ = ["install_error_handlers"]


def error_response(error: RecplaneError) -> JSONResponse:
    """The JSON response for an error, with Retry-After on 429."""
    headers = {"Retry-After": str(max(1, round(error.retry_after)))} if isinstance(error, Overloaded) else None
    return JSONResponse({"error": error.to_dict()}, status_code=error.status, headers=headers)


async def _recplane_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RecplaneError)
    return error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {"field": ".".join(str(part) for part in err["loc"]), "message": err["msg"]} for err in exc.errors()
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return error_response(InvalidInput(f"Invalid request: {summary}", details={"fields": fields}))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into the error envelope."""
    app.add_exception_handler(RecplaneError, _recplane_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
