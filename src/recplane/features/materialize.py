"""Materialization: the latest feature values per entity, as of a time, from the lake into the online store.

Online values are computed **by the offline engine itself**, so a lookup at ``end`` returns exactly the
training-set value for a label at ``end``: point-in-time features by
:func:`~recplane.features.offline.engine.latest_point_values` (the engine's ranking — event time, then created
time, then the feature values — and SQL expressions, for every entity at once, without a label table), windowed
aggregations by :func:`~recplane.features.offline.engine.join_features` with one label row per entity at ``end``.
Two changes to the plan make the engine hand back what the store needs, without changing which row wins:

- the view's TTL is dropped (the store keeps the winner; TTL applies when it is *read*, against the read time);
- the winner's event and created time ride along as two extra point features placed *after* the real ones,
  so the engine's tie-break order over the real features is untouched (and at equal event time the winner
  already has the greatest created time, so its own times break no further tie).

Each view becomes up to two online rows per entity: ``<view>`` holds the point-in-time features with the
winner's event/created time (the store's newer-wins rule then protects newer values from re-materialized
older windows), and ``<view>.aggregates`` holds the windowed aggregations with ``end`` as their event time
(an aggregation is a value *as of* a time, not a source row). Keeping them apart matters because an online
row is one unit: writing aggregations as of ``end`` must never replace a point row's event time.

Memory stays bounded: entities are processed in key ranges of ``entity_chunk`` entities, and each range reads
only its source rows (a filtered scan of the Delta version's Arrow dataset, batch by batch).

Incremental runs read only rows whose event time (or created time, when the view has one) is after the
view's watermark — the ``end`` of its last materialization — and aggregations are recomputed only for
entities whose window could have changed. The watermark is stored **in the online store**, in the reserved
view ``_recplane_materializations``, not in the catalog: it describes what *that store* holds, so pointing
recplane at a fresh or flushed store makes the next incremental run a full one instead of silently skipping
history, and the store's newer-wins rule keeps a concurrent older run from moving it backwards.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pydantic import BaseModel

from recplane.auth import Principal
from recplane.errors import InvalidInput, NotFound
from recplane.features.offline.engine import join_features, latest_point_values, time_scalar
from recplane.features.offline.plan import OutputFeature, ViewPlan, plan_training_set
from recplane.features.online.protocol import OnlineStore
from recplane.features.registry import FeatureRegistry
from recplane.features.spec import Entity, Feature, FeatureService, FeatureView, parse_feature_ref
from recplane.lake import DatasetService

__all__ = [
    "AGGREGATES_SUFFIX",
    "WATERMARK_VIEW",
    "MaterializeResult",
    "Materializer",
    "ViewMaterialization",
    "aggregates_view",
]

WATERMARK_VIEW = "_recplane_materializations"
"""Reserved online view: one row per feature view, event time = the ``end`` it was last materialized as of."""
AGGREGATES_SUFFIX = ".aggregates"
DEFAULT_ENTITY_CHUNK = 500_000
_LABEL_TIME = "rp_materialize_ts"
_EVENT = "rp_materialize_event_time"
_CREATED = "rp_materialize_created_time"
_WATERMARK_FEATURES = ["view_version", "source_version", "rows_read", "rows_written"]


def aggregates_view(view: str) -> str:
    """The online view holding a feature view's windowed aggregations."""
    return view + AGGREGATES_SUFFIX


class ViewMaterialization(BaseModel):
    """What materializing one feature view did."""

    view: str
    view_version: int
    source: str
    source_version: int
    start: datetime | None
    """Lower bound on the rows read (the watermark for incremental runs; None = all history)."""
    end: datetime
    incremental: bool
    entities: int
    rows_read: int
    rows_written: int
    """Online rows the store applied (older or equal rows it already held are not counted)."""
    seconds: float


class MaterializeResult(BaseModel):
    """Every view materialized in one run, with totals."""

    views: list[ViewMaterialization]
    end: datetime
    seconds: float

    @property
    def rows_read(self) -> int:
        """Source rows read over all views."""
        return sum(view.rows_read for view in self.views)

    @property
    def rows_written(self) -> int:
        """Online rows applied over all views."""
        return sum(view.rows_written for view in self.views)


@dataclasses.dataclass(frozen=True)
class _Job:
    """One view, planned for the engine: point features carry the winner's times; TTL left to read time."""

    plan: ViewPlan
    dataset: pads.Dataset
    source_version: int
    time_type: pa.DataType
    created_type: pa.DataType | None
    columns: list[str]


class Materializer:
    """Computes online values with the offline engine and writes them to an online store."""

    def __init__(self, registry: FeatureRegistry, datasets: DatasetService, store: OnlineStore) -> None:
        self._registry = registry
        self._datasets = datasets
        self._store = store

    def materialize(
        self,
        views: str | Sequence[str] | None = None,
        *,
        service: str | None = None,
        principal: Principal,
        start: datetime | None = None,
        end: datetime | None = None,
        incremental: bool = False,
        entity_chunk: int = DEFAULT_ENTITY_CHUNK,
        progress: bool = False,
    ) -> MaterializeResult:
        """Materialize ``views`` (names), the views of ``service``, or (neither) every registered view, as of
        ``end`` (default now). ``start`` skips rows older than it; ``incremental`` starts at each view's
        watermark instead."""
        if entity_chunk < 1:
            raise InvalidInput(f"entity_chunk must be at least 1, not {entity_chunk}.")
        if incremental and start is not None:
            raise InvalidInput("Give start or incremental=True, not both: incremental starts at the watermark.")
        as_of = _aware(end) if end is not None else datetime.now(UTC)
        names = self._view_names(views, service)
        started = time.perf_counter()
        with _progress_bar(progress) as bar:
            done = [
                self._materialize_view(
                    name, principal, _aware(start) if start else None, as_of, incremental, entity_chunk, bar
                )
                for name in names
            ]
        return MaterializeResult(views=done, end=as_of, seconds=time.perf_counter() - started)

    def watermark(self, view: str) -> datetime | None:
        """The ``end`` of the view's last materialization into this store (None if never)."""
        try:
            found = self._store.read(WATERMARK_VIEW, [view], _WATERMARK_FEATURES[:1], ttl=None)
        except NotFound:
            return None
        return found.event_times[0]

    def materialized_source_version(self, view: str) -> int | None:
        """The source dataset version the view's last materialization into this store read (None if never)."""
        try:
            found = self._store.read(WATERMARK_VIEW, [view], ["source_version"], ttl=None)
        except NotFound:
            return None
        value = found.values["source_version"][0]
        return None if value is None else int(value)

    def _view_names(self, views: str | Sequence[str] | None, service: str | None) -> list[str]:
        if views is not None and service is not None:
            raise InvalidInput("Name views or a feature service, not both.")
        if service is not None:
            definition = self._registry.get("feature_service", service).definition()
            assert isinstance(definition, FeatureService)
            return list(dict.fromkeys(parse_feature_ref(ref)[0] for ref in definition.features))
        if views is None:
            names = [info.name for info in self._registry.list(kind="feature_view")]
            if not names:
                raise InvalidInput("No feature views are registered; apply some with `recplane features apply`.")
            return names
        return [views] if isinstance(views, str) else list(dict.fromkeys(views))

    def _materialize_view(
        self,
        name: str,
        principal: Principal,
        start: datetime | None,
        end: datetime,
        incremental: bool,
        entity_chunk: int,
        bar: _Bar,
    ) -> ViewMaterialization:
        began = time.perf_counter()
        job = self._job(name, principal)
        lower = self.watermark(name) if incremental else start
        entities = self._entities(job, lower, end)
        task = bar.add(f"{name}", entities.num_rows)
        rows_read = rows_written = 0
        for chunk in _chunks(entities, entity_chunk):
            read, written = self._materialize_chunk(job, chunk, lower, end)
            rows_read += read
            rows_written += written
            bar.advance(task, chunk.num_rows)
        view_version = job.plan.version
        self._record_watermark(name, end, view_version, job.source_version, rows_read, rows_written)
        return ViewMaterialization(
            view=name,
            view_version=view_version,
            source=job.plan.view.source,
            source_version=job.source_version,
            start=lower,
            end=end,
            incremental=incremental,
            entities=entities.num_rows,
            rows_read=rows_read,
            rows_written=rows_written,
            seconds=time.perf_counter() - began,
        )

    def _job(self, name: str, principal: Principal) -> _Job:
        try:
            view, version = self._registry.view(name)
        except NotFound as exc:
            raise InvalidInput(f"{exc.message} (asked to materialize it)", details={"view": name}) from exc
        entities: dict[str, Entity] = {}
        for entity_name in view.entities:
            definition = self._registry.get("entity", entity_name).definition()
            assert isinstance(definition, Entity)
            entities[entity_name] = definition
        opened = self._datasets.open(view.source, principal=principal)  # the team check
        snapshot = opened.table.snapshot(view.source_version)
        dataset = snapshot.to_pyarrow_dataset()
        keys = [key for entity in view.entities for key in entities[entity].join_keys]
        planned = plan_training_set(
            [f"{name}:*"],
            {name: (view, version)},
            entities,
            {view.source: opened.spec.event_time},
            [*keys, _LABEL_TIME],
        ).views[0]
        plan = _materialization_plan(planned)
        schema = dataset.schema
        return _Job(
            plan=plan,
            dataset=dataset,
            source_version=snapshot.version(),
            time_type=schema.field(plan.event_time).type,
            created_type=schema.field(plan.created_time).type if plan.created_time else None,
            columns=_source_columns(plan, schema.names),
        )

    def _entities(self, job: _Job, lower: datetime | None, end: datetime) -> pa.Table:
        """Distinct entity keys to (re)compute, sorted: those with rows that can change their value."""
        plan = job.plan
        keys = list(plan.join_keys)
        conditions = [_not_null([*keys, plan.event_time]), pc.field(plan.event_time) <= _scalar(end, job.time_type)]
        if lower is not None:
            changed = _changed_since(job, lower)
            if plan.aggregations:  # rows leaving a window change its value too
                widest = _widest(plan)
                changed = changed | (pc.field(plan.event_time) > _scalar(lower - widest, job.time_type))
            conditions.append(changed)
        scanned = job.dataset.to_table(columns=keys, filter=_all(conditions))
        distinct = scanned.group_by(keys, use_threads=False).aggregate([])
        return distinct.sort_by([(key, "ascending") for key in keys])

    def _materialize_chunk(
        self, job: _Job, entities: pa.Table, lower: datetime | None, end: datetime
    ) -> tuple[int, int]:
        plan = job.plan
        first = plan.join_keys[0]
        in_range = (pc.field(first) >= entities[first][0]) & (pc.field(first) <= entities[first][-1])
        upto = pc.field(plan.event_time) <= _scalar(end, job.time_type)
        base = _all([_not_null([*plan.join_keys, plan.event_time]), in_range, upto])
        changed = _changed_since(job, lower) if lower is not None else None
        if not plan.aggregations:
            scan = base if changed is None else base & changed
        elif not plan.point:
            scan = base & (pc.field(plan.event_time) > _scalar(end - _widest(plan), job.time_type))
        else:  # aggregations need every row of their window, old ones too; point winners only changed rows
            window = pc.field(plan.event_time) > _scalar(end - _widest(plan), job.time_type)
            scan = base if changed is None else base & (window | changed)
        source = job.dataset.to_table(columns=job.columns, filter=scan)
        point_source = source if changed is None or not plan.aggregations else source.filter(changed)
        written = 0
        if plan.point:
            written += self._write_point(plan, entities, point_source, end)
        if plan.aggregations:
            labels = entities.append_column(_LABEL_TIME, pa.array([end] * entities.num_rows, pa.timestamp("us", "UTC")))
            written += self._write_aggregates(plan, labels, source)
        return source.num_rows, written

    def _write_point(self, plan: ViewPlan, entities: pa.Table, source: pa.Table, end: datetime) -> int:
        found = latest_point_values(dataclasses.replace(plan, aggregations=()), source, end)
        if len(plan.join_keys) > 1:  # the source range is by first key: neighbouring chunks may share some keys
            found = found.join(entities, list(plan.join_keys), join_type="left semi")
        if found.num_rows == 0:
            return 0
        stats = self._store.write(
            plan.view.name,
            found,
            key_columns=list(plan.join_keys),
            feature_columns=[out.output for out in plan.point if out.output not in (_EVENT, _CREATED)],
            event_time_column=_EVENT,
            created_time_column=_CREATED,
        )
        return stats.rows_applied

    def _write_aggregates(self, plan: ViewPlan, labels: pa.Table, source: pa.Table) -> int:
        aggregate_plan = dataclasses.replace(plan, point=())
        joined = _join(aggregate_plan, labels, source)
        stats = self._store.write(
            aggregates_view(plan.view.name),
            joined,
            key_columns=list(plan.join_keys),
            feature_columns=[out.output for out in plan.aggregations],
            event_time_column=_LABEL_TIME,
        )
        return stats.rows_applied

    def _record_watermark(
        self, view: str, end: datetime, view_version: int, source_version: int, read: int, written: int
    ) -> None:
        row = {
            "view": view,
            "end": end,
            "view_version": view_version,
            "source_version": source_version,
            "rows_read": read,
            "rows_written": written,
        }
        self._store.write(
            WATERMARK_VIEW, [row], key_columns=["view"], feature_columns=_WATERMARK_FEATURES, event_time_column="end"
        )


def _materialization_plan(plan: ViewPlan) -> ViewPlan:
    """The training-set plan of a view, minus TTL, with the winner's event and created time as last features."""
    event = Feature(name=_EVENT, expr=_quoted(plan.event_time))
    created = Feature(name=_CREATED, expr=_quoted(plan.created_time) if plan.created_time else "NULL::TIMESTAMPTZ")
    point = plan.point
    if point:
        point = (*point, OutputFeature(event, _EVENT), OutputFeature(created, _CREATED))
    view: FeatureView = plan.view.model_copy(update={"ttl": None})
    return dataclasses.replace(plan, view=view, point=point)


def _join(plan: ViewPlan, labels: pa.Table, source: pa.Table) -> pa.Table:
    from recplane.features.offline.plan import TrainingSetPlan

    return join_features(labels, TrainingSetPlan((plan,)), {plan.view.name: source}, label_time_col=_LABEL_TIME)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source_columns(plan: ViewPlan, available: list[str]) -> list[str]:
    """Columns to read: all when a SQL expression may name any, else keys, times and aggregated/plain columns."""
    features = [out.feature for out in (*plan.point, *plan.aggregations) if out.output not in (_EVENT, _CREATED)]
    if any(feature.expr is not None for feature in features):
        return list(available)
    wanted = {*plan.source_columns, *(f.source_column for f in features if f.source_column)}
    return [name for name in available if name in wanted]


def _widest(plan: ViewPlan) -> timedelta:
    return max(out.feature.window_period or timedelta(0) for out in plan.aggregations)


def _changed_since(job: _Job, lower: datetime) -> pc.Expression:
    """Rows that are new since ``lower``: a later event time, or (late arrivals) a later created time."""
    plan = job.plan
    changed = pc.field(plan.event_time) > _scalar(lower, job.time_type)
    if plan.created_time and job.created_type is not None:
        changed = changed | (pc.field(plan.created_time) > _scalar(lower, job.created_type))
    return changed


def _not_null(columns: Sequence[str]) -> pc.Expression:
    return _all([pc.is_valid(pc.field(name)) for name in columns])


def _all(conditions: Sequence[pc.Expression]) -> pc.Expression:
    combined = conditions[0]
    for condition in conditions[1:]:
        combined = combined & condition
    return combined


def _aware(moment: datetime) -> datetime:
    """Naive times mean UTC, as everywhere in recplane."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _scalar(moment: datetime, data_type: pa.DataType) -> pa.Scalar:
    """``moment`` as a scalar comparable with a column of ``data_type`` (naive timestamp columns are UTC)."""
    scalar = time_scalar(moment, data_type)
    if scalar is None:
        raise InvalidInput(f"Time column type {data_type} cannot be materialized: use a timestamp or date.")
    return scalar


def _chunks(entities: pa.Table, size: int) -> Iterator[pa.Table]:
    for offset in range(0, entities.num_rows, size):
        yield entities.slice(offset, size)


class _Bar:
    """A Rich progress bar over entities, or nothing."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress

    def add(self, description: str, total: int) -> Any:
        return None if self._progress is None else self._progress.add_task(description, total=total)

    def advance(self, task: Any, amount: int) -> None:
        if self._progress is not None:
            self._progress.advance(task, amount)


class _progress_bar:  # used like a function in a with statement
    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("materialize {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("entities"),
                TimeElapsedColumn(),
                transient=False,
            )

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return _Bar(self._progress)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
