"""The single-process trainer: every model of the zoo, over an Arrow interaction table, through one loop.

``train(table, config)`` builds the model kind's task (:mod:`recplane.training.task`): the table is split by the
kind's default protocol (RecBole's: random 8:1:1 per user for general models, leave-one-out by time for
sequential ones, random 8:1:1 over all rows for context/CTR models), raw ids are mapped to ``1..N`` once and the
training tensors are built once. Then epochs of seeded mini-batches run on the chosen device and precision
(:mod:`recplane.training.precision`). After each epoch the validation split is evaluated and the best weights are
kept by the protocol's valid metric (``mrr@10`` for retrieval, ``auc`` for ranking); with ``patience`` the run
stops after that many epochs without improvement. Test metrics are measured with the best weights. Checkpoints
(every ``checkpoint_every_steps`` steps and at each epoch end) allow exact resume, and callbacks
(:mod:`recplane.training.callbacks`) see the run start, every step, every epoch, every checkpoint and the end.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import torch
from torch import Tensor

from recplane.errors import InvalidInput, TrainingFailed
from recplane.models.base import Batch, RecModel
from recplane.training.callbacks import RunInfo, TrainCallback
from recplane.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from recplane.training.data import BatchChunk, BatchOrder, IdMap
from recplane.training.distributed import (
    WorkerContext,
    all_reduce_gradients,
    all_reduce_sum,
    broadcast_flag,
    launch,
    shard_rows,
)
from recplane.training.precision import DeviceName, ExecutionPlan, Precision, PrecisionName, resolve_execution
from recplane.training.protocol import ModelKind, Protocol
from recplane.training.ranking_task import RankingTask
from recplane.training.retrieval_tasks import PairwiseTask, SequentialTask, TwoTowerTask
from recplane.training.row_features import RowFeatureEncoder
from recplane.training.task import Task

__all__ = ["MODEL_KINDS", "EpochRecord", "ModelName", "TrainConfig", "TrainResult", "train"]

ModelName = Literal["mf", "lightgcn", "two_tower", "sasrec", "deepfm", "dcn", "din", "mmoe", "moe"]
MODEL_KINDS: dict[str, ModelKind] = {
    "mf": "general",
    "lightgcn": "general",
    "two_tower": "general",
    "sasrec": "sequential",
    "deepfm": "context",
    "dcn": "context",
    "din": "context",
    "mmoe": "context",
    "moe": "context",
}
_OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
# Settings that define the run: a checkpoint resumes only under the same ones.
_RUN_KEYS = (
    "model",
    "params",
    "batch_size",
    "lr",
    "weight_decay",
    "optimizer",
    "seed",
    "negatives",
    "num_negatives",
    "grad_clip",
    "label_column",
    "rating_column",
    "rating_threshold",
    "click_negatives",
    "max_history",
    "row_feature_columns",
)
# Batch tensors a task that draws negatives builds in one call (see _chunk_steps): enough that a draw's per-call
# costs (its rejection rounds) are paid once per dozens of steps (a whole ml-100k epoch for MF), and only a few MiB.
_CHUNK_BYTES = 8 << 20
_PROBE_ROWS = 64


@dataclass
class TrainConfig:
    """What to train and how. ``params`` go to the model's config or constructor (e.g. ``SASRecConfig``,
    ``DeepFMConfig``); what the trainer derives from the data (sizes, fields, tasks) is set for you.

    ``patience``: stop after that many epochs without a better valid metric (None: run every epoch).
    ``checkpoint_every_steps``: also checkpoint every N optimizer steps (0: only at epoch ends); checkpoints
    are written only when ``checkpoint_dir`` is set. Ranking labels: ``label_column`` (0/1) when the table has
    it, else ``rating_column >= rating_threshold``. ``click_negatives``: sampled unobserved items per observed row
    for the multi-task ``click`` task. ``max_history``: recent items per user read by DIN and two-tower.
    ``row_feature_columns``: columns of the interaction table that become per-row model inputs of a ranking model
    (:mod:`recplane.training.row_features`), e.g. the point-in-time features of a training set.
    """

    model: ModelName = "mf"
    params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    seed: int = 2020
    negatives: Literal["uniform", "popularity"] = "uniform"
    num_negatives: int = 1
    patience: int | None = 10
    grad_clip: float | None = None
    checkpoint_every_steps: int = 0
    checkpoint_dir: str | None = None
    eval_batch_users: int | None = None
    label_column: str = "label"
    rating_column: str = "rating"
    rating_threshold: float = 4.0
    click_negatives: int = 1
    max_history: int = 50
    device: DeviceName = "auto"
    precision: PrecisionName = "auto"
    row_feature_columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise InvalidInput(f"Unknown model {self.model!r}; choose one of {sorted(MODEL_KINDS)}.")
        if isinstance(self.row_feature_columns, str):
            raise InvalidInput(f"row_feature_columns must be a list of column names, not {self.row_feature_columns!r}.")
        if self.row_feature_columns and MODEL_KINDS[self.model] != "context":
            raise InvalidInput(
                f"Row features need a ranking model (deepfm, dcn, din, mmoe, moe); model {self.model!r} reads no "
                f"per-row features (row_feature_columns={list(self.row_feature_columns)})."
            )
        if self.optimizer not in _OPTIMIZERS:
            raise InvalidInput(f"Unknown optimizer {self.optimizer!r}; choose one of {list(_OPTIMIZERS)}.")
        if self.negatives not in ("uniform", "popularity"):
            raise InvalidInput(f"Unknown negative sampling {self.negatives!r}; choose 'uniform' or 'popularity'.")
        if min(self.epochs, self.batch_size, self.num_negatives, self.max_history) < 1:
            raise InvalidInput(
                f"epochs, batch_size, num_negatives and max_history must be >= 1; got {self.epochs}, "
                f"{self.batch_size}, {self.num_negatives}, {self.max_history}."
            )
        if self.patience is not None and self.patience < 1:
            raise InvalidInput(f"patience must be >= 1 or None; got {self.patience}.")
        if self.checkpoint_every_steps < 0 or self.click_negatives < 0:
            raise InvalidInput(
                f"checkpoint_every_steps and click_negatives must be >= 0; got {self.checkpoint_every_steps}, "
                f"{self.click_negatives}."
            )

    @property
    def kind(self) -> ModelKind:
        """The model's kind, which picks its protocol: ``general``, ``sequential`` or ``context``."""
        return MODEL_KINDS[self.model]

    def run_settings(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: values[key] for key in _RUN_KEYS}


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss, validation metrics, seconds (training and evaluation)."""

    epoch: int
    loss: float
    valid: dict[str, float]
    seconds: float


@dataclass
class TrainResult:
    """What a run produced. ``step_losses`` is the loss of every optimizer step (the learning curve);
    ``protocol`` is how the metrics were measured; ``device``/``precision`` are what ``auto`` resolved to."""

    model: RecModel
    protocol: Protocol
    epochs: list[EpochRecord]
    step_losses: list[float]
    valid_metric: str
    best_valid: float | None
    best_epoch: int | None
    test_metrics: dict[str, float]
    stopped_early: bool
    train_seconds: float
    samples_per_second: float
    num_parameters: int
    device: str
    precision: str
    user_map: IdMap
    item_map: IdMap
    checkpoint: Path | None = None
    workers: int = 1
    example_batch: Batch | None = None
    row_encoder: RowFeatureEncoder | None = None


def build_task(
    interactions: pa.Table, config: TrainConfig, item_features: pa.Table | None, user_features: pa.Table | None
) -> Task:
    """The task of ``config.model``: its protocol, tensors, model factory, batches and evaluation."""
    if config.kind == "context":
        return RankingTask(interactions, config, item_features, user_features)
    if config.model == "two_tower":
        return TwoTowerTask(interactions, config, item_features, user_features)
    if item_features is not None or user_features is not None:
        raise InvalidInput(
            f"Model {config.model!r} reads no side features; pass item_features/user_features to two_tower or a "
            "ranking model (deepfm, dcn, din, mmoe, moe)."
        )
    if config.kind == "sequential":
        return SequentialTask(interactions, config)
    return PairwiseTask(interactions, config)


def _build_optimizer(config: TrainConfig, model: RecModel) -> torch.optim.Optimizer:
    """The configured optimizer, fused (one kernel over all parameters) where PyTorch has a fused kernel for
    the device: on CPU fused Adam steps ml-100k's MF tables ~2.5x faster than the default per-tensor loop, with
    the same update rule. Models with sparse-gradient tables keep the unfused form, which handles them."""
    params = [p for p in model.parameters() if p.requires_grad]
    sparse = any(isinstance(m, torch.nn.Embedding) and m.sparse for m in model.modules())
    devices_ok = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    fused = bool(params) and not sparse and devices_ok
    options: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if fused:
        options["fused"] = True
    if config.optimizer == "adam":
        return torch.optim.Adam(params, **options)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, **options)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, **options)
    return torch.optim.SGD(params, **options)


class _Loop:
    """One run's moving parts: task, model, optimizer, generator, progress and the callbacks to tell."""

    def __init__(
        self,
        config: TrainConfig,
        task: Task,
        plan: ExecutionPlan,
        callbacks: Sequence[TrainCallback],
        context: WorkerContext | None = None,
    ) -> None:
        self.config, self.task, self.plan, self.callbacks = config, task, plan, tuple(callbacks)
        self.context = context
        torch.manual_seed(config.seed)
        self.model = task.build_model().to(plan.device)
        self.optimizer = _build_optimizer(config, self.model)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.order = BatchOrder(task.num_rows, config.batch_size, config.seed)
        self.chunk_steps = _chunk_steps(task, config.batch_size, self.order.num_batches)
        # (end position, generator state before the chunk was built) while a chunk is being trained.
        self._chunk: tuple[int, Tensor] | None = None
        self.state = TrainState()
        self.checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
        self.last_checkpoint: Path | None = None

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def run_info(self) -> RunInfo:
        return RunInfo(
            config=asdict(self.config),
            model=self.config.model,
            num_users=len(self.task.users),
            num_items=len(self.task.items),
            train_rows=self.task.num_rows,
            batches_per_epoch=self.order.num_batches,
            epochs=self.config.epochs,
            start_epoch=self.state.epoch,
            start_batch=self.state.batch,
            num_parameters=self.num_parameters,
            valid_metric=self.task.protocol.valid_metric,
            valid_metric_bigger=self.task.protocol.valid_metric_bigger,
        )

    @property
    def is_main(self) -> bool:
        """True in a single process, and in rank 0 of a data-parallel group (which alone evaluates)."""
        return self.context is None or self.context.is_main

    def step(self, batch: Batch, num_rows: int) -> float:
        """One optimizer step on the global batch of ``num_rows`` rows (this rank's slice of it under data
        parallelism), already on the run's device; returns the batch's loss."""
        context, weight = self.context, 1.0
        if context is not None:
            positions, weight = shard_rows(num_rows, context)
            batch = _slice_rows(batch, positions.to(self.plan.device), num_rows)
        self.optimizer.zero_grad(set_to_none=True)
        with self.plan.autocast():
            loss = self.model.loss(batch, self.model(batch))
        sync = None if context is None else functools.partial(all_reduce_gradients, weight=weight, context=context)
        self.plan.backward_and_step(loss, self.optimizer, self.config.grad_clip, sync)
        value = float(loss.detach())
        return value if context is None else all_reduce_sum(value * weight, context)

    def evaluate(self, part: Literal["valid", "test"]) -> dict[str, float]:
        """Metrics in float32 and eval mode, whatever the training precision: comparable across runs."""
        self.model.eval()
        try:
            with torch.no_grad():
                return self.task.evaluate(self.model, part, self.plan.device)
        finally:
            self.model.train()

    def save(self, name: str) -> None:
        if self.checkpoint_dir is None:
            return
        path = save_checkpoint(
            self.checkpoint_dir / name,
            model=self.model,
            optimizer=self.optimizer,
            state=self.state,
            generator=self._resume_generator(),
            config=self.config.run_settings(),
        )
        latest = self.checkpoint_dir / "latest.pt"
        latest.unlink(missing_ok=True)
        try:
            latest.hardlink_to(path)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, latest)
        self.last_checkpoint = path
        for callback in self.callbacks:
            callback.on_checkpoint(str(path))

    def _resume_generator(self) -> torch.Generator:
        """The generator a resumed run must start from. Inside a chunk that is its state before the chunk was built:
        the resumed run rebuilds the whole chunk (the same draws) and skips the batches already trained."""
        if self._chunk is None or self.state.batch >= self._chunk[0]:
            return self.generator
        generator = torch.Generator()
        generator.set_state(self._chunk[1])
        return generator

    def train_chunk(self, chunk: BatchChunk) -> tuple[int, float]:
        """Build the chunk's batches in one task call, then take a step on each; returns (samples, seconds)."""
        config, state = self.config, self.state
        started = time.perf_counter()
        self._chunk = (chunk.end, self.generator.get_state())
        built = self.plan.to_device(self.task.batch(chunk.rows, self.generator))
        samples = 0
        for position, rows, batch in chunk.batches(built):
            loss = self.step(batch, rows)
            samples += rows
            state.step += 1
            state.batch = position + 1
            state.step_losses.append(loss)
            state.epoch_loss_sum += loss
            state.epoch_batches += 1
            for callback in self.callbacks:
                callback.on_step(state.step, loss)
            if config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0:
                self.save(f"step-{state.step:08d}.pt")
        self._chunk = None
        return samples, time.perf_counter() - started

    def end_epoch(self, seconds: float) -> None:
        state = self.state
        record = self.validate(seconds) if self.is_main else None
        if self.context is not None:
            state.stopped_early = broadcast_flag(state.stopped_early, self.context)
        state.epoch, state.batch = state.epoch + 1, 0
        state.epoch_loss_sum, state.epoch_batches = 0.0, 0
        self.save(f"epoch-{state.epoch:04d}.pt")
        if record is not None:
            for callback in self.callbacks:
                callback.on_epoch_end(record)

    def validate(self, seconds: float) -> EpochRecord:
        """Evaluate the valid split, keep the best weights and decide on early stopping."""
        state, protocol = self.state, self.task.protocol
        valid = self.evaluate("valid")
        loss = state.epoch_loss_sum / max(state.epoch_batches, 1)
        record = EpochRecord(epoch=state.epoch, loss=loss, valid=valid, seconds=seconds)
        state.epochs.append(asdict(record))
        value = valid.get(protocol.valid_metric)
        if value is not None:
            better = state.best_value is None or (
                value > state.best_value if protocol.valid_metric_bigger else value < state.best_value
            )
            if better:
                state.best_value, state.best_epoch, state.bad_epochs = value, state.epoch, 0
                state.best_model = copy.deepcopy(self.model.state_dict())
            else:
                state.bad_epochs += 1
                if self.config.patience is not None and state.bad_epochs >= self.config.patience:
                    state.stopped_early = True
        return record

    def run(self) -> tuple[float, float, int]:
        """Train until ``epochs`` or early stop; returns (seconds, seconds in steps, samples trained)."""
        state, config = self.state, self.config
        started = time.perf_counter()
        step_seconds, samples = 0.0, 0
        self.model.train()
        while state.epoch < config.epochs and not state.stopped_early:
            epoch_started = time.perf_counter()
            for chunk in self.order.chunks(state.epoch, self.chunk_steps, state.batch):
                chunk_samples, chunk_seconds = self.train_chunk(chunk)
                samples += chunk_samples
                step_seconds += chunk_seconds
            self.end_epoch(time.perf_counter() - epoch_started)
        return time.perf_counter() - started, step_seconds, samples


@dataclass(frozen=True)
class _Inputs:
    """Everything a run reads, bundled so that it can be shipped to data-parallel workers."""

    interactions: pa.Table
    config: TrainConfig
    item_features: pa.Table | None
    user_features: pa.Table | None
    resume_from: str | Path | None


def train(
    interactions: pa.Table,
    config: TrainConfig,
    *,
    item_features: pa.Table | None = None,
    user_features: pa.Table | None = None,
    resume_from: str | Path | None = None,
    callbacks: Sequence[TrainCallback] = (),
    workers: int = 1,
) -> TrainResult:
    """Train ``config.model`` on ``interactions`` (``user_id``, ``item_id``, plus ``ts``/``rating``/``label`` as
    the model needs) under its kind's default protocol.

    ``item_features``/``user_features``: one row per item/user keyed by ``item_id``/``user_id``, for two-tower
    and the ranking models. ``resume_from``: a checkpoint written by a run with the same settings and data;
    training continues with exactly the batch, RNG states and optimizer state it recorded, up to
    ``config.epochs``. ``callbacks`` are told about the run as it goes; an exception they raise ends the run.
    ``workers > 1``: data-parallel training in that many local processes (:mod:`recplane.training.distributed`);
    callbacks still run here, in the calling process.
    """
    inputs = _Inputs(interactions, config, item_features, user_features, resume_from)
    if workers < 1:
        raise InvalidInput(f"workers must be >= 1; got {workers}.")
    if workers == 1:
        return _run(inputs, resolve_execution(config.device, config.precision), callbacks)
    plan = resolve_execution(config.device, config.precision)
    callbacks = tuple(callbacks)

    def dispatch(event: tuple[str, tuple[Any, ...]]) -> None:
        hook, args = event
        for callback in callbacks:
            getattr(callback, hook)(*args)

    result = launch(workers, _run_worker, inputs, plan.precision, device_type=plan.device.type, on_event=dispatch)
    if result is None:
        raise TrainingFailed("Rank 0 of the data-parallel run returned no result.")
    for callback in callbacks:
        callback.on_train_end(result)
    return result


class _Publish(TrainCallback):
    """Rank 0's callbacks: each hook call travels to the launching process, which runs the real callbacks."""

    def __init__(self, context: WorkerContext) -> None:
        self.context = context

    def on_train_start(self, info: RunInfo) -> None:
        self.context.publish(("on_train_start", (info,)))

    def on_step(self, step: int, loss: float) -> None:
        self.context.publish(("on_step", (step, loss)))

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.context.publish(("on_epoch_end", (record,)))

    def on_checkpoint(self, path: str) -> None:
        self.context.publish(("on_checkpoint", (path,)))


def _run_worker(context: WorkerContext, inputs: _Inputs, precision: Precision) -> TrainResult | None:
    """One data-parallel worker: the same run on this rank's slice of every batch; rank 0 alone evaluates,
    checkpoints and reports, and returns the result."""
    plan = ExecutionPlan(context.device, precision)
    if not context.is_main:
        inputs = dataclasses.replace(inputs, config=dataclasses.replace(inputs.config, checkpoint_dir=None))
    callbacks = [_Publish(context)] if context.is_main else []
    result = _run(inputs, plan, callbacks, context=context, end_callbacks=False)
    return result if context.is_main else None


def _run(
    inputs: _Inputs,
    plan: ExecutionPlan,
    callbacks: Sequence[TrainCallback],
    *,
    context: WorkerContext | None = None,
    end_callbacks: bool = True,
) -> TrainResult:
    config = inputs.config
    task = build_task(inputs.interactions, config, inputs.item_features, inputs.user_features)
    loop = _Loop(config, task, plan, callbacks, context)
    if inputs.resume_from is not None:
        loop.state = load_checkpoint(
            inputs.resume_from,
            model=loop.model,
            optimizer=loop.optimizer,
            generator=loop.generator,
            config=config.run_settings(),
        )
    info = loop.run_info()
    for callback in loop.callbacks:
        callback.on_train_start(info)
    seconds, step_seconds, samples = loop.run()
    state = loop.state
    if state.best_model is not None:
        loop.model.load_state_dict(state.best_model)
    test_metrics = loop.evaluate("test") if loop.is_main else {}
    loop.model.eval()
    result = TrainResult(
        model=loop.model,
        protocol=task.protocol,
        epochs=[EpochRecord(**record) for record in state.epochs],
        step_losses=list(state.step_losses),
        valid_metric=task.protocol.valid_metric,
        best_valid=state.best_value,
        best_epoch=state.best_epoch,
        test_metrics=test_metrics,
        stopped_early=state.stopped_early,
        train_seconds=seconds,
        samples_per_second=samples / step_seconds if step_seconds > 0 else 0.0,
        num_parameters=info.num_parameters,
        device=str(plan.device),
        precision=plan.precision,
        user_map=task.users,
        item_map=task.items,
        checkpoint=loop.last_checkpoint,
        workers=1 if context is None else context.world_size,
        example_batch=_example_batch(task, loop.order),
        row_encoder=task.row_encoder if isinstance(task, RankingTask) else None,
    )
    if end_callbacks:
        for callback in loop.callbacks:
            callback.on_train_end(result)
    return result


def _chunk_steps(task: Task, batch_size: int, num_batches: int) -> int:
    """How many mini-batches the loop builds per task call.

    A task whose batches draw random values (negatives) builds as many at once as fit in ``_CHUNK_BYTES``: a draw
    with rejection rounds costs ~0.3 ms per call at ml-100k size whatever its row count, a third of an MF step. A
    task whose batches are plain gathers builds one at a time: bulk gathers saved next to nothing there and shifted
    the heap's allocation pattern (DeepFM's epoch ran ~10% slower from glibc trimming and refaulting pages).
    Probed on the first rows with two seeds; a pure function of the data and settings, so a resumed run cuts the
    same chunks.
    """
    rows = torch.arange(min(_PROBE_ROWS, task.num_rows))
    probe = task.batch(rows, torch.Generator().manual_seed(0))
    other = task.batch(rows, torch.Generator().manual_seed(1))
    if all(torch.equal(value, other[key]) for key, value in probe.items()):
        return 1
    row_bytes = max(sum(value.nbytes for value in probe.values()) // len(rows), 1)
    return max(1, min(num_batches, _CHUNK_BYTES // (row_bytes * batch_size)))


def _example_batch(task: Task, order: BatchOrder, rows: int = 16) -> Batch:
    """A few real training rows, the shapes and dtypes that exporting the model traces with."""
    return task.batch(order.permutation(0)[:rows], torch.Generator().manual_seed(0))


def _slice_rows(batch: Batch, positions: Tensor, num_rows: int) -> Batch:
    """The rows ``positions`` of every per-row tensor of a batch (others, if any, are shared as they are)."""
    return {key: value[positions] if value.shape[:1] == (num_rows,) else value for key, value in batch.items()}
