"""The standard recsys pipeline and the built-in steps it is made of.

``recsys-standard`` (``recplane pipelines run recsys-standard --set dataset=ml100k_ratings``)::

    quality_check → features → training_set → train → evaluate → gate → register → promote

* **quality_check** checks the dataset's newest version against its quality rules; a blocking failure fails
  the step, and so the run. Its output pins the version every later step uses.
* **features** applies feature definitions (a file, optional) and materializes a feature service (optional).
* **training_set** is the checked interactions, or, with a feature service, the point-in-time training set built
  from them and written as a dataset version.
* **train** trains a recorded run on exactly that version (a process of its own: torch).
* **evaluate** reads the run's test metrics; **gate** passes when the chosen metric is at least the
  ``production`` version's (the first model passes), else fails the run and nothing is registered.
* **register** registers the run as the model's next version; **promote** moves ``candidate`` and then
  ``production`` to it (the canary order), each move recorded with its reason.

Every step is an ordinary ``@step``-style function usable in any pipeline (YAML: ``uses: gate``).
"""

from __future__ import annotations

import math
from typing import Any

from recplane.errors import NotFound, QualityGateFailed, TrainingFailed
from recplane.pipelines.execution import StepContext
from recplane.pipelines.refs import DatasetRef, ModelVersionRef, RunRef
from recplane.pipelines.spec import PipelineSpec, load_pipeline

__all__ = [
    "STANDARD_PIPELINES",
    "evaluate",
    "features",
    "gate",
    "noop",
    "promote",
    "quality_check",
    "recsys_standard",
    "register",
    "train",
    "training_set",
]

#: Pipelines shipped with recplane, by name: applied on first run.
STANDARD_PIPELINES: dict[str, str] = {"recsys-standard": "recplane.pipelines.standard:recsys_standard"}


def noop(value: Any = None) -> Any:
    """Do nothing and return ``value`` (benchmarks, placeholders)."""
    return value


def quality_check(dataset: DatasetRef, context: StepContext) -> DatasetRef:
    """Check the dataset at the version the run pinned (its newest when the step started); a blocking rule failure
    fails the step (and stops the run)."""
    report = context.runtime.quality.check(dataset.name, principal=context.principal, version=dataset.version)
    print(f"quality of {dataset.name}@{report.version}: {report.message}", flush=True)
    report.raise_for_failure()
    return DatasetRef(dataset.name, report.version)


def features(
    data: DatasetRef,
    context: StepContext,
    definitions: str | None = None,
    feature_service: str | None = None,
    materialize: bool = False,
) -> dict[str, Any]:
    """Apply feature definitions (when a file is given) and materialize a feature service (when asked)."""
    runtime = context.runtime
    changes = 0
    if definitions:
        from recplane.features.spec import load_feature_definitions

        plan = runtime.features.apply(load_feature_definitions(definitions), principal=context.principal)
        changes = sum(1 for change in plan.changes if change.action != "unchanged")
    rows = 0
    if materialize and feature_service:
        rows = runtime.materializer.materialize(None, service=feature_service, principal=context.principal).rows_written
    return {"data": data.name, "changes": changes, "materialized_rows": rows, "feature_service": feature_service}


def training_set(
    data: DatasetRef, context: StepContext, feature_service: str | None = None, label_time_col: str = "ts"
) -> dict[str, Any]:
    """The checked interactions as they are, or joined point-in-time with a feature service and written as the
    dataset ``<name>_training_set`` (its new version pins the exact rows)."""
    if not feature_service:
        return {"dataset": DatasetRef(data.name, data.version), "feature_columns": []}
    from recplane.features.offline.training_set import lineage_of

    runtime = context.runtime
    target = f"{data.name}_training_set"
    table = runtime.training_sets.build(data.name, feature_service, principal=context.principal,
                                        label_time_col=label_time_col, labels_version=data.version,
                                        write_to=target)
    written = lineage_of(table)["written"]
    labels = runtime.datasets.read(data.name, principal=context.principal, version=data.version).column_names
    added = [name for name in table.column_names if name not in labels]
    return {"dataset": DatasetRef(target, int(written["version"])), "feature_columns": added}


def train(
    data: DatasetRef,
    context: StepContext,
    train: dict[str, Any] | None = None,
    row_features: list[str] | None = None,
    name: str | None = None,
) -> RunRef:
    """Train a recorded run on exactly ``data`` (name and version); fails unless the run finished."""
    settings = dict(train or {"model": "mf", "epochs": 3})
    if row_features and not settings.get("row_feature_columns"):
        settings["row_feature_columns"] = list(row_features)
    spec = {"name": name or f"{settings.get('model', 'mf')}-{data.name}", "dataset": data.name,
            "version": data.version, "train": settings}
    trained = context.runtime.training.train(
        spec, principal=context.principal, tags={"pipeline": context.pipeline, "pipeline_run": context.run_id}
    )
    if trained.run.status != "finished":
        raise TrainingFailed(f"Run {trained.run.id} ended {trained.run.status}: {trained.run.error or 'no error'}")
    return RunRef(trained.run.id)


def evaluate(run: RunRef, context: StepContext, metric: str | None = None) -> dict[str, Any]:
    """The run's test metrics and the one the gate compares (default: the metric that picked its best epoch)."""
    record = context.runtime.runs.get(run.id, principal=context.principal)
    tests = {key: value for key, value in record.metrics.test.items() if value is not None}
    chosen = metric or record.metrics.valid_metric or (sorted(tests)[0] if tests else None)
    if chosen is None or chosen not in tests:
        raise NotFound(f"Run {run.id} has no test metric {chosen!r}; it has {sorted(tests) or 'none'}.")
    return {"run": RunRef(run.id), "metric": chosen, "value": float(tests[chosen]), "test": tests}


def gate(evaluation: dict[str, Any], model: str, context: StepContext) -> dict[str, Any]:
    """Pass when the new metric is at least production's (lower-is-better metrics: at most); the first model
    passes. A failed gate fails the run, so nothing is registered."""
    from recplane.training.runs import metric_direction

    metric, value = str(evaluation["metric"]), float(evaluation["value"])
    try:
        production = context.runtime.registry.resolve(model, "production", principal=context.principal)
    except NotFound:
        return {"passed": True, "metric": metric, "value": value, "production": None,
                "reason": f"first model: {model!r} has no production version yet"}
    current = production.metrics.get(f"test.{metric}", production.metrics.get(metric))
    if not isinstance(current, int | float) or not math.isfinite(float(current)):
        return {"passed": True, "metric": metric, "value": value, "production": production.version,
                "reason": f"production version {production.version} has no {metric} to compare with"}
    higher = metric_direction(metric) is not False
    passed = value >= float(current) if higher else value <= float(current)
    verdict = (f"{metric} {value:.6g} vs production v{production.version}'s {float(current):.6g} "
               f"({'higher' if higher else 'lower'} is better)")
    if not passed:
        raise QualityGateFailed(f"Model gate refused the new model: {verdict}. Nothing is registered.",
                                details={"metric": metric, "value": value, "production": float(current)})
    return {"passed": True, "metric": metric, "value": value, "production": production.version, "reason": verdict}


def register(run: RunRef, model: str, context: StepContext, gate: dict[str, Any] | None = None) -> ModelVersionRef:
    """Register the run's exported model as the next version of ``model``."""
    reason = (gate or {}).get("reason", "")
    version = context.runtime.registry.register(
        model, run_id=run.id, description=f"pipeline {context.pipeline} run {context.run_id}: {reason}".strip(),
        tags={"pipeline": context.pipeline, "pipeline_run": context.run_id}, principal=context.principal,
    )
    return ModelVersionRef(model, version.version)


def promote(version: ModelVersionRef, context: StepContext,
            aliases: list[str] | None = None) -> dict[str, Any]:
    """Move each alias in order (default ``candidate`` then ``production``: the canary order) to ``version``."""
    if version.version is None:
        raise NotFound(f"Cannot promote {version}: it names no version number.")
    moves = []
    order = list(aliases or ["candidate", "production"])
    for index, alias in enumerate(order):
        stage = "canary" if index < len(order) - 1 else "rollout"
        reason = (f"pipeline {context.pipeline} run {context.run_id}: {stage} — {alias} → v{version.version} "
                  f"(passed the gate)")
        event = context.runtime.registry.set_alias(version.name, alias, version.version, reason=reason,
                                                   principal=context.principal)
        moves.append({"alias": alias, "from": event.from_version, "to": event.to_version, "reason": reason})
    return {"model": version.name, "version": version.version, "moves": moves}


def recsys_standard() -> PipelineSpec:
    """The standard recsys pipeline (params: dataset, model, train, feature_definitions, feature_service,
    materialize, metric, aliases)."""
    inline = {"inline": True}
    return load_pipeline({
        "name": "recsys-standard",
        "description": "quality check → features → training set → train → evaluate → gate → register → promote",
        "params": {"dataset": "ml100k_ratings", "model": "recsys", "train": {"model": "mf", "epochs": 3},
                   "feature_definitions": None, "feature_service": None, "materialize": False, "metric": None,
                   "aliases": ["candidate", "production"]},
        "steps": [
            {"name": "quality_check", "uses": "quality_check", "with": {"dataset": "${params.dataset}"}, **inline},
            {"name": "features", "uses": "features", "cache": False, **inline,
             "with": {"data": "${steps.quality_check}", "definitions": "${params.feature_definitions}",
                      "feature_service": "${params.feature_service}", "materialize": "${params.materialize}"}},
            {"name": "training_set", "uses": "training_set", "needs": ["features"],
             "with": {"data": "${steps.quality_check}", "feature_service": "${params.feature_service}"}},
            {"name": "train", "uses": "train", "max_retries": 1,
             "with": {"data": "${steps.training_set.dataset}", "row_features": "${steps.training_set.feature_columns}",
                      "train": "${params.train}"}},
            {"name": "evaluate", "uses": "evaluate", "with": {"run": "${steps.train}", "metric": "${params.metric}"},
             **inline},
            {"name": "gate", "uses": "gate", "with": {"evaluation": "${steps.evaluate}", "model": "${params.model}"},
             "cache": False, **inline},
            {"name": "register", "uses": "register", "cache": False, **inline,
             "with": {"run": "${steps.train}", "model": "${params.model}", "gate": "${steps.gate}"}},
            {"name": "promote", "uses": "promote", "cache": False, **inline,
             "with": {"version": "${steps.register}", "aliases": "${params.aliases}"}},
        ],
    })
