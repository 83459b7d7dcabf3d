"""Online lookups: feature values of some entities, read from the online store, with freshness and a status.

A request names entities (their join key values) and features (a feature service or ``view:feature``
references). References are resolved against the registered views exactly as a training set resolves them
(same output names, same errors: an unknown view or feature is an ``InvalidInput`` naming it), and the
caller must be allowed to read each view's source dataset (its team's). The resolution is cached for a few
seconds per (caller team, features), so the serving path is just the store reads.

TTL is applied by the store at read time with the offline engine's rule (a value is fresh while its event time
is ``>= now - ttl``), so a lookup at time ``t`` and a training-set label at ``t`` agree even at the boundary
(the integration tests check that boundary on both backends). Windowed aggregations (materialized as of a
time, see :mod:`recplane.features.materialize`) have no TTL; their freshness is the time they were computed as of.

Every entity gets a status per online view (``ok``, ``expired``: found but older than the TTL, values withheld;
``missing``: never materialized, values null — or, for windowed aggregations, the offline engine's empty-window
value: count and sum 0, last_n ``[]``) and an overall one: ``ok`` when every view is ok, ``missing`` when
some view has nothing for it, else ``expired``. An unknown entity is never an error.

With ``log=True`` (or a service built with ``log_by_default``) the answer is also appended to a served-feature
log dataset (see :mod:`recplane.features.served_log`) under a fresh ``request_id``, returned with the answer so
a caller can join its own records (impressions, clicks) to what it was served; the lookup does not wait for
that write. The log is what train-serve skew reports (:mod:`recplane.features.skew`) compare offline.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from recplane.auth import Principal
from recplane.errors import InvalidInput, NotFound
from recplane.features.materialize import aggregates_view
from recplane.features.offline.plan import plan_training_set
from recplane.features.online.protocol import EntityKey, EntityStatus, OnlineStore
from recplane.features.registry import FeatureRegistry
from recplane.features.served_log import DEFAULT_LOG_DATASET, ServedFeatureLog, ServedLookup
from recplane.features.spec import Entity, FeatureService, FeatureView, parse_feature_ref
from recplane.lake import DatasetService

__all__ = ["EntityRows", "OnlineFeatureService", "OnlineFeatures"]

EntityRows = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
"""Entities as columns (``{"user_id": [1, 2]}``) or as rows (``[{"user_id": 1}, {"user_id": 2}]``)."""
_RANK: dict[EntityStatus, int] = {"ok": 0, "expired": 1, "missing": 2}


@dataclass(frozen=True)
class OnlineFeatures:
    """Values of the requested features for each entity, in request order, with freshness and status."""

    entities: list[dict[str, Any]]
    """Each entity's join key values, as asked."""
    features: list[str]
    """Feature (output) names, in request order — the same names a training set gives its columns."""
    values: dict[str, list[Any]]
    """One list per feature, aligned with ``entities``; null where expired or missing."""
    statuses: list[EntityStatus]
    """Overall status of each entity (ok / expired / missing)."""
    view_statuses: dict[str, list[EntityStatus]] = field(default_factory=dict)
    """Status per online view (``view`` for point features, ``view.aggregates`` for aggregations)."""
    event_times: dict[str, list[datetime | None]] = field(default_factory=dict)
    """Freshness per online view: the event time of each entity's values (aggregations: computed as of)."""
    request_id: str | None = None
    """The id this answer was logged under in the served-feature log (None when it was not logged)."""

    def __len__(self) -> int:
        return len(self.entities)

    def row(self, index: int) -> dict[str, Any]:
        """One entity's values as ``{feature: value}``."""
        return {name: self.values[name][index] for name in self.features}

    def to_pylist(self) -> list[dict[str, Any]]:
        """One dict per entity: its keys, then its feature values (handy for a model's input)."""
        return [{**self.entities[index], **self.row(index)} for index in range(len(self.entities))]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (NumPy vectors become lists, times ISO 8601) that HTTP answers carry."""
        return {
            "entities": self.entities,
            "features": self.features,
            "values": {name: [_plain(value) for value in column] for name, column in self.values.items()},
            "statuses": self.statuses,
            "view_statuses": self.view_statuses,
            "event_times": {
                view: [None if moment is None else moment.isoformat() for moment in times]
                for view, times in self.event_times.items()
            },
            "request_id": self.request_id,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> OnlineFeatures:
        """Rebuild the object from :meth:`to_dict`'s form (the remote client's side of the wire)."""
        return cls(
            entities=list(payload["entities"]),
            features=list(payload["features"]),
            values={name: list(column) for name, column in payload["values"].items()},
            statuses=list(payload["statuses"]),
            view_statuses={view: list(column) for view, column in payload.get("view_statuses", {}).items()},
            event_times={
                view: [None if text is None else datetime.fromisoformat(text) for text in times]
                for view, times in payload.get("event_times", {}).items()
            },
            request_id=payload.get("request_id"),
        )


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class _Lookup:
    """One online view to read: its key columns, TTL, stored feature names and their output names."""

    online_view: str
    view: str
    key_columns: tuple[str, ...]
    ttl: timedelta | None
    features: tuple[str, ...]
    outputs: tuple[str, ...]
    defaults: tuple[Any, ...]
    """Value for an entity with no row: the offline engine's empty-window value for aggregations, else null."""


class OnlineFeatureService:
    """Resolves feature requests against the registry and reads them from an online store."""

    def __init__(
        self,
        registry: FeatureRegistry,
        datasets: DatasetService,
        store: OnlineStore,
        *,
        cache_seconds: float = 5.0,
        served_log: ServedFeatureLog | None = None,
        log_by_default: bool = False,
        log_dataset: str = DEFAULT_LOG_DATASET,
    ) -> None:
        self._registry = registry
        self._datasets = datasets
        self._store = store
        self._served_log = served_log
        self._log_by_default = log_by_default
        self._log_dataset = log_dataset
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str | None, str | tuple[str, ...]], tuple[float, list[_Lookup]]] = {}
        self._lock = threading.Lock()

    @property
    def store(self) -> OnlineStore:
        """The online store read from."""
        return self._store

    def online_features(
        self,
        entities: EntityRows,
        features: str | Sequence[str],
        *,
        principal: Principal,
        now: datetime | None = None,
        log: bool | None = None,
        log_dataset: str | None = None,
    ) -> OnlineFeatures:
        """Feature values of ``entities`` (columns or rows of join key values), as of ``now`` (default: now).

        ``log`` (default: the service's ``log_by_default``) also appends the answer to the served-feature log
        ``log_dataset`` (default: the service's), stamped with ``now`` as its serving time."""
        logging_to = self._log_target(log, log_dataset, principal)
        lookups = self._resolve(features, principal)
        rows = _entity_rows(entities)
        reference = now if now is not None else datetime.now(UTC)
        if reference.tzinfo is None:
            reference = reference.replace(tzinfo=UTC)
        values: dict[str, list[Any]] = {}
        view_statuses: dict[str, list[EntityStatus]] = {}
        event_times: dict[str, list[datetime | None]] = {}
        for lookup in lookups:
            found, statuses, times = self._read(lookup, rows, reference)
            values.update(found)
            view_statuses[lookup.online_view] = statuses
            event_times[lookup.online_view] = times
        outputs = [output for lookup in lookups for output in lookup.outputs]
        keys = list(dict.fromkeys(key for lookup in lookups for key in lookup.key_columns))
        asked = [{key: row.get(key) for key in keys} for row in rows]
        answer = OnlineFeatures(
            asked,
            outputs,
            {name: values[name] for name in outputs},
            _overall(view_statuses, len(rows)),
            view_statuses,
            event_times,
        )
        if logging_to is None:
            return answer
        request_id = uuid.uuid4().hex
        self._log(logging_to, request_id, reference, answer, lookups)
        return dataclasses.replace(answer, request_id=request_id)

    def _log_target(self, log: bool | None, dataset: str | None, principal: Principal) -> str | None:
        """The log dataset this lookup goes to (checked, created on first use), or None when not logging."""
        if not (self._log_by_default if log is None else log):
            return None
        if self._served_log is None:
            raise InvalidInput("This online feature service has no served-feature log; it cannot log lookups.")
        target = dataset or self._log_dataset
        self._served_log.prepare(target, principal)
        return target

    def _log(
        self, dataset: str, request_id: str, served_at: datetime, found: OnlineFeatures, lookups: list[_Lookup]
    ) -> None:
        assert self._served_log is not None
        refs = [
            (output, f"{lookup.view}:{feature}", lookup.online_view)
            for lookup in lookups
            for feature, output in zip(lookup.features, lookup.outputs, strict=True)
        ]
        snapshot = ServedLookup(
            request_id=request_id,
            served_at=served_at,
            entities=found.entities,
            features=refs,
            values={name: list(column) for name, column in found.values.items()},  # the caller may edit its lists
            view_statuses=found.view_statuses,
            event_times=found.event_times,
        )
        self._served_log.append(dataset, snapshot)

    def _read(
        self, lookup: _Lookup, rows: list[Mapping[str, Any]], now: datetime
    ) -> tuple[dict[str, list[Any]], list[EntityStatus], list[datetime | None]]:
        missing_columns = [key for key in lookup.key_columns if not any(key in row for row in rows)]
        if rows and missing_columns:
            raise InvalidInput(
                f"The entities lack join key(s) {missing_columns} of feature view {lookup.view!r}; "
                f"give them, e.g. {{{', '.join(repr(k) + ': [...]' for k in lookup.key_columns)}}}.",
                details={"view": lookup.view, "missing_keys": missing_columns},
            )
        positions, keys = _present_keys(rows, lookup.key_columns)
        try:
            result = (
                self._store.read(lookup.online_view, keys, lookup.features, ttl=lookup.ttl, now=now) if keys else None
            )
        except NotFound as exc:
            raise NotFound(
                f"Feature view {lookup.view!r} has not been materialized to the online store yet; run "
                f"`recplane features materialize --view {lookup.view}`.",
                details={"view": lookup.view},
            ) from exc
        if result is not None and len(positions) == len(rows) and all(d is None for d in lookup.defaults):
            # Every entity was asked and a missing one reads as null anyway: the store's columns are the answer.
            found = {output: result.values[name] for name, output in zip(lookup.features, lookup.outputs, strict=True)}
            return found, list(result.statuses), list(result.event_times)
        pairs = zip(lookup.outputs, lookup.defaults, strict=True)
        columns = {output: _filled(default, len(rows)) for output, default in pairs}
        statuses: list[EntityStatus] = ["missing"] * len(rows)
        times: list[datetime | None] = [None] * len(rows)
        if result is None:
            return columns, statuses, times
        for slot, index in enumerate(positions):
            statuses[index] = result.statuses[slot]
            times[index] = result.event_times[slot]
        for name, output in zip(lookup.features, lookup.outputs, strict=True):
            column, found_values = columns[output], result.values[name]
            for slot, index in enumerate(positions):
                if result.statuses[slot] != "missing":
                    column[index] = found_values[slot]
        return columns, statuses, times

    def _resolve(self, features: str | Sequence[str], principal: Principal) -> list[_Lookup]:
        request: str | tuple[str, ...] = features if isinstance(features, str) else tuple(features)
        cache_key = (principal.team, request)
        with self._lock:
            hit = self._cache.get(cache_key)
        if hit is not None and time.monotonic() - hit[0] < self._cache_seconds:
            return hit[1]
        lookups = self._lookups(self._refs(features), principal)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[cache_key] = (time.monotonic(), lookups)
        return lookups

    def _refs(self, features: str | Sequence[str]) -> list[str]:
        if isinstance(features, str):
            if ":" in features:
                return [features]
            try:
                definition = self._registry.get("feature_service", features).definition()
            except NotFound as exc:
                raise InvalidInput(
                    f"{exc.message} Name a feature service or give ['view:feature', ...].",
                    details={"feature_service": features},
                ) from exc
            assert isinstance(definition, FeatureService)
            return list(definition.features)
        return list(features)

    def _lookups(self, refs: list[str], principal: Principal) -> list[_Lookup]:
        if not refs:
            raise InvalidInput("Ask for at least one feature, e.g. features=['user_stats:*'] or a feature service.")
        views: dict[str, tuple[FeatureView, int]] = {}
        for name in dict.fromkeys(parse_feature_ref(ref)[0] for ref in refs):
            try:
                views[name] = self._registry.view(name)
            except NotFound as exc:
                unknown = [ref for ref in refs if parse_feature_ref(ref)[0] == name]
                raise InvalidInput(
                    f"Unknown feature(s) {unknown}: no feature view named {name!r}.",
                    details={"unknown_features": unknown},
                ) from exc
        entities: dict[str, Entity] = {}
        for view, _ in views.values():
            for entity_name in view.entities:
                definition = self._registry.get("entity", entity_name).definition()
                assert isinstance(definition, Entity)
                entities[entity_name] = definition
        event_times = {  # opening each source is also the team check
            view.source: self._datasets.open(view.source, principal=principal).spec.event_time
            for view, _ in views.values()
        }
        keys = list(dict.fromkeys(k for entity in entities.values() for k in entity.join_keys))
        plan = plan_training_set(refs, views, entities, event_times, keys)
        lookups = []
        for each in plan.views:
            name = each.view.name
            if each.point:
                lookups.append(_lookup(name, name, each.join_keys, each.ttl, each.point))
            if each.aggregations:
                lookups.append(_lookup(aggregates_view(name), name, each.join_keys, None, each.aggregations))
        return lookups


_EMPTY_WINDOW: dict[str | None, Any] = {"count": 0, "sum": 0, "last_n": []}


def _lookup(online_view: str, view: str, keys: tuple[str, ...], ttl: timedelta | None, outputs: Any) -> _Lookup:
    return _Lookup(
        online_view,
        view,
        keys,
        ttl,
        tuple(out.feature.name for out in outputs),
        tuple(out.output for out in outputs),
        tuple(_EMPTY_WINDOW.get(out.feature.agg) for out in outputs),
    )


def _filled(default: Any, count: int) -> list[Any]:
    """``count`` copies of a default (lists copied, so callers may change one entity's value safely)."""
    return [list(default) for _ in range(count)] if isinstance(default, list) else [default] * count


def _overall(view_statuses: dict[str, list[EntityStatus]], count: int) -> list[EntityStatus]:
    """Each entity's worst status over the views (``missing`` when no view was read)."""
    columns = list(view_statuses.values())
    if len(columns) == 1:
        return list(columns[0])
    return [
        max((column[index] for column in columns), key=_RANK.__getitem__, default="missing") for index in range(count)
    ]


def _present_keys(rows: list[Mapping[str, Any]], columns: tuple[str, ...]) -> tuple[list[int], list[EntityKey]]:
    """Positions of the rows whose key columns are all given, and those rows' keys."""
    if len(columns) == 1:
        column = columns[0]
        values: list[Any] = [row.get(column) for row in rows]
        positions = [index for index, value in enumerate(values) if value is not None]
        return positions, values if len(positions) == len(values) else [values[index] for index in positions]
    positions = [index for index, row in enumerate(rows) if all(row.get(key) is not None for key in columns)]
    return positions, [_key(rows[index], columns) for index in positions]


def _key(row: Mapping[str, Any], columns: tuple[str, ...]) -> EntityKey:
    if len(columns) == 1:
        value: EntityKey = row[columns[0]]
        return value
    return tuple(row[column] for column in columns)


def _entity_rows(entities: EntityRows) -> list[Mapping[str, Any]]:
    """Entities as a list of rows, whichever shape they came in."""
    if isinstance(entities, Mapping):
        columns = {name: list(values) for name, values in entities.items()}
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise InvalidInput(
                f"Entity key columns have different lengths: { {k: len(v) for k, v in columns.items()} }."
            )
        count = lengths.pop() if lengths else 0
        return [{name: values[index] for name, values in columns.items()} for index in range(count)]
    if isinstance(entities, str | bytes):
        raise InvalidInput("entities must be {key: [values]} or a list of {key: value} rows, not a string.")
    rows = list(entities)
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInput(f"Entity {index} is a {type(row).__name__}; give {{key: value}} rows.")
    return rows
