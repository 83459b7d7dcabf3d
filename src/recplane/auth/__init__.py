"""Authentication and team ownership: API tokens and the principal they stand for."""

from recplane.auth.principal import ADMIN, Principal
from recplane.auth.tokens import TokenCache, TokenInfo, authenticate, create_token, list_tokens, revoke_token

__all__ = [
    "ADMIN",
    "Principal",
    "TokenCache",
    "TokenInfo",
    "authenticate",
    "create_token",
    "list_tokens",
    "revoke_token",
]
