"""Shared FastAPI dependencies: the runtime and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from recplane.api.security import current_principal
from recplane.auth import Principal
from recplane.runtime import Runtime

__all__ = ["Caller", "RuntimeDep"]


async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
Caller = Annotated[Principal, Depends(current_principal)]
