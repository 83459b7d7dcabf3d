"""Online feature store: the latest feature row per (view, entity key), for serving in microseconds.

One contract (:class:`OnlineStore`: newer-wins writes, TTL-aware reads with a status per entity), two
backends: :class:`EmbeddedOnlineStore` (SQLite under ``<home>/online``, the zero set-up default) and
:class:`RedisOnlineStore`; :func:`open_online_store` picks one from a setting string.
"""

from recplane.features.online.embedded import EmbeddedOnlineStore
from recplane.features.online.open_store import ONLINE_BACKENDS, open_online_store
from recplane.features.online.protocol import (
    EntityKey,
    EntityStatus,
    OnlineResult,
    OnlineRow,
    OnlineStore,
    WriteStats,
)
from recplane.features.online.redis import RedisOnlineStore

__all__ = [
    "ONLINE_BACKENDS",
    "EmbeddedOnlineStore",
    "EntityKey",
    "EntityStatus",
    "OnlineResult",
    "OnlineRow",
    "OnlineStore",
    "RedisOnlineStore",
    "WriteStats",
    "open_online_store",
]
