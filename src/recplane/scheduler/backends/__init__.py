"""Job backends, by the name a queue gives in ``backend:``: a lazy table (loading it imports no backend).

Each entry names a ``module:function`` that builds the backend from :class:`~recplane.config.Settings`.
``ray`` needs ``recplane[ray]`` and ``kubernetes`` needs ``recplane[kubernetes]`` (imported only when opened).
"""

from __future__ import annotations

from recplane.config import Settings
from recplane.errors import InvalidSpec
from recplane.scheduler.backends.protocol import BackendStatus, JobBackend, Launch, LogChunk, ResourceUsage

__all__ = ["BACKENDS", "BackendStatus", "JobBackend", "Launch", "LogChunk", "ResourceUsage", "open_backend"]

BACKENDS: dict[str, str] = {
    "local": "recplane.scheduler.backends.local:from_settings",
    "inline": "recplane.scheduler.backends.inline:from_settings",
    "ray": "recplane.scheduler.backends.ray:from_settings",
    "kubernetes": "recplane.scheduler.backends.kubernetes:from_settings",
}


def open_backend(name: str, settings: Settings) -> JobBackend:
    """Build the backend called ``name`` for these settings."""
    from recplane.scheduler.kinds import load_callable

    path = BACKENDS.get(name)
    if path is None:
        raise InvalidSpec(f"Unknown job backend {name!r}; available: {', '.join(sorted(BACKENDS))}.")
    backend: JobBackend = load_callable(path)(settings)
    return backend
