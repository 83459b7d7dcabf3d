"""Features: definitions (entities, feature views, services), the registry, point-in-time training sets,
materialization to the online store, online lookups and item text embeddings.

Names load on first use: building a training set does not import the online stores, serving or text code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recplane.features.materialize import Materializer, MaterializeResult, ViewMaterialization
    from recplane.features.offline import TrainingSetBuilder, join_features, lineage_of, plan_training_set
    from recplane.features.registry import FeatureDefinitionInfo, FeaturePlan, FeatureRegistry, PlannedChange
    from recplane.features.serving import OnlineFeatures, OnlineFeatureService
    from recplane.features.spec import (
        Entity,
        Feature,
        FeatureDefinitions,
        FeatureService,
        FeatureView,
        load_feature_definitions,
    )
    from recplane.features.text import (
        MiniLMEncoder,
        TextEmbeddingResult,
        TextEncoder,
        embed_item_text,
        render_texts,
    )

_HOMES = {
    "Materializer": "recplane.features.materialize",
    "MaterializeResult": "recplane.features.materialize",
    "ViewMaterialization": "recplane.features.materialize",
    "TrainingSetBuilder": "recplane.features.offline",
    "join_features": "recplane.features.offline",
    "lineage_of": "recplane.features.offline",
    "plan_training_set": "recplane.features.offline",
    "FeatureDefinitionInfo": "recplane.features.registry",
    "FeaturePlan": "recplane.features.registry",
    "FeatureRegistry": "recplane.features.registry",
    "PlannedChange": "recplane.features.registry",
    "OnlineFeatures": "recplane.features.serving",
    "OnlineFeatureService": "recplane.features.serving",
    "Entity": "recplane.features.spec",
    "Feature": "recplane.features.spec",
    "FeatureDefinitions": "recplane.features.spec",
    "FeatureService": "recplane.features.spec",
    "FeatureView": "recplane.features.spec",
    "load_feature_definitions": "recplane.features.spec",
    "MiniLMEncoder": "recplane.features.text",
    "TextEmbeddingResult": "recplane.features.text",
    "TextEncoder": "recplane.features.text",
    "embed_item_text": "recplane.features.text",
    "render_texts": "recplane.features.text",
}

__all__ = [
    "Entity",
    "Feature",
    "FeatureDefinitionInfo",
    "FeatureDefinitions",
    "FeaturePlan",
    "FeatureRegistry",
    "FeatureService",
    "FeatureView",
    "MaterializeResult",
    "Materializer",
    "MiniLMEncoder",
    "OnlineFeatureService",
    "OnlineFeatures",
    "PlannedChange",
    "TextEmbeddingResult",
    "TextEncoder",
    "TrainingSetBuilder",
    "ViewMaterialization",
    "embed_item_text",
    "join_features",
    "lineage_of",
    "load_feature_definitions",
    "plan_training_set",
    "render_texts",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'recplane.features' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
