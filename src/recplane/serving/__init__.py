"""Serving: deployments (retrieval + ANN index + ranker + rules + fallback), the recommendation service and batch
inference.

Names load on first use: the HTTP layer and the CLI import this package without loading torch or faiss.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recplane.serving.batching import LoadShed, MicroBatcher
    from recplane.serving.impressions import ImpressionLogger
    from recplane.serving.index import AnnIndex, build_ann_index
    from recplane.serving.predict import PredictResult, predict
    from recplane.serving.recommender import Recommendation, RecommendedItem, Recommender, RecommendRequest
    from recplane.serving.server import ServingApp, build_serving_app
    from recplane.serving.spec import DeploymentSpec, ModelRef, load_deployment
    from recplane.serving.swap import HotSwapper

_HOMES = {
    "AnnIndex": "recplane.serving.index",
    "build_ann_index": "recplane.serving.index",
    "PredictResult": "recplane.serving.predict",
    "predict": "recplane.serving.predict",
    "Recommendation": "recplane.serving.recommender",
    "RecommendedItem": "recplane.serving.recommender",
    "Recommender": "recplane.serving.recommender",
    "RecommendRequest": "recplane.serving.recommender",
    "DeploymentSpec": "recplane.serving.spec",
    "ModelRef": "recplane.serving.spec",
    "load_deployment": "recplane.serving.spec",
    "LoadShed": "recplane.serving.batching",
    "MicroBatcher": "recplane.serving.batching",
    "ImpressionLogger": "recplane.serving.impressions",
    "ServingApp": "recplane.serving.server",
    "build_serving_app": "recplane.serving.server",
    "HotSwapper": "recplane.serving.swap",
}

__all__ = [
    "AnnIndex",
    "DeploymentSpec",
    "HotSwapper",
    "ImpressionLogger",
    "LoadShed",
    "MicroBatcher",
    "ModelRef",
    "PredictResult",
    "RecommendRequest",
    "Recommendation",
    "RecommendedItem",
    "Recommender",
    "ServingApp",
    "build_ann_index",
    "build_serving_app",
    "load_deployment",
    "predict",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'recplane.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
