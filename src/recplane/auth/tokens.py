"""API tokens: one team per token, stored as a SHA-256 hash, shown to the user once at creation."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from recplane.auth.principal import Principal
from recplane.catalog import ApiToken, Catalog, utcnow
from recplane.errors import InvalidInput, NotFound, Unauthenticated

__all__ = ["TokenCache", "TokenInfo", "authenticate", "create_token", "list_tokens", "revoke_token"]

TOKEN_PREFIX = "rp_"


@dataclass(frozen=True)
class TokenInfo:
    """A token's public facts; ``secret`` is set only in the answer to its creation."""

    id: int
    team: str
    name: str
    prefix: str
    created_at: datetime
    revoked: bool
    secret: str | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiToken, secret: str | None = None) -> TokenInfo:
    return TokenInfo(row.id, row.team, row.name, row.prefix, row.created_at, row.revoked_at is not None, secret)


def create_token(catalog: Catalog, team: str, name: str = "") -> TokenInfo:
    """Create a token for ``team``; the returned ``secret`` cannot be recovered later."""
    if not team or not all(ch.isalnum() or ch in "_.-" for ch in team):
        raise InvalidInput(f"Team name {team!r} must be letters, digits, '_', '.' or '-'.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(team=team, name=name, prefix=secret[:10], secret_sha256=_digest(secret))
    with catalog.session() as session:
        session.add(row)
        session.flush()
        return _info(row, secret)


def authenticate(catalog: Catalog, secret: str | None) -> Principal:
    """The principal a bearer token stands for; Unauthenticated if it is missing, unknown or revoked."""
    if not secret:
        raise Unauthenticated("This route needs an API token: send 'Authorization: Bearer <token>'.")
    with catalog.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.secret_sha256 == _digest(secret)))
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("The API token is not valid (unknown or revoked). Create one: recplane tokens create")
    return Principal(team=row.team)


def list_tokens(catalog: Catalog, team: str | None = None) -> list[TokenInfo]:
    """Tokens, optionally of one team, oldest first (never their secrets)."""
    query = select(ApiToken).order_by(ApiToken.id)
    if team:
        query = query.where(ApiToken.team == team)
    with catalog.session() as session:
        return [_info(row) for row in session.scalars(query)]


def revoke_token(catalog: Catalog, token_id: int) -> TokenInfo:
    """Revoke a token so it no longer authenticates."""
    with catalog.session() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise NotFound(f"No token with id {token_id}.")
        row.revoked_at = row.revoked_at or utcnow()
        return _info(row)


class TokenCache:
    """Resolved bearer tokens, remembered for ``ttl`` seconds so hot routes (ingestion, serving) skip a catalog
    query per request. A revoked token keeps working for at most ``ttl`` seconds."""

    def __init__(self, catalog: Catalog, ttl: float = 5.0) -> None:
        self.catalog = catalog
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    def resolve(self, secret: str | None) -> Principal:
        """The principal of a token (raises Unauthenticated when it is missing, unknown or revoked)."""
        key = hashlib.sha256(secret.encode()).hexdigest() if secret else ""
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        principal = authenticate(self.catalog, secret)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (now, principal)
        return principal
