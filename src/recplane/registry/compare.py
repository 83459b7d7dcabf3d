"""Two model versions side by side: every metric with its delta and the better version, and the settings that differ.

Which direction is better comes from the training runs' comparison (``metric_direction``), so a run comparison and
a version comparison never disagree about a metric.
"""

from __future__ import annotations

import json
import math

from recplane.registry.lineage import flatten_params
from recplane.registry.records import JsonScalar, MetricComparison, ModelVersion, ParamChange, VersionComparison
from recplane.training.runs import metric_direction

__all__ = ["compare_versions"]


def _number(value: JsonScalar) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _metric(name: str, first: ModelVersion, second: ModelVersion) -> MetricComparison:
    values = (first.metrics.get(name), second.metrics.get(name))
    a, b = _number(values[0]), _number(values[1])
    delta = b - a if a is not None and b is not None else None
    higher = metric_direction(name)
    better: int | None = None
    if delta is not None and higher is not None and delta != 0:
        better = second.version if (delta > 0) == higher else first.version
    return MetricComparison(name=name, values=values, delta=delta, higher_is_better=higher, better=better)


def compare_versions(first: ModelVersion, second: ModelVersion) -> VersionComparison:
    """Every metric either version recorded (test metrics first), and every training setting that differs."""
    names = list(dict.fromkeys([*first.metrics, *second.metrics]))
    names.sort(key=lambda name: (not name.startswith("test."), name))
    flat = flatten_params(first.params), flatten_params(second.params)
    changed = [
        ParamChange(name=name, values=(flat[0].get(name), flat[1].get(name)))
        for name in sorted(set(flat[0]) | set(flat[1]))
        if json.dumps(flat[0].get(name)) != json.dumps(flat[1].get(name))
    ]
    return VersionComparison(
        name=first.name,
        versions=(first.version, second.version),
        metrics=[_metric(name, first, second) for name in names],
        params=changed,
    )
