"""The model registry: numbered model versions with lineage, aliases with a full history of every move."""

from recplane.registry.records import (
    AliasEvent,
    AliasPointer,
    MetricComparison,
    ModelLineage,
    ModelVersion,
    ParamChange,
    RegisteredModel,
    VersionComparison,
    parse_model_ref,
)
from recplane.registry.service import ModelRegistry, VersionRef

__all__ = [
    "AliasEvent",
    "AliasPointer",
    "MetricComparison",
    "ModelLineage",
    "ModelRegistry",
    "ModelVersion",
    "ParamChange",
    "RegisteredModel",
    "VersionComparison",
    "VersionRef",
    "parse_model_ref",
]
