"""The dataset spec every ingestion case writes into: the synthetic events' columns, no quality rules.

Quality rules are not part of ingestion (``client.check`` runs them), so both sides of every case do the
same work: recplane validates types and nullability on the way in, the direct writer takes the rows as given.
"""

from __future__ import annotations

from typing import Any

from recplane.samples.loading import SYNTHETIC_EVENTS_SPEC

__all__ = ["EVENTS_SPEC", "events_spec"]

EVENTS_SPEC: dict[str, Any] = {
    **SYNTHETIC_EVENTS_SPEC,
    "team": "bench",
    "description": "Synthetic interaction events (ingestion benchmark).",
    "quality": [],
}


def events_spec(name: str) -> dict[str, Any]:
    """The spec of a dataset called ``name``."""
    return {"name": name, **EVENTS_SPEC}
