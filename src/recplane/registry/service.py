"""The model registry: numbered model versions with lineage, and aliases whose every move is kept.

Registering copies the exported model folder into the registry's own store (so deleting the run never breaks a
version) and takes the next version number. Aliases (``production``, ``candidate``, any name) point at versions;
moving one writes an :class:`AliasEvent` in the same transaction, so the history can always say which version
was in production when, who moved it and why — the gap MLflow's registry leaves open.

Concurrency: every registration and alias move of a model first touches the model's row. That row lock (the
write lock on SQLite) serialises them, so ``max(version) + 1`` and an alias's ``from_version`` are never raced;
the only remaining race, two first registrations creating the same model, ends in a unique-constraint conflict
that is retried. Reads (``resolve``) are one indexed query, cheap enough for a server to poll every second.
"""

from __future__ import annotations

import builtins
import json
import math
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from recplane.auth import ADMIN, Principal
from recplane.catalog import Catalog, utcnow
from recplane.catalog.tables import AliasEventRecord, ModelAliasRecord, ModelVersionRecord, RegisteredModelRecord
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidInput, NotFound, Overloaded
from recplane.lake import DatasetService
from recplane.registry.artifacts import MANIFEST, ArtifactStore, read_json_file
from recplane.registry.compare import compare_versions
from recplane.registry.lineage import export_facts, run_lineage, run_metrics, run_params
from recplane.registry.records import (
    LATEST,
    AliasEvent,
    AliasPointer,
    JsonScalar,
    ModelLineage,
    ModelVersion,
    RegisteredModel,
    VersionComparison,
    check_alias,
    check_model_name,
)
from recplane.training.runs import TRAINING_SET_FILE, RunRecord, RunStore

__all__ = ["ModelRegistry", "VersionRef"]

VersionRef = int | str
"""A version number, an alias name or ``"latest"``."""

RUN_MODEL_FOLDER = "model"  # where TrainingService exports a run's model (recplane.training.service.MODEL_FOLDER)
_RETRIES = 8
_TEAM = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class _NewVersion:
    """Everything a version row holds except its number and where its files end up."""

    kind: str
    model_class: str
    signature: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, JsonScalar]
    lineage: ModelLineage
    run_id: str | None
    description: str
    tags: dict[str, str]


def _utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; the catalog stores UTC only."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _version_of(row: ModelVersionRecord, team: str) -> ModelVersion:
    return ModelVersion(
        name=row.name,
        version=row.version,
        team=team,
        artifact_uri=row.artifact_uri,
        kind=row.kind,
        model_class=row.model_class,
        signature=row.signature,
        params=row.params,
        metrics=row.metrics,
        lineage=ModelLineage.model_validate(row.lineage),
        run_id=row.run_id,
        description=row.description,
        tags=row.tags,
        created_by=row.created_by,
        created_at=_utc(row.created_at),
    )


def _event_of(row: AliasEventRecord) -> AliasEvent:
    return AliasEvent(
        id=row.id,
        name=row.name,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        reason=row.reason,
        at=_utc(row.at),
    )


def _normalise_ref(ref: VersionRef) -> VersionRef:
    """An int version (from an int or digits), ``"latest"``, or a checked alias name."""
    if isinstance(ref, bool):
        raise InvalidInput(f"A version reference is a number, an alias or {LATEST!r}, not {ref!r}.")
    if isinstance(ref, str) and ref.isdigit():
        ref = int(ref)
    if isinstance(ref, int):
        if ref < 1:
            raise InvalidInput(f"Model versions count from 1; {ref} is not one.")
        return ref
    return ref if ref == LATEST else check_alias(ref)


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, JsonScalar]:
    clean: dict[str, JsonScalar] = {}
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON (and PostgreSQL) cannot store NaN
        if value is not None and not isinstance(value, str | int | float | bool):
            raise InvalidInput(f"Metric {key!r} must be a number, text or boolean, not {type(value).__name__}.")
        clean[str(key)] = value
    return clean


def _string_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise InvalidInput(f"Tags must map text to text, e.g. {{'owner': 'ads'}}; got {tags!r}.")
    return dict(tags)


class ModelRegistry:
    """Register model versions, resolve references, move aliases with history, compare versions."""

    def __init__(
        self, catalog: Catalog, runs: RunStore, settings: Settings, *, datasets: DatasetService | None = None
    ) -> None:
        self._catalog = catalog
        self._runs = runs
        self._datasets = datasets
        self._store = ArtifactStore(settings.registry_root, settings.home.resolve() / "cache" / "models")

    def register(
        self,
        name: str,
        *,
        run_id: str | None = None,
        artifact_uri: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        lineage: ModelLineage | dict[str, Any] | None = None,
        team: str | None = None,
        model_description: str | None = None,
        principal: Principal = ADMIN,
    ) -> ModelVersion:
        """A new version of model ``name`` (created on first use) from a finished run's exported model, or from
        a folder with manifest.json (``artifact_uri``, any fsspec URL). With both, the run gives lineage, params and
        metrics and the folder the files. ``params``/``metrics``/``lineage`` add to (or replace) what the run says;
        ``team`` owns a new model (default: the caller's, else the run's); ``model_description`` describes the model.
        """
        check_model_name(name)
        if run_id is None and artifact_uri is None:
            raise InvalidInput(
                "Register a model from run_id (a finished run with an exported model) or artifact_uri (a folder "
                "with manifest.json, as written by export_model)."
            )
        run = self._finished_run(run_id, principal) if run_id is not None else None
        source = artifact_uri if artifact_uri is not None else _exported_folder(run)
        new = self._new_version(source, run, description, tags, params, metrics, lineage, principal)
        owner = self._owner(name, team, run, principal)
        staged = self._store.stage(source, name)
        try:
            for attempt in range(_RETRIES):
                try:
                    return self._insert(name, owner, model_description, new, staged, principal)
                except IntegrityError:
                    time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))  # a concurrent first registration won
        finally:
            self._store.discard(staged)  # nothing left once published
        raise Overloaded(f"Model {name!r} is being registered by many callers at once; try again.")

    def list_models(self, *, principal: Principal = ADMIN) -> builtins.list[RegisteredModel]:
        """Every model the caller may see (its team's; all for the administrator), by name."""
        query = select(RegisteredModelRecord).order_by(RegisteredModelRecord.name)
        if not principal.is_admin:
            query = query.where(RegisteredModelRecord.team == principal.team)
        with self._catalog.session() as session:
            models = list(session.scalars(query))
            return self._summaries(session, models)

    def get_model(self, name: str, *, principal: Principal = ADMIN) -> RegisteredModel:
        """One registered model: owner, newest version and current aliases."""
        with self._catalog.session() as session:
            return self._summaries(session, [self._visible(session, name, principal)])[0]

    def list_versions(self, name: str, *, principal: Principal = ADMIN) -> builtins.list[ModelVersion]:
        """Every version of a model, newest first."""
        with self._catalog.session() as session:
            model = self._visible(session, name, principal)
            query = (
                select(ModelVersionRecord)
                .where(ModelVersionRecord.name == name)
                .order_by(ModelVersionRecord.version.desc())
            )
            return [_version_of(row, model.team) for row in session.scalars(query)]

    def get_version(self, name: str, version: int, *, principal: Principal = ADMIN) -> ModelVersion:
        """One version by number."""
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidInput(f"A model version is a number, not {version!r}; use resolve() for aliases.")
        return self.resolve(name, version, principal=principal)

    def resolve(self, name: str, ref: VersionRef = LATEST, *, principal: Principal = ADMIN) -> ModelVersion:
        """The version ``ref`` names: a number, an alias (``production``) or ``"latest"``. One indexed query."""
        ref = _normalise_ref(ref)
        with self._catalog.session() as session:
            found = session.execute(_version_query(name, ref)).first()
            if found is None:
                raise self._missing(session, name, ref, principal)
            row, team = found
            principal.require(team, f"Model {name!r}")
            return _version_of(row, team)

    def set_alias(
        self, name: str, alias: str, version: VersionRef, *, reason: str = "", principal: Principal = ADMIN
    ) -> AliasEvent:
        """Point ``alias`` at ``version`` (a number, or another alias to promote it); the move is recorded with
        its actor, time and ``reason``. Pointing an alias where it already points changes nothing."""
        check_alias(alias)
        ref = _normalise_ref(version)
        with self._catalog.session() as session:
            self._lock(session, name, principal)
            found = session.execute(_version_query(name, ref)).first()
            if found is None:
                raise self._missing(session, name, ref, principal)
            target: int = found[0].version
            current = session.scalars(_alias_query(name, alias)).first()
            if current is not None and current.version == target:
                return _event_of(session.scalars(_events_query(name, alias).limit(1)).one())
            now = utcnow()
            previous = current.version if current is not None else None
            if current is None:
                session.add(ModelAliasRecord(name=name, alias=alias, version=target, updated_at=now))
            else:
                current.version, current.updated_at = target, now
            return self._record_event(session, name, alias, previous, target, reason, principal, now)

    def delete_alias(self, name: str, alias: str, *, reason: str = "", principal: Principal = ADMIN) -> AliasEvent:
        """Remove an alias (its history stays; the event's ``to_version`` is None)."""
        check_alias(alias)
        with self._catalog.session() as session:
            self._lock(session, name, principal)
            current = session.scalars(_alias_query(name, alias)).first()
            if current is None:
                raise NotFound(f"Model {name!r} has no alias {alias!r}; see `recplane models show {name}`.")
            previous = current.version
            session.delete(current)
            return self._record_event(session, name, alias, previous, None, reason, principal, utcnow())

    def alias_history(
        self, name: str, alias: str | None = None, *, principal: Principal = ADMIN
    ) -> builtins.list[AliasEvent]:
        """Every move of the model's aliases (or of one alias), newest first."""
        if alias is not None:
            check_alias(alias)
        with self._catalog.session() as session:
            self._visible(session, name, principal)
            return [_event_of(row) for row in session.scalars(_events_query(name, alias))]

    def get_alias(
        self, name: str, alias: str, *, at: datetime | None = None, principal: Principal = ADMIN
    ) -> AliasPointer:
        """Where ``alias`` points now, or pointed at time ``at`` (from its history; naive times are UTC)."""
        check_alias(alias)
        with self._catalog.session() as session:
            self._visible(session, name, principal)
            if at is None:
                current = session.scalars(_alias_query(name, alias)).first()
                return AliasPointer(name=name, alias=alias, version=current.version if current else None)
            moment = _utc(at)
            last = session.scalars(_events_query(name, alias).where(AliasEventRecord.at <= moment).limit(1)).first()
            return AliasPointer(name=name, alias=alias, version=last.to_version if last else None, at=moment)

    def compare(self, name: str, v1: VersionRef, v2: VersionRef, *, principal: Principal = ADMIN) -> VersionComparison:
        """Two versions (numbers or aliases) side by side: every metric with delta and winner, differing params."""
        return compare_versions(
            self.resolve(name, v1, principal=principal), self.resolve(name, v2, principal=principal)
        )

    def local_path(self, version: ModelVersion) -> Path:
        """A local folder with the version's files (downloaded once into HOME/cache when stored remotely)."""
        return self._store.local_path(version.artifact_uri, version.name, version.version)

    def _finished_run(self, run_id: str, principal: Principal) -> RunRecord:
        run = self._runs.get(run_id, principal=principal)
        if run.status != "finished":
            raise InvalidInput(
                f"Run {run_id} is {run.status}; only finished runs can be registered. "
                "Pick one with `recplane runs list --status finished`."
            )
        return run

    def _new_version(
        self,
        source: str,
        run: RunRecord | None,
        description: str,
        tags: dict[str, str] | None,
        params: dict[str, Any] | None,
        metrics: dict[str, Any] | None,
        lineage: ModelLineage | dict[str, Any] | None,
        principal: Principal,
    ) -> _NewVersion:
        manifest = read_json_file(source, MANIFEST)
        if manifest is None:
            where = f"The exported model folder of run {run.id}" if run is not None else "The folder"
            raise InvalidInput(
                f"{where} ({source}) holds no {MANIFEST}, so there is no exported model to register. Train with "
                "`export: true` (the default) or write the folder with recplane.training.export.export_model."
            )
        kind, model_class, signature = export_facts(manifest, read_json_file(source, "signature.json"))
        base = run_lineage(run, self._training_set_lineage(run, principal)) if run is not None else ModelLineage()
        given = _lineage_update(lineage)
        return _NewVersion(
            kind=kind,
            model_class=model_class,
            signature=signature,
            params={**(run_params(run) if run is not None else {}), **(params or {})},
            metrics=_scalar_metrics({**(run_metrics(run) if run is not None else {}), **(metrics or {})}),
            lineage=base.model_copy(update={**given, "source_uri": source}),
            run_id=run.id if run is not None else None,
            description=description,
            tags=_string_tags(tags),
        )

    def _training_set_lineage(self, run: RunRecord, principal: Principal) -> dict[str, Any] | None:
        """The lineage of the training set the run trained on (kept in its folder), or the one a stored training
        set wrote into the commit of the dataset version the run read."""
        kept = self._runs.directory(run.id) / TRAINING_SET_FILE
        if kept.is_file():
            found = json.loads(kept.read_text())
            return found if isinstance(found, dict) else None
        if self._datasets is None or run.dataset is None or run.dataset_version is None:
            return None
        try:
            history = self._datasets.history(run.dataset, principal=principal)
        except (NotFound, Forbidden):  # the dataset went away (or moved teams): the run's columns still say it
            return None
        for entry in history:
            if entry.version == run.dataset_version:
                found = entry.metadata.get("training_set")
                return found if isinstance(found, dict) else None
        return None

    def _owner(self, name: str, team: str | None, run: RunRecord | None, principal: Principal) -> str:
        """The owning team: an existing model's, else ``team``, the caller's, the run's or 'default'."""
        if team is not None and not _TEAM.fullmatch(team):
            raise InvalidInput(f"Team {team!r} is not valid: letters, digits, '_', '.' and '-' only.")
        with self._catalog.session() as session:
            existing = session.scalar(select(RegisteredModelRecord.team).where(RegisteredModelRecord.name == name))
        if existing is not None:
            principal.require(existing, f"Model {name!r}")
            if team is not None and team != existing:
                raise InvalidInput(f"Model {name!r} belongs to team {existing!r}; its versions cannot go to {team!r}.")
            return existing
        owner = team or principal.team or (run.team if run is not None else None) or "default"
        principal.require(owner, f"A model of team {owner!r}")
        return owner

    def _insert(
        self, name: str, owner: str, description: str | None, new: _NewVersion, staged: str, principal: Principal
    ) -> ModelVersion:
        with self._catalog.session() as session:
            model = self._touch(session, name)
            now = utcnow()
            if model is None:
                model = RegisteredModelRecord(
                    name=name, team=owner, description="", created_by=principal.name, created_at=now, updated_at=now
                )
                session.add(model)
            principal.require(model.team, f"Model {name!r}")
            if description is not None:
                model.description = description
            latest = session.scalar(select(func.max(ModelVersionRecord.version)).where(ModelVersionRecord.name == name))
            number = (latest or 0) + 1
            row = ModelVersionRecord(
                name=name,
                version=number,
                artifact_uri=self._store.version_uri(name, number),
                kind=new.kind,
                model_class=new.model_class,
                signature=new.signature,
                params=new.params,
                metrics=new.metrics,
                lineage=new.lineage.model_dump(mode="json"),
                run_id=new.run_id,
                description=new.description,
                tags=new.tags,
                created_by=principal.name,
                created_at=now,
            )
            session.add(row)
            session.flush()  # a duplicate (name, version) or model name fails here, before any file moves
            self._store.publish(staged, name, number)
            return _version_of(row, model.team)

    @staticmethod
    def _touch(session: Session, name: str) -> RegisteredModelRecord | None:
        """Lock the model's row for this transaction (by writing it) and return it; None if there is no model."""
        session.execute(
            update(RegisteredModelRecord).where(RegisteredModelRecord.name == name).values(updated_at=utcnow())
        )
        return session.scalars(select(RegisteredModelRecord).where(RegisteredModelRecord.name == name)).first()

    def _lock(self, session: Session, name: str, principal: Principal) -> RegisteredModelRecord:
        model = self._touch(session, name)
        if model is None:
            raise _no_model(name)
        principal.require(model.team, f"Model {name!r}")
        return model

    @staticmethod
    def _visible(session: Session, name: str, principal: Principal) -> RegisteredModelRecord:
        model = session.scalars(select(RegisteredModelRecord).where(RegisteredModelRecord.name == name)).first()
        if model is None:
            raise _no_model(name)
        principal.require(model.team, f"Model {name!r}")
        return model

    def _missing(self, session: Session, name: str, ref: VersionRef, principal: Principal) -> NotFound:
        """Why ``ref`` resolved to nothing: no such model (or not the caller's), no versions, version or alias."""
        self._visible(session, name, principal)
        if ref == LATEST:
            return NotFound(f"Model {name!r} has no versions yet; register one with `recplane models register`.")
        if isinstance(ref, int):
            latest = session.scalar(select(func.max(ModelVersionRecord.version)).where(ModelVersionRecord.name == name))
            return NotFound(f"Model {name!r} has no version {ref}; its newest is {latest}.")
        aliases = sorted(session.scalars(select(ModelAliasRecord.alias).where(ModelAliasRecord.name == name)))
        return NotFound(f"Model {name!r} has no alias {ref!r}; its aliases are {aliases}.")

    @staticmethod
    def _record_event(
        session: Session,
        name: str,
        alias: str,
        previous: int | None,
        target: int | None,
        reason: str,
        principal: Principal,
        now: datetime,
    ) -> AliasEvent:
        event = AliasEventRecord(
            name=name,
            alias=alias,
            from_version=previous,
            to_version=target,
            actor=principal.name,
            reason=reason,
            at=now,
        )
        session.add(event)
        session.flush()
        return _event_of(event)

    @staticmethod
    def _summaries(session: Session, models: builtins.list[RegisteredModelRecord]) -> builtins.list[RegisteredModel]:
        names = [model.name for model in models]
        counts = {
            name: (latest, count)
            for name, latest, count in session.execute(
                select(ModelVersionRecord.name, func.max(ModelVersionRecord.version), func.count())
                .where(ModelVersionRecord.name.in_(names))
                .group_by(ModelVersionRecord.name)
            )
        }
        aliases: dict[str, dict[str, int]] = {}
        for row in session.scalars(select(ModelAliasRecord).where(ModelAliasRecord.name.in_(names))):
            aliases.setdefault(row.name, {})[row.alias] = row.version
        return [
            RegisteredModel(
                name=model.name,
                team=model.team,
                description=model.description,
                created_by=model.created_by,
                created_at=_utc(model.created_at),
                updated_at=_utc(model.updated_at),
                latest_version=counts.get(model.name, (None, 0))[0],
                version_count=counts.get(model.name, (None, 0))[1],
                aliases=dict(sorted(aliases.get(model.name, {}).items())),
            )
            for model in models
        ]


def _exported_folder(run: RunRecord | None) -> str:
    """Where the training service exported a run's model."""
    if run is None:
        raise InvalidInput("Give run_id or artifact_uri.")
    return str(Path(run.artifacts_uri) / RUN_MODEL_FOLDER)


def _no_model(name: str) -> NotFound:
    return NotFound(f"There is no registered model {name!r}. List models with `recplane models list`.")


def _lineage_update(lineage: ModelLineage | dict[str, Any] | None) -> dict[str, Any]:
    """The lineage fields a caller set explicitly."""
    if lineage is None:
        return {}
    if isinstance(lineage, ModelLineage):
        return lineage.model_dump(exclude_unset=True)
    try:
        return ModelLineage.model_validate(lineage).model_dump(exclude_unset=True)
    except ValidationError as exc:
        fields = sorted(ModelLineage.model_fields)
        raise InvalidInput(f"Invalid lineage {lineage!r}: {exc.errors()[0]['msg']}. Known fields: {fields}.") from exc


def _version_query(name: str, ref: VersionRef) -> Select[ModelVersionRecord, str]:
    """One indexed query for the version ``ref`` names, with its model's team."""
    query = (
        select(ModelVersionRecord, RegisteredModelRecord.team)
        .join(RegisteredModelRecord, RegisteredModelRecord.name == ModelVersionRecord.name)
        .where(ModelVersionRecord.name == name)
    )
    if isinstance(ref, int):
        return query.where(ModelVersionRecord.version == ref)
    if ref == LATEST:
        return query.order_by(ModelVersionRecord.version.desc()).limit(1)
    on_alias = and_(
        ModelAliasRecord.name == ModelVersionRecord.name, ModelAliasRecord.version == ModelVersionRecord.version
    )
    return query.join(ModelAliasRecord, on_alias).where(ModelAliasRecord.alias == ref)


def _alias_query(name: str, alias: str) -> Select[ModelAliasRecord]:
    return select(ModelAliasRecord).where(ModelAliasRecord.name == name, ModelAliasRecord.alias == alias)


def _events_query(name: str, alias: str | None) -> Select[AliasEventRecord]:
    query = select(AliasEventRecord).where(AliasEventRecord.name == name)
    if alias is not None:
        query = query.where(AliasEventRecord.alias == alias)
    return query.order_by(AliasEventRecord.id.desc())
