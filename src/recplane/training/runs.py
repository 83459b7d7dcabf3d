"""Training runs in the catalog: what was trained, on which data and code, how it went, and where its files are.

A run is one row of ``training_runs`` plus one row per epoch in ``training_run_epochs``. :class:`RunStore` writes
and reads them (reads check the caller's team, like datasets); :class:`RunRecorder` is the trainer callback that
fills a run as training goes and writes its files under ``<home>/artifacts/runs/<run id>/``:

    model.pt         the best weights (``state_dict``)
    curve.parquet    step, loss: the loss of every optimizer step
    epochs.parquet   epoch, loss, seconds, one column per validation metric
    metrics.json     the final metrics (test metrics, best valid, timings ...)
    config.json      the resolved training config

The trainer does not call callbacks when training raises, so a failed run is ended by the recorder's context
manager (or its :meth:`RunRecorder.fail`), which stores the error text and whatever files exist so far.
"""

from __future__ import annotations

import builtins
import json
import math
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, get_args

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from recplane.auth import ADMIN, Principal
from recplane.catalog import Catalog, utcnow
from recplane.catalog.tables import TrainingRun, TrainingRunEpoch
from recplane.errors import InvalidInput, NotFound
from recplane.training.callbacks import RunInfo, RunPruned, TrainCallback

if TYPE_CHECKING:
    from recplane.training.trainer import EpochRecord, TrainResult

__all__ = [
    "TRAINING_SET_FILE",
    "ComparisonRow",
    "NewRun",
    "RunComparison",
    "RunEpoch",
    "RunMetrics",
    "RunRecord",
    "RunRecorder",
    "RunStatus",
    "RunStore",
    "SourceVersion",
    "compare_runs",
    "metric_direction",
    "source_version",
]

RunStatus = Literal["running", "finished", "failed", "pruned"]
STATUSES: tuple[str, ...] = get_args(RunStatus)
MAX_LIST = 1000
TRAINING_SET_FILE = "training_set.json"  # in a run's folder: the lineage of the training set it trained on
JsonScalar = str | int | float | bool | None
# Metrics where a smaller value is the better one; every other metric is "higher is better".
_LOWER_IS_BETTER = frozenset(
    {
        "loss",
        "final_loss",
        "log_loss",
        "logloss",
        "train_seconds",
        "average_popularity",
        "averagepopularity",
        "rmse",
        "mae",
    }
)
# Facts about a run that are not scored: shown when they differ, never highlighted as best.
_UNSCORED = frozenset(
    {
        "best_epoch",
        "epochs_run",
        "stopped_early",
        "num_users",
        "num_items",
        "train_rows",
        "num_parameters",
        "valid_metric",
        "checkpoint",
    }
)


class RunEpoch(BaseModel):
    """One epoch of a run: mean training loss, validation metrics and seconds (training and evaluation)."""

    epoch: int
    loss: float | None
    valid: dict[str, float | None] = Field(default_factory=dict)
    seconds: float


class RunMetrics(BaseModel):
    """A run's outcome (filled when it finishes) and the size of its data and model (filled when it starts)."""

    test: dict[str, float | None] = Field(default_factory=dict, description="Test metrics of the best weights.")
    valid_metric: str | None = Field(default=None, description="The metric that picked the best epoch.")
    best_valid: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    final_loss: float | None = Field(default=None, description="Mean training loss of the last epoch.")
    stopped_early: bool | None = None
    train_seconds: float | None = None
    samples_per_second: float | None = None
    num_users: int | None = None
    num_items: int | None = None
    train_rows: int | None = None
    num_parameters: int | None = None
    checkpoint: str | None = Field(default=None, description="The last checkpoint written (resume from it).")


class RunRecord(BaseModel):
    """A training run as the catalog keeps it; ``epochs`` is filled by get (empty in listings)."""

    id: str
    name: str
    team: str
    model: str
    status: RunStatus
    config: dict[str, Any] = Field(description="The resolved training config.")
    params: dict[str, Any] = Field(description="The model's constructor parameters.")
    git_sha: str | None = Field(default=None, description="Commit of the recplane source tree, when a git checkout.")
    git_dirty: bool | None = Field(default=None, description="Whether that tree had uncommitted changes.")
    recplane_version: str
    dataset: str | None = None
    dataset_version: int | None = None
    item_features: str | None = None
    item_features_version: int | None = None
    metrics: RunMetrics
    artifacts_uri: str = Field(description="The folder with model.pt, curve/epochs parquet and JSON files.")
    error: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    group: str | None = Field(default=None, description="A family of runs, e.g. the trials of a tuning study.")
    parent_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    epochs: list[RunEpoch] = Field(default_factory=list)


class ComparisonRow(BaseModel):
    """One row of a comparison: a setting that differs between the runs, or a metric; one value per run."""

    name: str
    kind: Literal["param", "metric"]
    values: list[JsonScalar]
    best: int | None = Field(default=None, description="Index of the run with the best value (metrics only).")
    higher_is_better: bool | None = None


class RunComparison(BaseModel):
    """Runs side by side: the settings that differ and every final metric, with the best run per metric."""

    run_ids: list[str]
    runs: list[RunRecord]
    rows: list[ComparisonRow]


@dataclass(frozen=True)
class SourceVersion:
    """Which recplane code ran: the git commit of a source checkout (and whether it was dirty), and the version."""

    git_sha: str | None
    git_dirty: bool | None
    version: str


@dataclass
class NewRun:
    """What a caller knows before training starts. ``params`` default to ``config["params"]``."""

    model: str
    config: dict[str, Any]
    team: str = "default"
    name: str | None = None
    params: dict[str, Any] | None = None
    dataset: str | None = None
    dataset_version: int | None = None
    item_features: str | None = None
    item_features_version: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    group: str | None = None
    parent_id: str | None = None


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_version() -> SourceVersion:
    """The running recplane's commit when it is imported from a git checkout (else only the package version)."""
    from recplane import __version__

    package = Path(__file__).resolve().parents[1]
    # An installed copy can sit inside some other repository (a venv in a project): only trust git when it
    # tracks this very package file.
    if _git(package, "ls-files", "--error-unmatch", "__init__.py") is None:
        return SourceVersion(None, None, __version__)
    sha = _git(package, "rev-parse", "HEAD")
    status = _git(package, "status", "--porcelain", "--untracked-files=no")
    return SourceVersion(sha, None if status is None else bool(status), __version__)


def _finite(value: float | None) -> float | None:
    """NaN and infinities become None: JSON (and PostgreSQL) cannot store them."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _finite_dict(values: dict[str, float]) -> dict[str, float | None]:
    return {key: _finite(value) for key, value in values.items()}


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; the catalog stores UTC only."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _record_of(row: TrainingRun, epochs: Sequence[TrainingRunEpoch] = ()) -> RunRecord:
    return RunRecord(
        id=row.id,
        name=row.name,
        team=row.team,
        model=row.model,
        status=row.status,
        config=row.config,
        params=row.params,
        git_sha=row.git_sha,
        git_dirty=row.git_dirty,
        recplane_version=row.recplane_version,
        dataset=row.dataset,
        dataset_version=row.dataset_version,
        item_features=row.item_features,
        item_features_version=row.item_features_version,
        metrics=RunMetrics.model_validate(row.metrics),
        artifacts_uri=row.artifacts_uri,
        error=row.error,
        tags=row.tags,
        group=row.group,
        parent_id=row.parent_id,
        created_at=_utc(row.created_at),
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        epochs=[RunEpoch(epoch=e.epoch, loss=e.loss, valid=e.valid, seconds=e.seconds) for e in epochs],
    )


class RunStore:
    """Create, update, read, list and compare training runs in the catalog."""

    def __init__(self, catalog: Catalog, artifacts_root: Path) -> None:
        self._catalog = catalog
        self._root = artifacts_root

    def directory(self, run_id: str) -> Path:
        """The folder of a run's files."""
        return self._root / "runs" / run_id

    def create(self, run: NewRun, *, principal: Principal = ADMIN) -> RunRecord:
        """Register a run (status ``running``) owned by ``run.team``; its folder is created too."""
        principal.require(run.team, f"A training run of team {run.team!r}")
        run_id = uuid.uuid4().hex[:12]
        source = source_version()
        now = utcnow()
        directory = self.directory(run_id)
        directory.mkdir(parents=True, exist_ok=True)
        row = TrainingRun(
            id=run_id,
            name=run.name or f"{run.model}-{now:%Y%m%d-%H%M%S}",
            team=run.team,
            model=run.model,
            status="running",
            config=run.config,
            params=run.params if run.params is not None else dict(run.config.get("params") or {}),
            git_sha=source.git_sha,
            git_dirty=source.git_dirty,
            recplane_version=source.version,
            dataset=run.dataset,
            dataset_version=run.dataset_version,
            item_features=run.item_features,
            item_features_version=run.item_features_version,
            metrics={},
            artifacts_uri=str(directory),
            tags=dict(run.tags),
            group=run.group,
            parent_id=run.parent_id,
            created_at=now,
        )
        with self._catalog.session() as session:
            if run.parent_id is not None and session.get(TrainingRun, run.parent_id) is None:
                raise NotFound(f"Parent run {run.parent_id!r} does not exist; create the study's run first.")
            session.add(row)
            session.flush()
            return _record_of(row)

    def start(self, run_id: str, *, config: dict[str, Any], metrics: RunMetrics) -> None:
        """Training began: store the resolved config and the data/model sizes."""
        with self._catalog.session() as session:
            row = self._running(session, run_id)
            row.config = config
            row.params = dict(config.get("params") or row.params)
            row.metrics = metrics.model_dump(mode="json", exclude_none=True)
            row.started_at = utcnow()

    def log_epoch(self, run_id: str, epoch: RunEpoch) -> None:
        """Store one epoch (again: a repeated epoch number replaces the earlier row)."""
        with self._catalog.session() as session:
            self._running(session, run_id)
            query = select(TrainingRunEpoch).where(
                TrainingRunEpoch.run_id == run_id, TrainingRunEpoch.epoch == epoch.epoch
            )
            row = session.scalars(query).first() or TrainingRunEpoch(run_id=run_id, epoch=epoch.epoch)
            row.loss = epoch.loss
            row.valid = dict(epoch.valid)
            row.seconds = epoch.seconds
            session.add(row)

    def finish(self, run_id: str, metrics: RunMetrics) -> RunRecord:
        """The run ended well: store its final metrics."""
        return self._end(run_id, "finished", metrics=metrics)

    def fail(self, run_id: str, error: str) -> RunRecord:
        """The run raised: store the error text."""
        return self._end(run_id, "failed", error=error)

    def prune(self, run_id: str, reason: str = "") -> RunRecord:
        """A tuner stopped the run early because it was not promising."""
        return self._end(run_id, "pruned", error=reason or None)

    def get(self, run_id: str, *, principal: Principal = ADMIN) -> RunRecord:
        """One run with its epochs."""
        with self._catalog.session() as session:
            row = self._visible(session, run_id, principal)
            query = select(TrainingRunEpoch).where(TrainingRunEpoch.run_id == run_id).order_by(TrainingRunEpoch.epoch)
            return _record_of(row, list(session.scalars(query)))

    def list(
        self,
        *,
        principal: Principal = ADMIN,
        model: str | None = None,
        dataset: str | None = None,
        status: str | None = None,
        group: str | None = None,
        limit: int = 50,
    ) -> builtins.list[RunRecord]:
        """Runs the caller may see, newest first, optionally only of one model, dataset, status or group."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST}, not {limit}.")
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"Unknown run status {status!r}; choose one of {list(STATUSES)}.")
        query = select(TrainingRun).order_by(TrainingRun.created_at.desc(), TrainingRun.id).limit(limit)
        if not principal.is_admin:
            query = query.where(TrainingRun.team == principal.team)
        for column, value in (
            (TrainingRun.model, model),
            (TrainingRun.dataset, dataset),
            (TrainingRun.status, status),
            (TrainingRun.group, group),
        ):
            if value is not None:
                query = query.where(column == value)
        with self._catalog.session() as session:
            return [_record_of(row) for row in session.scalars(query)]

    def compare(self, run_ids: Sequence[str], *, principal: Principal = ADMIN) -> RunComparison:
        """Two or more runs side by side (see :func:`compare_runs`)."""
        unique = list(dict.fromkeys(run_ids))
        if len(unique) < 2:
            raise InvalidInput(f"Compare needs at least two different run ids; got {list(run_ids)}.")
        return compare_runs([self.get(run_id, principal=principal) for run_id in unique])

    def _end(
        self, run_id: str, status: RunStatus, *, metrics: RunMetrics | None = None, error: str | None = None
    ) -> RunRecord:
        with self._catalog.session() as session:
            row = self._running(session, run_id)
            row.status = status
            row.finished_at = utcnow()
            row.error = error
            if metrics is not None:
                row.metrics = {**row.metrics, **metrics.model_dump(mode="json", exclude_none=True)}
            session.flush()
            return _record_of(row)

    @staticmethod
    def _find(session: Session, run_id: str) -> TrainingRun:
        row = session.get(TrainingRun, run_id)
        if row is None:
            raise NotFound(f"There is no training run {run_id!r}. List runs with `recplane runs list`.")
        return row

    def _running(self, session: Session, run_id: str) -> TrainingRun:
        row = self._find(session, run_id)
        if row.status != "running":
            raise InvalidInput(f"Training run {run_id!r} already ended ({row.status}); start a new run instead.")
        return row

    def _visible(self, session: Session, run_id: str, principal: Principal) -> TrainingRun:
        row = self._find(session, run_id)
        principal.require(row.team, f"Training run {run_id!r}")
        return row


def _flatten(prefix: str, value: Any, into: dict[str, JsonScalar]) -> None:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else str(key), value[key], into)
        return
    if isinstance(value, list | tuple | dict):
        into[prefix] = json.dumps(value, default=str, sort_keys=True)
        return
    into[prefix] = value if isinstance(value, JsonScalar) else str(value)


# Config keys that differ between any two runs without saying anything about them (each run's own folder).
_NOT_SETTINGS = {"model", "checkpoint_dir"}


def _settings_of(run: RunRecord) -> dict[str, JsonScalar]:
    values: dict[str, JsonScalar] = {
        "model": run.model,
        "dataset": run.dataset,
        "dataset_version": run.dataset_version,
        "item_features": run.item_features,
        "item_features_version": run.item_features_version,
        "git_sha": run.git_sha,
        "recplane_version": run.recplane_version,
        "group": run.group,
    }
    for key, value in run.config.items():
        if key not in _NOT_SETTINGS:
            _flatten(key, value, values)
    return values


def _metrics_of(run: RunRecord) -> dict[str, JsonScalar]:
    values: dict[str, JsonScalar] = {f"test.{name}": value for name, value in sorted(run.metrics.test.items())}
    summary = run.metrics.model_dump(exclude={"test", "checkpoint"}, exclude_none=True)
    values.update({name: summary[name] for name in sorted(summary)})
    return values


def _higher_is_better(name: str) -> bool:
    base = name.removeprefix("test.").split("@", 1)[0].lower()
    return base not in _LOWER_IS_BETTER


def metric_direction(name: str) -> bool | None:
    """True when a bigger value of metric ``name`` is better, False when smaller is, None for unscored facts."""
    return None if name in _UNSCORED else _higher_is_better(name)


def _best_index(values: Sequence[JsonScalar], higher: bool) -> int | None:
    scored = [
        (float(v), i)
        for i, v in enumerate(values)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if not scored:
        return None
    best = max(scored, key=lambda pair: (pair[0] if higher else -pair[0], -pair[1]))
    return best[1]


def _metric_row(name: str, values: list[JsonScalar]) -> ComparisonRow:
    if name in _UNSCORED:
        return ComparisonRow(name=name, kind="metric", values=values)
    higher = _higher_is_better(name)
    return ComparisonRow(
        name=name, kind="metric", values=values, best=_best_index(values, higher), higher_is_better=higher
    )


def compare_runs(runs: Sequence[RunRecord]) -> RunComparison:
    """Rows for the settings that differ between ``runs`` and for every final metric, best run per metric."""
    settings = [_settings_of(run) for run in runs]
    metrics = [_metrics_of(run) for run in runs]
    rows: list[ComparisonRow] = []
    for name in sorted({key for each in settings for key in each}):
        values = [each.get(name) for each in settings]
        if len({json.dumps(value) for value in values}) > 1:
            rows.append(ComparisonRow(name=name, kind="param", values=values))
    metric_names = list(dict.fromkeys(key for each in metrics for key in each))
    rows += [_metric_row(name, [each.get(name) for each in metrics]) for name in metric_names]
    return RunComparison(run_ids=[run.id for run in runs], runs=list(runs), rows=rows)


class RunRecorder(TrainCallback):
    """Records a training run into the catalog and its folder, as the trainer reports progress.

    Use it as a context manager around training so that an exception ends the run as ``failed`` (as ``pruned``
    for :class:`RunPruned`, whose ``run_id`` it sets before the exception propagates)::

        with RunRecorder.start(store, NewRun(model="mf", config=asdict(config))) as recorder:
            result = train(table, config, callbacks=[recorder])
    """

    def __init__(self, store: RunStore, run: RunRecord) -> None:
        self.store = store
        self.run_id = run.id
        self.directory = Path(run.artifacts_uri)
        self.checkpoint: str | None = None
        self.ended = False
        self._steps: list[tuple[int, float]] = []
        self._epochs: list[RunEpoch] = []
        self._sizes = RunMetrics()

    @classmethod
    def start(cls, store: RunStore, run: NewRun, *, principal: Principal = ADMIN) -> RunRecorder:
        """Register a new run and a recorder for it."""
        return cls(store, store.create(run, principal=principal))

    def on_train_start(self, info: RunInfo) -> None:
        self._sizes = RunMetrics(
            num_users=info.num_users,
            num_items=info.num_items,
            train_rows=info.train_rows,
            num_parameters=info.num_parameters,
        )
        self.store.start(self.run_id, config=info.config, metrics=self._sizes)
        self._write_json("config.json", info.config)

    def on_step(self, step: int, loss: float) -> None:
        self._steps.append((step, loss))

    def on_epoch_end(self, record: EpochRecord) -> None:
        epoch = RunEpoch(
            epoch=record.epoch, loss=_finite(record.loss), valid=_finite_dict(record.valid), seconds=record.seconds
        )
        self._epochs.append(epoch)
        self.store.log_epoch(self.run_id, epoch)

    def on_checkpoint(self, path: str) -> None:
        self.checkpoint = str(path)

    def on_train_end(self, result: TrainResult) -> None:
        import torch

        metrics = self._final_metrics(result)
        torch.save(result.model.state_dict(), self.directory / "model.pt")
        self._write_curve([(step, loss) for step, loss in enumerate(result.step_losses, start=1)])
        self._write_epochs(
            [
                RunEpoch(epoch=e.epoch, loss=_finite(e.loss), valid=_finite_dict(e.valid), seconds=e.seconds)
                for e in result.epochs
            ]
        )
        self._write_json("metrics.json", metrics.model_dump(mode="json"))
        self.store.finish(self.run_id, metrics)
        self.ended = True

    def fail(self, error: BaseException | str) -> RunRecord:
        """End the run as failed, keeping the curve and epochs seen so far."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return self._end_early(lambda: self.store.fail(self.run_id, text))

    def prune(self, reason: str = "") -> RunRecord:
        """End the run as pruned (a tuner gave up on it), keeping the curve and epochs seen so far."""
        return self._end_early(lambda: self.store.prune(self.run_id, reason))

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.ended:
            return
        if exc is None:
            self.fail("Training ended without reporting a result (on_train_end was never called).")
        elif isinstance(exc, RunPruned):
            exc.run_id = self.run_id
            self.prune(str(exc))
        else:
            self.fail(exc)

    def _end_early(self, end: Callable[[], RunRecord]) -> RunRecord:
        self._write_curve(self._steps)
        self._write_epochs(self._epochs)
        record: RunRecord = end()
        self.ended = True
        return record

    def _final_metrics(self, result: TrainResult) -> RunMetrics:
        last = result.epochs[-1] if result.epochs else None
        return self._sizes.model_copy(
            update={
                "test": _finite_dict(result.test_metrics),
                "valid_metric": result.valid_metric,
                "best_valid": _finite(result.best_valid),
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.epochs),
                "final_loss": _finite(last.loss) if last else None,
                "stopped_early": result.stopped_early,
                "train_seconds": result.train_seconds,
                "samples_per_second": _finite(result.samples_per_second),
                "checkpoint": str(result.checkpoint) if result.checkpoint else self.checkpoint,
            }
        )

    def _write_json(self, name: str, value: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / name).write_text(json.dumps(value, indent=2, sort_keys=True, default=str))

    def _write_curve(self, steps: Sequence[tuple[int, float]]) -> None:
        table = pa.table(
            {
                "step": pa.array([s for s, _ in steps], pa.int64()),
                "loss": pa.array([loss for _, loss in steps], pa.float64()),
            }
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, self.directory / "curve.parquet")

    def _write_epochs(self, epochs: Sequence[RunEpoch]) -> None:
        names = list(dict.fromkeys(name for epoch in epochs for name in epoch.valid))
        columns: dict[str, pa.Array] = {
            "epoch": pa.array([e.epoch for e in epochs], pa.int64()),
            "loss": pa.array([e.loss for e in epochs], pa.float64()),
            "seconds": pa.array([e.seconds for e in epochs], pa.float64()),
        }
        for name in names:
            columns[name] = pa.array([e.valid.get(name) for e in epochs], pa.float64())
        self.directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), self.directory / "epochs.parquet")
