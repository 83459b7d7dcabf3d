"""Choose and open the online store backend from one setting string.

``"embedded"`` (the default) opens the SQLite store under ``<home>/online/``; ``redis://...``,
``rediss://...`` or ``unix://...`` opens the Redis store. Backends are named by import path and imported only
when chosen, so the embedded default never imports the redis package.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from recplane.errors import InvalidInput
from recplane.features.online.protocol import OnlineStore

__all__ = ["ONLINE_BACKENDS", "open_online_store"]

ONLINE_BACKENDS: dict[str, str] = {
    "embedded": "recplane.features.online.embedded:EmbeddedOnlineStore",
    "redis": "recplane.features.online.redis:RedisOnlineStore",
}
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _backend_class(kind: str) -> Any:
    module_name, _, class_name = ONLINE_BACKENDS[kind].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def open_online_store(location: str = "embedded", *, home: str | Path, **options: Any) -> OnlineStore:
    """Open the store ``location`` names: ``"embedded"`` (under ``home/online``) or a Redis URL."""
    location = location.strip()
    if location == "embedded":
        store: OnlineStore = _backend_class("embedded")(Path(home) / "online", **options)
        return store
    if location.startswith(_REDIS_SCHEMES):
        store = _backend_class("redis")(location, **options)
        return store
    raise InvalidInput(
        f"Unknown online store {location!r}: use 'embedded' (the default, under <home>/online) or a Redis URL "
        "such as 'redis://localhost:6379/0'."
    )
