"""Train-serve skew: the feature values online lookups served, against what training would have seen.

The served-feature log (:mod:`recplane.features.served_log`) holds, per request, entity and feature, the value
served and when. A skew report reads the log rows of a window and recomputes every one **with the training-set
engine** (:class:`~recplane.features.offline.TrainingSetBuilder`, point-in-time, with the logged entity keys
and serving time as labels) — exactly the value a training set built now gives a label at that time — then
compares the two per feature: how often they differ, by how much (absolute and relative, for numbers) and a few
examples. Any difference is skew: a stale online store (rows that arrived after the last materialization), a
definition changed since serving, a corrupted or hand-written online value, or a bug in either path.

The comparison itself (top of this module) is pure: plain functions over an Arrow table of (online, offline)
JSON values, tested without any store. Values match when equal, numbers within a tolerance
(``|a - b| <= max(rel_tol * max(|a|, |b|), abs_tol)``, integers exactly), lists and maps element by element;
a null on one side only is a mismatch (``missing_online`` / ``missing_offline``). The relative difference of two
numbers is ``|a - b| / max(|a|, |b|)`` (0 when both are 0), so it lies in ``[0, 2]`` whichever side is the
reference. :class:`SkewService` (bottom) is the thin I/O part: read the log, rebuild offline, compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from recplane.auth import Principal
from recplane.errors import InvalidInput, NotFound
from recplane.features.offline import TrainingSetBuilder
from recplane.features.registry import FeatureRegistry
from recplane.features.served_log import DEFAULT_LOG_DATASET, ServedFeatureLog, value_json
from recplane.features.spec import Entity, FeatureService, FeatureView, parse_feature_ref
from recplane.features.validation import view_join_keys
from recplane.lake import DatasetService
from recplane.lake.spec import parse_duration

__all__ = [
    "COMPARED_COLUMNS",
    "DEFAULT_ABS_TOL",
    "DEFAULT_REL_TOL",
    "FeatureSkew",
    "SkewExample",
    "SkewReport",
    "SkewService",
    "compare_feature",
    "numeric_difference",
    "parse_since",
    "since_text",
    "skew_report",
    "values_match",
]

DEFAULT_REL_TOL = 1e-6
DEFAULT_ABS_TOL = 1e-9
DEFAULT_EXAMPLES = 5
COMPARED_COLUMNS = ("request_id", "served_at", "entity", "feature", "status", "online", "offline")
"""Columns of the table the comparison reads; ``entity``, ``online`` and ``offline`` are JSON text."""
_LABEL_TIME = "rp_served_at"


class SkewExample(BaseModel):
    """One served value that differs from its offline value."""

    request_id: str
    served_at: datetime
    entity: dict[str, Any]
    status: str = Field(description="The online status of the entity's view when served: ok, expired or missing.")
    online: Any
    offline: Any


class FeatureSkew(BaseModel):
    """How the served values of one feature compare with the offline ones."""

    feature: str = Field(description="The feature reference, view:feature.")
    rows_compared: int
    mismatches: int
    mismatch_rate: float = Field(description="mismatches / rows_compared (0 when nothing was compared).")
    missing_online: int = Field(description="Mismatches where the online value was null and the offline one not.")
    missing_offline: int = Field(description="Mismatches where the offline value was null and the online one not.")
    numeric_rows: int = Field(description="Rows where both values are numbers (the differences below are over them).")
    mean_abs_diff: float | None = None
    max_abs_diff: float | None = None
    mean_rel_diff: float | None = Field(None, description="Mean of |a - b| / max(|a|, |b|).")
    max_rel_diff: float | None = None
    examples: list[SkewExample] = Field(default_factory=list)


class SkewReport(BaseModel):
    """Train-serve skew per feature over a window of the served-feature log."""

    dataset: str = Field(description="The served-feature log read.")
    since: datetime
    until: datetime
    requests: int = Field(description="Logged lookups in the window.")
    rows_compared: int
    mismatches: int
    mismatch_rate: float
    rel_tol: float
    abs_tol: float
    features: list[FeatureSkew] = Field(description="One row per feature, the highest mismatch rate first.")
    skipped: dict[str, str] = Field(
        default_factory=dict, description="Logged features that could not be recomputed, and why."
    )

    def feature(self, name: str) -> FeatureSkew:
        """The row of one feature (``view:feature``); NotFound when the window has none."""
        for row in self.features:
            if row.feature == name:
                return row
        raise NotFound(f"No served values of {name!r} in this report; it has {[r.feature for r in self.features]}.")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def values_match(
    online: Any, offline: Any, *, rel_tol: float = DEFAULT_REL_TOL, abs_tol: float = DEFAULT_ABS_TOL
) -> bool:
    """Whether a served value equals the offline one (numbers within tolerance, lists and maps per element)."""
    if _is_number(online) and _is_number(offline):
        if isinstance(online, int) and isinstance(offline, int):
            return online == offline
        if math.isnan(online) or math.isnan(offline):
            return math.isnan(online) and math.isnan(offline)
        return math.isclose(online, offline, rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(online, list) and isinstance(offline, list):
        return len(online) == len(offline) and all(
            values_match(a, b, rel_tol=rel_tol, abs_tol=abs_tol) for a, b in zip(online, offline, strict=True)
        )
    if isinstance(online, dict) and isinstance(offline, dict):
        return online.keys() == offline.keys() and all(
            values_match(online[key], offline[key], rel_tol=rel_tol, abs_tol=abs_tol) for key in online
        )
    return type(online) is type(offline) and bool(online == offline)


def numeric_difference(online: Any, offline: Any) -> tuple[float, float] | None:
    """``(|a - b|, |a - b| / max(|a|, |b|))`` when both values are (non-NaN) numbers, else None."""
    if not (_is_number(online) and _is_number(offline)):
        return None
    if (isinstance(online, float) and math.isnan(online)) or (isinstance(offline, float) and math.isnan(offline)):
        return None
    absolute = abs(float(online) - float(offline))
    scale = max(abs(float(online)), abs(float(offline)))
    return absolute, (absolute / scale if scale > 0 else 0.0)


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def compare_feature(
    feature: str,
    rows: Sequence[dict[str, Any]],
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    abs_tol: float = DEFAULT_ABS_TOL,
    max_examples: int = DEFAULT_EXAMPLES,
) -> FeatureSkew:
    """Compare the (online, offline) JSON values of one feature's rows (dicts with :data:`COMPARED_COLUMNS`)."""
    mismatches = missing_online = missing_offline = 0
    differences: list[tuple[float, float]] = []
    examples: list[SkewExample] = []
    for row in rows:
        online, offline = _loads(row["online"]), _loads(row["offline"])
        difference = numeric_difference(online, offline)
        if difference is not None:
            differences.append(difference)
        if values_match(online, offline, rel_tol=rel_tol, abs_tol=abs_tol):
            continue
        mismatches += 1
        missing_online += online is None
        missing_offline += offline is None
        if len(examples) < max_examples:
            examples.append(_example(row, online, offline))
    absolute = [each[0] for each in differences]
    relative = [each[1] for each in differences]
    return FeatureSkew(
        feature=feature,
        rows_compared=len(rows),
        mismatches=mismatches,
        mismatch_rate=mismatches / len(rows) if rows else 0.0,
        missing_online=missing_online,
        missing_offline=missing_offline,
        numeric_rows=len(differences),
        mean_abs_diff=sum(absolute) / len(absolute) if absolute else None,
        max_abs_diff=max(absolute, default=None),
        mean_rel_diff=sum(relative) / len(relative) if relative else None,
        max_rel_diff=max(relative, default=None),
        examples=examples,
    )


def _example(row: dict[str, Any], online: Any, offline: Any) -> SkewExample:
    return SkewExample(
        request_id=row["request_id"],
        served_at=row["served_at"],
        entity=_loads(row["entity"]) or {},
        status=row["status"],
        online=online,
        offline=offline,
    )


def skew_report(
    compared: pa.Table,
    *,
    dataset: str,
    since: datetime,
    until: datetime,
    rel_tol: float = DEFAULT_REL_TOL,
    abs_tol: float = DEFAULT_ABS_TOL,
    max_examples: int = DEFAULT_EXAMPLES,
    skipped: dict[str, str] | None = None,
) -> SkewReport:
    """The skew report of a table of compared values (columns :data:`COMPARED_COLUMNS`), per feature."""
    missing = [column for column in COMPARED_COLUMNS if column not in compared.column_names]
    if missing:
        raise InvalidInput(f"The compared values lack column(s) {missing}; they need {list(COMPARED_COLUMNS)}.")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in compared.select(list(COMPARED_COLUMNS)).to_pylist():
        grouped.setdefault(row["feature"], []).append(row)
    features = [
        compare_feature(name, rows, rel_tol=rel_tol, abs_tol=abs_tol, max_examples=max_examples)
        for name, rows in grouped.items()
    ]
    features.sort(key=lambda row: (-row.mismatch_rate, row.feature))
    total = sum(row.rows_compared for row in features)
    wrong = sum(row.mismatches for row in features)
    return SkewReport(
        dataset=dataset,
        since=since,
        until=until,
        requests=len(set(compared["request_id"].to_pylist())),
        rows_compared=total,
        mismatches=wrong,
        mismatch_rate=wrong / total if total else 0.0,
        rel_tol=rel_tol,
        abs_tol=abs_tol,
        features=features,
        skipped=dict(skipped or {}),
    )


class SkewService:
    """Reads the served-feature log, recomputes each served value offline and reports the skew."""

    def __init__(
        self,
        registry: FeatureRegistry,
        datasets: DatasetService,
        training_sets: TrainingSetBuilder,
        *,
        served_log: ServedFeatureLog | None = None,
        default_dataset: str = DEFAULT_LOG_DATASET,
    ) -> None:
        self._registry = registry
        self._datasets = datasets
        self._training_sets = training_sets
        self._served_log = served_log
        self._default_dataset = default_dataset

    def report(
        self,
        since: timedelta | datetime,
        *,
        principal: Principal,
        features: str | Sequence[str] | None = None,
        dataset: str | None = None,
        now: datetime | None = None,
        rel_tol: float = DEFAULT_REL_TOL,
        abs_tol: float = DEFAULT_ABS_TOL,
        max_examples: int = DEFAULT_EXAMPLES,
    ) -> SkewReport:
        """Skew of the values served from ``since`` (a time, or a period before ``now``) until ``now``."""
        name = dataset or self._default_dataset
        until = _aware(now) if now is not None else datetime.now(UTC)
        start = _window_start(since, until)
        if self._served_log is not None:
            self._served_log.flush()  # lookups of this process logged a moment ago count too
        logged = self._logged(name, start, until, principal)
        logged = self._only(logged, features) if features is not None else logged
        compared, skipped = self._recompute(logged, principal)
        return skew_report(
            compared,
            dataset=name,
            since=start,
            until=until,
            rel_tol=rel_tol,
            abs_tol=abs_tol,
            max_examples=max_examples,
            skipped=skipped,
        )

    def _logged(self, name: str, start: datetime, until: datetime, principal: Principal) -> pa.Table:
        try:
            opened = self._datasets.open(name, principal=principal)
        except NotFound as exc:
            raise NotFound(
                f"No served-feature log {name!r}: nothing was logged to it yet. Look features up with log=True "
                "(or set log_served_features) first.",
                details={"dataset": name},
            ) from exc
        moment = pa.timestamp("us", "UTC")
        window = (pc.field("served_at") >= pa.scalar(start, moment)) & (
            pc.field("served_at") <= pa.scalar(until, moment)
        )
        table = opened.table.snapshot().to_pyarrow_dataset().to_table(filter=window)
        return table.sort_by([("served_at", "ascending"), ("request_id", "ascending")])

    def _only(self, logged: pa.Table, features: str | Sequence[str]) -> pa.Table:
        refs = self._refs(features)
        whole = {parse_feature_ref(ref)[0] for ref in refs if parse_feature_ref(ref)[1] == "*"}
        exact = [ref for ref in refs if parse_feature_ref(ref)[1] != "*"]
        views = pc.list_element(pc.split_pattern(logged["feature"], ":", max_splits=1), 0)
        keep = pc.or_(
            pc.is_in(logged["feature"], pa.array(exact, pa.string())),
            pc.is_in(views, pa.array(list(whole), pa.string())),
        )
        return logged.filter(keep)

    def _refs(self, features: str | Sequence[str]) -> list[str]:
        if not isinstance(features, str):
            if not features:
                raise InvalidInput("features is empty; name some (['view:feature', 'view:*']) or leave it out.")
            return list(features)
        if ":" in features:
            return [features]
        try:
            definition = self._registry.get("feature_service", features).definition()
        except NotFound as exc:
            raise InvalidInput(
                f"{exc.message} Name a feature service or give ['view:feature', 'view:*'].",
                details={"feature_service": features},
            ) from exc
        assert isinstance(definition, FeatureService)
        return list(definition.features)

    def _recompute(self, logged: pa.Table, principal: Principal) -> tuple[pa.Table, dict[str, str]]:
        """The logged rows with their offline values (JSON) as ``offline``; features that cannot be, and why."""
        parts: list[pa.Table] = []
        skipped: dict[str, str] = {}
        views = pc.list_element(pc.split_pattern(logged["feature"], ":", max_splits=1), 0)
        for view in sorted(set(views.to_pylist())):
            rows = logged.filter(pc.equal(views, view))
            part, why = self._recompute_view(view, rows, principal)
            skipped.update(why)
            if part is not None:
                parts.append(part)
        empty = pa.table({column: pa.array([], pa.string()) for column in COMPARED_COLUMNS})
        compared = pa.concat_tables(parts) if parts else empty
        return compared, skipped

    def _recompute_view(
        self, name: str, rows: pa.Table, principal: Principal
    ) -> tuple[pa.Table | None, dict[str, str]]:
        logged_features = sorted(set(rows["feature"].to_pylist()))
        try:
            view, _ = self._registry.view(name)
        except NotFound:
            return None, {ref: f"feature view {name!r} is no longer registered" for ref in logged_features}
        known = {feature.name for feature in view.features}
        skipped = {
            ref: f"view {name!r} no longer has this feature"
            for ref in logged_features
            if parse_feature_ref(ref)[1] not in known
        }
        rows = rows.filter(pc.invert(pc.is_in(rows["feature"], pa.array(list(skipped), pa.string()))))
        if rows.num_rows == 0:
            return None, skipped
        refs = [ref for ref in logged_features if ref not in skipped]
        labels, positions = self._labels(view, rows, principal)
        built = self._training_sets.build(
            labels, refs, principal=principal, label_time_col=_LABEL_TIME, full_feature_names=True
        )
        offline = {ref: built[f"{name}__{parse_feature_ref(ref)[1]}"].to_pylist() for ref in refs}
        values = [
            value_json(offline[ref][position])
            for ref, position in zip(rows["feature"].to_pylist(), positions, strict=True)
        ]
        compared = rows.select(["request_id", "served_at", "entity", "feature", "status"])
        compared = compared.append_column("online", rows["value"]).append_column(
            "offline", pa.array(values, pa.string())
        )
        return compared, skipped

    def _labels(self, view: FeatureView, rows: pa.Table, principal: Principal) -> tuple[pa.Table, list[int]]:
        """One label per distinct (entity, serving time) of the rows, and each row's label position."""
        entities: dict[str, Entity] = {}
        for entity_name in view.entities:
            definition = self._registry.get("entity", entity_name).definition()
            assert isinstance(definition, Entity)
            entities[entity_name] = definition
        keys = view_join_keys(view, entities)
        source = self._datasets.open(view.source, principal=principal).spec
        index: dict[tuple[str, datetime], int] = {}
        positions = [
            index.setdefault((entity, served_at), len(index))
            for entity, served_at in zip(rows["entity"].to_pylist(), rows["served_at"].to_pylist(), strict=True)
        ]
        decoded = [orjson.loads(entity) for entity, _ in index]
        columns: dict[str, pa.Array] = {}
        for key in keys:
            column = pa.array([entity.get(key) for entity in decoded])
            if pa.types.is_null(column.type) and key in source.columns:  # no entity had it: type it as stored
                column = column.cast(source.columns[key].arrow)
            columns[key] = column
        columns[_LABEL_TIME] = pa.array([served_at for _, served_at in index], pa.timestamp("us", "UTC"))
        return pa.table(columns), positions


def parse_since(text: str) -> timedelta | datetime:
    """``30m``, ``6h``, ``1d``, ``7d`` (a period back from now) or an ISO 8601 time; InvalidInput otherwise."""
    cleaned = text.strip()
    try:
        period = parse_duration(cleaned)
    except InvalidInput:
        pass
    else:
        if period <= timedelta(0):
            raise InvalidInput(f"since {text!r} is an empty period; give e.g. 30m, 6h, 1d or 7d.")
        return period
    try:
        return _aware(datetime.fromisoformat(cleaned))
    except ValueError:
        raise InvalidInput(
            f"since {text!r} is neither a period (30m, 6h, 1d, 7d: a number and s, m, h, d or w) nor an ISO 8601 "
            "time (2026-01-31T00:00:00Z).",
            details={"since": text},
        ) from None


def since_text(since: timedelta | datetime | str) -> str:
    """The wire form of ``since`` that :func:`parse_since` reads back (periods in whole seconds)."""
    if isinstance(since, str):
        return since
    if isinstance(since, datetime):
        return _aware(since).isoformat()
    if isinstance(since, timedelta):
        return f"{max(int(since.total_seconds()), 0)}s"
    raise InvalidInput(f"since must be a datetime, a timedelta or text like '1d', not {type(since).__name__}.")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _window_start(since: timedelta | datetime, until: datetime) -> datetime:
    if isinstance(since, datetime):
        start = _aware(since)
    elif isinstance(since, timedelta):
        if since <= timedelta(0):
            raise InvalidInput(f"since must be a positive period (e.g. 1d), not {since}.")
        start = until - since
    else:
        raise InvalidInput(f"since must be a datetime or a timedelta, not {type(since).__name__}.")
    if start > until:
        raise InvalidInput(f"since ({start.isoformat()}) is after the end of the window ({until.isoformat()}).")
    return start
