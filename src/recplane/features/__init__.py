"""Features: definitions (entities, feature views, services), the registry, point-in-time training sets,
materialization to the online store, online lookups and item text embeddings."""

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
