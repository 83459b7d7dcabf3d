"""Who is calling: bearer tokens resolve to a team; dev mode (loopback only) acts as the administrator."""

from __future__ import annotations

from fastapi import Request

from recplane.auth import ADMIN, Principal, TokenCache

__all__ = ["current_principal"]


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the caller of this request (async: no thread hop; tokens are cached)."""
    if request.app.state.dev_mode:
        return ADMIN
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    token = secret.strip() if scheme.lower() == "bearer" else None
    cache: TokenCache = request.app.state.tokens
    return cache.resolve(token)
