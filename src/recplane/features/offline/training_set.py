"""Training sets from registered definitions: pin versions, read sources from the lake, join, record lineage.

The builder resolves a feature service (or a list of ``view:feature`` references) to the latest registered
view versions, reads each view's source dataset at its pinned Delta version (or the newest) through
deltalake's Arrow dataset, and hands everything to the DuckDB engine. The result carries its lineage — the
view versions and source dataset versions it used — in its schema metadata under ``recplane.lineage``, and,
when written as a dataset, in that version's commit metadata too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from recplane.auth import Principal
from recplane.errors import InvalidInput, NotFound
from recplane.features.offline.engine import DEFAULT_CHUNK_ROWS, SourceData, join_features
from recplane.features.offline.plan import TrainingSetPlan, plan_training_set
from recplane.features.registry import FeatureRegistry
from recplane.features.spec import Entity, FeatureService, FeatureView, parse_feature_ref
from recplane.lake import DatasetService
from recplane.lake.spec import DatasetSpec, type_string

__all__ = ["LINEAGE_KEY", "TrainingSetBuilder", "lineage_of"]

LINEAGE_KEY = b"recplane.lineage"


def lineage_of(table: pa.Table) -> dict[str, Any]:
    """The lineage a training set carries in its schema metadata ({} when it has none)."""
    raw = (table.schema.metadata or {}).get(LINEAGE_KEY)
    return json.loads(raw) if raw else {}


class TrainingSetBuilder:
    """Point-in-time correct training sets over registered feature views."""

    def __init__(self, registry: FeatureRegistry, datasets: DatasetService) -> None:
        self._registry = registry
        self._datasets = datasets

    def build(
        self,
        labels: pa.Table | str,
        features: str | Sequence[str],
        *,
        principal: Principal,
        label_time_col: str = "ts",
        exclude_created_after_label: bool = False,
        full_feature_names: bool = False,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        labels_version: int | None = None,
        write_to: str | None = None,
        author: str | None = None,
        pinned: Mapping[str, Any] | None = None,
    ) -> pa.Table:
        """``labels`` (a table or a dataset name) with the requested features joined point-in-time correct.

        ``pinned``: the lineage of an earlier build (``lineage_of``); its feature service, view and source dataset
        versions are used instead of the newest, so the same labels give the same training set again.
        """
        pins = pinned or {}
        label_table, label_lineage = self._labels(labels, labels_version, principal)
        refs, service = self._refs(features, (pins.get("feature_service") or {}).get("version"))
        plan = self._plan(refs, label_table.column_names, full_feature_names, principal, pins.get("feature_views"))
        sources, source_versions = self._sources(plan, principal, pins.get("sources"))
        joined = join_features(
            label_table,
            plan,
            sources,
            label_time_col=label_time_col,
            exclude_created_after_label=exclude_created_after_label,
            chunk_rows=chunk_rows,
        )
        lineage = {
            "feature_service": service,
            "features": list(refs),
            "feature_views": {view.view.name: view.version for view in plan.views},
            "sources": source_versions,
            "labels": label_lineage,
            "label_time_col": label_time_col,
            "exclude_created_after_label": exclude_created_after_label,
        }
        if write_to is not None:
            version = self._write(write_to, joined, lineage, label_time_col, principal, author)
            lineage["written"] = {"dataset": write_to, "version": version}
        metadata = {**(joined.schema.metadata or {}), LINEAGE_KEY: json.dumps(lineage).encode()}
        return joined.replace_schema_metadata(metadata)

    def _labels(
        self, labels: pa.Table | str, version: int | None, principal: Principal
    ) -> tuple[pa.Table, dict[str, Any] | None]:
        if isinstance(labels, pa.Table):
            if version is not None:
                raise InvalidInput("labels_version applies to labels given as a dataset name, not to a table.")
            return labels, None
        if not isinstance(labels, str):
            raise InvalidInput(f"labels must be a pyarrow.Table or a dataset name, not {type(labels).__name__}.")
        opened = self._datasets.open(labels, principal=principal)
        pinned = opened.table.snapshot(version).version()
        table = self._datasets.read(labels, principal=principal, version=pinned)
        return table, {"dataset": labels, "version": pinned}

    def _refs(
        self, features: str | Sequence[str], service_version: int | None = None
    ) -> tuple[list[str], dict[str, Any] | None]:
        if isinstance(features, str):
            if ":" in features:
                return [features], None
            info = self._registry.get("feature_service", features, version=service_version)
            service = info.definition()
            assert isinstance(service, FeatureService)
            return list(service.features), {"name": info.name, "version": info.version}
        return list(features), None

    def _plan(
        self,
        refs: list[str],
        label_columns: list[str],
        full_names: bool,
        principal: Principal,
        view_versions: Mapping[str, int] | None = None,
    ) -> TrainingSetPlan:
        view_names = list(dict.fromkeys(parse_feature_ref(ref)[0] for ref in refs))
        views: dict[str, tuple[FeatureView, int]] = {}
        for name in view_names:
            try:
                views[name] = self._registry.view(name, version=(view_versions or {}).get(name))
            except NotFound as exc:
                raise InvalidInput(f"{exc.message} (asked for by the feature references {refs})") from exc
        entities: dict[str, Entity] = {}
        for view, _ in views.values():
            for entity_name in view.entities:
                definition = self._registry.get("entity", entity_name).definition()
                assert isinstance(definition, Entity)
                entities[entity_name] = definition
        event_times = {
            view.source: self._datasets.open(view.source, principal=principal).spec.event_time
            for view, _ in views.values()
        }
        return plan_training_set(refs, views, entities, event_times, label_columns, full_feature_names=full_names)

    def _sources(
        self, plan: TrainingSetPlan, principal: Principal, pinned: Mapping[str, int] | None = None
    ) -> tuple[dict[str, SourceData], dict[str, int]]:
        sources: dict[str, SourceData] = {}
        versions: dict[str, int] = {}
        for view in plan.views:
            opened = self._datasets.open(view.view.source, principal=principal)
            snapshot = opened.table.snapshot((pinned or {}).get(view.view.source, view.view.source_version))
            sources[view.view.name] = snapshot.to_pyarrow_dataset()
            versions[view.view.source] = snapshot.version()
        return sources, versions

    def _write(
        self,
        name: str,
        table: pa.Table,
        lineage: dict[str, Any],
        time_col: str,
        principal: Principal,
        author: str | None,
    ) -> int:
        try:
            self._datasets.open(name, principal=principal)
        except NotFound:
            self._datasets.create(_spec_for(name, table, time_col, principal), principal=principal, author=author)
        return self._datasets.replace(
            name, table, principal=principal, author=author, metadata={"training_set": lineage}
        )


def _spec_for(name: str, table: pa.Table, time_col: str, principal: Principal) -> DatasetSpec:
    """A dataset spec for a training set: its columns as they are, the label time as event time."""
    try:
        columns = {field.name: type_string(field.type) for field in table.schema}
    except Exception as exc:  # an Arrow type recplane cannot store: say which
        raise InvalidInput(f"The training set cannot be written as dataset {name!r}: {exc}") from exc
    event_time = time_col if pa.types.is_timestamp(table.schema.field(time_col).type) else None
    return DatasetSpec(
        name=name,
        team=principal.team or "default",
        description="A point-in-time training set built by recplane features.",
        columns=columns,
        event_time=event_time,
    )
