"""Who is calling: bearer tokens resolve to a team; dev mode (loopback only) acts as the administrator."""

from __future__ import annotations

import hashlib
import time

from fastapi import Request

from recplane.auth import ADMIN, Principal, authenticate
from recplane.catalog import Catalog

__all__ = ["TokenCache", "current_principal"]


class TokenCache:
    """Remembers resolved tokens briefly, so hot ingestion routes skip a catalog query per request.

    A revoked token keeps working for at most ``ttl`` seconds.
    """

    def __init__(self, catalog: Catalog, ttl: float = 5.0) -> None:
        self.catalog = catalog
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    def resolve(self, secret: str | None) -> Principal:
        """The principal for a token secret (raises Unauthenticated when it is not valid)."""
        key = hashlib.sha256(secret.encode()).hexdigest() if secret else ""
        hit = self._entries.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        principal = authenticate(self.catalog, secret)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (now, principal)
        return principal


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the caller of this request (async: no thread hop; tokens are cached)."""
    if request.app.state.dev_mode:
        return ADMIN
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    token = secret.strip() if scheme.lower() == "bearer" else None
    cache: TokenCache = request.app.state.tokens
    return cache.resolve(token)
