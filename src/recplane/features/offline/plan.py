"""Planning a training set: which views, which features, which output columns — before touching data.

Pure functions over definitions. The plan resolves feature references (``view:feature``, ``view:*``) against
pinned view versions, splits each view's features into point-in-time lookups and windowed aggregations,
names the output columns and checks that the labels carry every join key and none of the output names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from recplane.errors import InvalidInput, InvalidSpec
from recplane.features.spec import Entity, Feature, FeatureView, parse_feature_ref
from recplane.features.validation import view_join_keys

__all__ = ["OutputFeature", "TrainingSetPlan", "ViewPlan", "plan_training_set", "resolve_feature_refs"]


@dataclass(frozen=True)
class OutputFeature:
    """One requested feature and the column it becomes in the training set."""

    feature: Feature
    output: str


@dataclass(frozen=True)
class ViewPlan:
    """What to compute from one feature view: point-in-time features and windowed aggregations."""

    view: FeatureView
    version: int
    join_keys: tuple[str, ...]
    event_time: str
    created_time: str | None
    point: tuple[OutputFeature, ...]
    aggregations: tuple[OutputFeature, ...]

    @property
    def ttl(self) -> timedelta | None:
        """How long a point-in-time value stays valid after its event time."""
        return self.view.ttl_period

    @property
    def source_columns(self) -> list[str]:
        """Source columns the plan reads (for expressions: all of them, since SQL may name any)."""
        return sorted({*self.join_keys, self.event_time, *([self.created_time] if self.created_time else [])})


@dataclass(frozen=True)
class TrainingSetPlan:
    """The views to join, in request order, and the output columns they add."""

    views: tuple[ViewPlan, ...]

    @property
    def outputs(self) -> list[str]:
        """Every feature column the training set gains, in order."""
        return [out.output for plan in self.views for out in (*plan.point, *plan.aggregations)]


def resolve_feature_refs(refs: Sequence[str], views: Mapping[str, FeatureView]) -> dict[str, list[Feature]]:
    """Expand ``view:*`` and group the requested features by view, keeping request order; no feature twice."""
    grouped: dict[str, list[Feature]] = {}
    for ref in refs:
        view_name, feature_name = parse_feature_ref(ref)
        view = views.get(view_name)
        if view is None:
            raise InvalidInput(f"Feature reference {ref!r} names unknown feature view {view_name!r}.")
        chosen = list(view.features) if feature_name == "*" else [_feature(view, feature_name, ref)]
        taken = grouped.setdefault(view_name, [])
        taken += [feature for feature in chosen if feature not in taken]
    return grouped


def _feature(view: FeatureView, name: str, ref: str) -> Feature:
    feature = view.feature(name)
    if feature is None:
        known = [each.name for each in view.features]
        raise InvalidInput(f"Feature reference {ref!r}: view {view.name!r} has no feature {name!r} (it has {known}).")
    return feature


def plan_training_set(
    refs: Sequence[str],
    views: Mapping[str, tuple[FeatureView, int]],
    entities: Mapping[str, Entity],
    source_event_time: Mapping[str, str | None],
    label_columns: Sequence[str],
    *,
    full_feature_names: bool = False,
) -> TrainingSetPlan:
    """The plan for joining ``refs`` onto labels with columns ``label_columns``; InvalidInput on any mismatch."""
    if not refs:
        raise InvalidInput("Ask for at least one feature, e.g. features=['user_stats:*'] or a feature service name.")
    grouped = resolve_feature_refs(refs, {name: view for name, (view, _) in views.items()})
    plans = [
        _view_plan(views[name][0], views[name][1], features, entities, source_event_time, full_feature_names)
        for name, features in grouped.items()
    ]
    plan = TrainingSetPlan(tuple(plans))
    _check_labels(plan, label_columns, full_feature_names)
    return plan


def _view_plan(
    view: FeatureView,
    version: int,
    features: list[Feature],
    entities: Mapping[str, Entity],
    source_event_time: Mapping[str, str | None],
    full_names: bool,
) -> ViewPlan:
    missing = [name for name in view.entities if name not in entities]
    if missing:
        raise InvalidSpec(f"Feature view {view.name!r} uses unknown entity {missing}; register it first.")
    event_time = view.event_time or source_event_time.get(view.source)
    if event_time is None:
        raise InvalidSpec(f"Feature view {view.name!r}: dataset {view.source!r} declares no event_time; name one.")
    outputs = [OutputFeature(f, f"{view.name}__{f.name}" if full_names else f.name) for f in features]
    return ViewPlan(
        view=view,
        version=version,
        join_keys=tuple(view_join_keys(view, dict(entities))),
        event_time=event_time,
        created_time=view.created_time,
        point=tuple(out for out in outputs if out.feature.kind != "aggregation"),
        aggregations=tuple(out for out in outputs if out.feature.kind == "aggregation"),
    )


def _check_labels(plan: TrainingSetPlan, label_columns: Sequence[str], full_names: bool) -> None:
    for view_plan in plan.views:
        missing = [key for key in view_plan.join_keys if key not in label_columns]
        if missing:
            raise InvalidInput(
                f"The labels lack join key column(s) {missing} of feature view {view_plan.view.name!r}; "
                f"label columns are {list(label_columns)}."
            )
    outputs = plan.outputs
    repeated = sorted({name for name in outputs if outputs.count(name) > 1})
    hint = "" if full_names else " Pass full_feature_names=True to name columns view__feature."
    if repeated:
        raise InvalidInput(f"Feature column name(s) {repeated} come from more than one view.{hint}")
    clashing = sorted(set(outputs) & set(label_columns))
    if clashing:
        raise InvalidInput(f"The labels already have column(s) {clashing}; rename them or drop them.{hint}")
    internal = [column for column in label_columns if column.startswith("__")]
    if internal:
        raise InvalidInput(f"Label column(s) {internal} start with '__', which recplane reserves; rename them.")
