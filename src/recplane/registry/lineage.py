"""What a model version learns from its source: lineage, params and metrics of a training run, signature of an export.

Plain functions over records and parsed JSON, so they are tested without a catalog or files.
"""

from __future__ import annotations

import json
from typing import Any

from recplane.errors import InvalidInput
from recplane.registry.records import JsonScalar, ModelLineage
from recplane.training.runs import RunRecord

__all__ = ["export_facts", "flatten_params", "run_lineage", "run_metrics", "run_params"]

# Config keys that describe where a run kept its files, not how it trained.
_NOT_PARAMS = frozenset({"checkpoint_dir"})


def run_lineage(run: RunRecord, training_set: dict[str, Any] | None = None) -> ModelLineage:
    """The lineage of a model trained by ``run``; ``training_set``: the lineage stored with its dataset version."""
    tags = run.tags
    user_version = tags.get("user_features_version")
    views = _feature_views(training_set)
    service = (training_set or {}).get("feature_service")
    return ModelLineage(
        run_id=run.id,
        run_name=run.name,
        dataset=run.dataset,
        dataset_version=run.dataset_version,
        item_features=run.item_features,
        item_features_version=run.item_features_version,
        user_features=tags.get("user_features"),
        user_features_version=int(user_version) if user_version and user_version.isdigit() else None,
        feature_service=service.get("name") if isinstance(service, dict) else service,
        feature_views=views,
        training_set=training_set,
        git_sha=run.git_sha,
        git_dirty=run.git_dirty,
        recplane_version=run.recplane_version,
    )


def _feature_views(training_set: dict[str, Any] | None) -> dict[str, int]:
    """Feature view versions from the lineage of the training set the run trained on."""
    from_set = (training_set or {}).get("feature_views")
    if not isinstance(from_set, dict):
        return {}
    return {str(name): int(version) for name, version in from_set.items()}


def run_params(run: RunRecord) -> dict[str, Any]:
    """The run's resolved training config (model, its constructor params, optimiser, epochs ...)."""
    return {key: value for key, value in run.config.items() if key not in _NOT_PARAMS}


def run_metrics(run: RunRecord) -> dict[str, JsonScalar]:
    """The run's final metrics, flat: ``test.<metric>`` for each test metric, then the summary values."""
    values: dict[str, JsonScalar] = {f"test.{name}": value for name, value in sorted(run.metrics.test.items())}
    summary = run.metrics.model_dump(exclude={"test", "checkpoint"}, exclude_none=True)
    values.update({name: summary[name] for name in sorted(summary)})
    return values


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, JsonScalar]:
    """Nested settings as dotted names (``params.dim``); lists are kept as JSON text."""
    flat: dict[str, JsonScalar] = {}
    for key in sorted(params):
        name = f"{prefix}.{key}" if prefix else str(key)
        value = params[key]
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, name))
        elif isinstance(value, str | int | float | bool) or value is None:
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str, sort_keys=True)
    return flat


def export_facts(manifest: dict[str, Any], signature: dict[str, Any] | None) -> tuple[str, str, dict[str, Any]]:
    """Kind, model class and the signature to store, from an export's manifest.json and signature.json."""
    kind, model_class = manifest.get("kind"), manifest.get("model_class")
    if not isinstance(kind, str) or not isinstance(model_class, str):
        raise InvalidInput(
            "manifest.json lacks 'kind' or 'model_class': register a folder written by recplane's export_model."
        )
    stored = {
        "form": manifest.get("form"),
        "inputs": manifest.get("inputs", []),
        "outputs": manifest.get("outputs", []),
        "model": (signature or {}).get("signature", {}),
    }
    return kind, model_class, stored
