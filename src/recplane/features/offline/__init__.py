"""Offline features: point-in-time correct training sets (planner, DuckDB engine, builder over the lake)."""

from recplane.features.offline.engine import DEFAULT_CHUNK_ROWS, join_features
from recplane.features.offline.plan import OutputFeature, TrainingSetPlan, ViewPlan, plan_training_set
from recplane.features.offline.training_set import LINEAGE_KEY, TrainingSetBuilder, lineage_of

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "LINEAGE_KEY",
    "OutputFeature",
    "TrainingSetBuilder",
    "TrainingSetPlan",
    "ViewPlan",
    "join_features",
    "lineage_of",
    "plan_training_set",
]
