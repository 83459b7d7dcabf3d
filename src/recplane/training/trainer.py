"""The single-process trainer for retrieval models (MF-BPR, LightGCN, SASRec) over an Arrow interaction table.

``train(table, config)`` splits the table by the model kind's default protocol (RecBole's: random 8:1:1 per user
for general models, leave-one-out by time for sequential ones), maps raw ids to ``1..N`` once, builds the
training tensors once, then runs epochs of seeded mini-batches. After each epoch it evaluates the validation
split with full-sort ranking and keeps the best weights by the protocol's valid metric (``mrr@10``); with
``patience`` it stops after that many epochs without improvement. Test metrics are measured with the best
weights. Checkpoints (every ``checkpoint_every_steps`` steps and at each epoch end) allow exact resume.

Evaluation ids: ``evaluate_full_sort`` wants items ``0..N-1`` with no padding item, so model item ``i`` is
evaluated as ``i - 1`` and score column 0 (padding) is dropped; user ids are used as they are.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from recplane.errors import InvalidInput
from recplane.models.base import Batch, RetrievalModel
from recplane.models.lightgcn import LightGCN
from recplane.models.mf import MF
from recplane.models.negatives import InteractionSet, NegativeSampler
from recplane.models.sasrec import SASRec, SASRecConfig
from recplane.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from recplane.training.data import BatchOrder, IdMap, padded_sequences
from recplane.training.evaluate import Interactions, evaluate_full_sort
from recplane.training.protocol import Protocol, default_protocol, split_for_protocol

__all__ = ["EpochRecord", "TrainConfig", "TrainResult", "train"]

ModelName = Literal["mf", "lightgcn", "sasrec"]
_KINDS: dict[str, Literal["general", "sequential"]] = {"mf": "general", "lightgcn": "general", "sasrec": "sequential"}
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
)


@dataclass
class TrainConfig:
    """What to train and how. ``params`` go to the model's constructor (``SASRecConfig`` for SASRec).

    ``patience``: stop after that many epochs without a better valid metric (None: run every epoch).
    ``checkpoint_every_steps``: also checkpoint every N optimizer steps (0: only at epoch ends); checkpoints
    are written only when ``checkpoint_dir`` is set.
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

    def __post_init__(self) -> None:
        if self.model not in _KINDS:
            raise InvalidInput(f"Unknown model {self.model!r}; choose one of {sorted(_KINDS)}.")
        if self.optimizer not in _OPTIMIZERS:
            raise InvalidInput(f"Unknown optimizer {self.optimizer!r}; choose one of {list(_OPTIMIZERS)}.")
        if self.negatives not in ("uniform", "popularity"):
            raise InvalidInput(f"Unknown negative sampling {self.negatives!r}; choose 'uniform' or 'popularity'.")
        if self.epochs < 1 or self.batch_size < 1 or self.num_negatives < 1:
            raise InvalidInput(
                f"epochs, batch_size and num_negatives must be >= 1; got {self.epochs}, {self.batch_size}, "
                f"{self.num_negatives}."
            )
        if self.patience is not None and self.patience < 1:
            raise InvalidInput(f"patience must be >= 1 or None; got {self.patience}.")
        if self.checkpoint_every_steps < 0:
            raise InvalidInput(f"checkpoint_every_steps must be >= 0; got {self.checkpoint_every_steps}.")

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
    """What a run produced. ``step_losses`` is the loss of every optimizer step (the learning curve)."""

    model: RetrievalModel
    epochs: list[EpochRecord]
    step_losses: list[float]
    valid_metric: str
    best_valid: float | None
    best_epoch: int | None
    test_metrics: dict[str, float]
    stopped_early: bool
    train_seconds: float
    samples_per_second: float
    user_map: IdMap
    item_map: IdMap
    checkpoint: Path | None = None


class _Data:
    """Training tensors (one row per example), evaluation inputs and id maps of one split."""

    def __init__(self, table: pa.Table, config: TrainConfig, protocol: Protocol) -> None:
        for column in ("user_id", "item_id", *(["ts"] if protocol.split == "LS" else [])):
            if column not in table.column_names:
                raise InvalidInput(
                    f"The interaction table has no {column!r} column; its columns are {table.column_names}."
                )
        split = split_for_protocol(table, protocol)
        self.users = IdMap.build(table.column("user_id"))
        self.items = IdMap.build(table.column("item_id"))
        self.num_users, self.num_items = self.users.num_embeddings, self.items.num_embeddings
        self.parts = {
            name: self._encode(part)
            for name, part in (("train", split.train), ("valid", split.valid), ("test", split.test))
        }
        train_users, train_items, _ = self.parts["train"]
        self.train_users, self.train_items = torch.from_numpy(train_users), torch.from_numpy(train_items)
        self.sequential = protocol.model_kind == "sequential"
        self.histories: dict[str, tuple[Tensor, Tensor]] = {}
        if self.sequential:
            self._build_sequences(int(config.params.get("max_seq_length", SASRecConfig(num_items=2).max_seq_length)))
        else:
            self.rows = {"user_id": self.train_users, "item_id": self.train_items}

    def _encode(self, part: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        users = self.users.encode(part.column("user_id"), what="user_id")
        items = self.items.encode(part.column("item_id"), what="item_id")
        times = (
            np.asarray(part.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
            if "ts" in part.column_names
            else np.zeros(len(users), dtype=np.int64)
        )
        return users, items, times

    def _build_sequences(self, max_len: int) -> None:
        users, items, times = self.parts["train"]
        # One row per user: history = sequence[:-1], target_seq = sequence[1:] (every prefix trained at once).
        sequences, lengths = padded_sequences(users, items, times, self.num_users, max_len + 1)
        rows = torch.nonzero(lengths >= 2).squeeze(1)
        self.rows = {
            "history": sequences[rows, :max_len].contiguous(),
            "history_len": lengths[rows] - 1,
            "target_seq": sequences[rows, 1:].contiguous(),
        }
        self.histories["valid"] = padded_sequences(users, items, times, self.num_users, max_len)
        valid_users, valid_items, valid_times = self.parts["valid"]
        self.histories["test"] = padded_sequences(
            np.concatenate([users, valid_users]),
            np.concatenate([items, valid_items]),
            np.concatenate([times, valid_times]),
            self.num_users,
            max_len,
        )

    @property
    def num_rows(self) -> int:
        return int(next(iter(self.rows.values())).shape[0])

    def interactions(self, part: str) -> Interactions:
        users, items, _ = self.parts[part]
        return Interactions(user_ids=users, item_ids=items - 1)


def _build_model(config: TrainConfig, data: _Data) -> RetrievalModel:
    params = dict(config.params)
    try:
        if config.model == "mf":
            return MF(data.num_users, data.num_items, **params)
        if config.model == "lightgcn":
            return LightGCN(data.num_users, data.num_items, data.train_users, data.train_items, **params)
        return SASRec(SASRecConfig(num_items=data.num_items, **params))
    except TypeError as error:
        raise InvalidInput(f"Invalid params for model {config.model!r}: {error}.") from error


def _build_optimizer(config: TrainConfig, model: RetrievalModel) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)


class _Loop:
    """One run's moving parts: model, optimizer, sampler, generator and progress."""

    def __init__(self, config: TrainConfig, data: _Data, protocol: Protocol) -> None:
        self.config, self.data, self.protocol = config, data, protocol
        torch.manual_seed(config.seed)
        self.model = _build_model(config, data)
        self.optimizer = _build_optimizer(config, self.model)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.order = BatchOrder(data.num_rows, config.batch_size, config.seed)
        self.state = TrainState()
        self.sampler = self._sampler()
        self.checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
        self.last_checkpoint: Path | None = None

    def _sampler(self) -> NegativeSampler | None:
        bpr_sequences = isinstance(self.model, SASRec) and self.model.config.loss_type == "BPR"
        if self.data.sequential and not bpr_sequences:
            return None
        exclude = (
            None
            if self.data.sequential
            else InteractionSet(self.data.train_users, self.data.train_items, self.data.num_items)
        )
        if self.config.negatives == "popularity":
            counts = torch.bincount(self.data.train_items, minlength=self.data.num_items)
            return NegativeSampler.popularity(counts, exclude=exclude)
        return NegativeSampler.uniform(self.data.num_items, exclude=exclude)

    def batch(self, rows: Tensor) -> Batch:
        batch = {key: tensor[rows] for key, tensor in self.data.rows.items()}
        if self.sampler is None:
            return batch
        if self.data.sequential:
            targets = batch["target_seq"]
            flat = self.sampler.sample(targets.reshape(-1), 1, positives=targets.reshape(-1), generator=self.generator)
            batch["neg_target_seq"] = flat.view_as(targets)
        else:
            batch["neg_item_id"] = self.sampler.sample(
                batch["user_id"], self.config.num_negatives, positives=batch["item_id"], generator=self.generator
            )
        return batch

    def step(self, rows: Tensor) -> float:
        batch = self.batch(rows)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model.loss(batch, self.model(batch))
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return float(loss.detach())

    def evaluate(self, part: Literal["valid", "test"]) -> dict[str, float]:
        data = self.data
        test = data.interactions(part)
        if len(test) == 0:
            return {}
        exclude: list[Interactions] = []
        if self.protocol.exclude_seen:
            exclude = [data.interactions("train")] + ([data.interactions("valid")] if part == "test" else [])

        def scores(users: Tensor) -> Tensor:
            if data.sequential:
                history, lengths = data.histories[part]
                batch = {"history": history[users], "history_len": lengths[users]}
            else:
                batch = {"user_id": users}
            return self.model.score_all(batch)[:, 1:]

        self.model.eval()
        try:
            result = evaluate_full_sort(
                scores,
                test,
                num_items=data.num_items - 1,
                exclude=exclude,
                train=data.interactions("train"),
                ks=self.protocol.topk,
                metrics=self.protocol.metrics,
                batch_users=self.config.eval_batch_users,
            )
        finally:
            self.model.train()
        return result.metrics

    def save(self, name: str) -> None:
        if self.checkpoint_dir is None:
            return
        path = save_checkpoint(
            self.checkpoint_dir / name,
            model=self.model,
            optimizer=self.optimizer,
            state=self.state,
            generator=self.generator,
            config=self.config.run_settings(),
        )
        latest = self.checkpoint_dir / "latest.pt"
        latest.unlink(missing_ok=True)
        try:
            latest.hardlink_to(path)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, latest)
        self.last_checkpoint = path

    def end_epoch(self, seconds: float) -> None:
        state, config = self.state, self.config
        valid = self.evaluate("valid")
        loss = state.epoch_loss_sum / max(state.epoch_batches, 1)
        state.epochs.append({"epoch": state.epoch, "loss": loss, "valid": valid, "seconds": seconds})
        value = valid.get(self.protocol.valid_metric)
        if value is not None:
            better = state.best_value is None or (
                value > state.best_value if self.protocol.valid_metric_bigger else value < state.best_value
            )
            if better:
                state.best_value, state.best_epoch, state.bad_epochs = value, state.epoch, 0
                state.best_model = copy.deepcopy(self.model.state_dict())
            else:
                state.bad_epochs += 1
                if config.patience is not None and state.bad_epochs >= config.patience:
                    state.stopped_early = True
        state.epoch, state.batch = state.epoch + 1, 0
        state.epoch_loss_sum, state.epoch_batches = 0.0, 0
        self.save(f"epoch-{state.epoch:04d}.pt")

    def run(self) -> tuple[float, float, int]:
        """Train until ``epochs`` or early stop; returns (seconds, seconds in steps, samples trained)."""
        state, config = self.state, self.config
        started = time.perf_counter()
        step_seconds, samples = 0.0, 0
        self.model.train()
        while state.epoch < config.epochs and not state.stopped_early:
            epoch_started = time.perf_counter()
            for position, rows in self.order.batches(state.epoch, state.batch):
                tic = time.perf_counter()
                loss = self.step(rows)
                step_seconds += time.perf_counter() - tic
                samples += len(rows)
                state.step += 1
                state.batch = position + 1
                state.step_losses.append(loss)
                state.epoch_loss_sum += loss
                state.epoch_batches += 1
                if config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0:
                    self.save(f"step-{state.step:08d}.pt")
            self.end_epoch(time.perf_counter() - epoch_started)
        return time.perf_counter() - started, step_seconds, samples


def train(interactions: pa.Table, config: TrainConfig, *, resume_from: str | Path | None = None) -> TrainResult:
    """Train ``config.model`` on ``interactions`` (``user_id``, ``item_id``, ``ts``) under its default protocol.

    ``resume_from``: a checkpoint written by a run with the same settings and data; training continues with
    exactly the batch, RNG states and optimizer state it recorded, up to ``config.epochs``.
    """
    protocol = default_protocol(_KINDS[config.model])
    data = _Data(interactions, config, protocol)
    loop = _Loop(config, data, protocol)
    if resume_from is not None:
        loop.state = load_checkpoint(
            resume_from,
            model=loop.model,
            optimizer=loop.optimizer,
            generator=loop.generator,
            config=config.run_settings(),
        )
    seconds, step_seconds, samples = loop.run()
    state = loop.state
    if state.best_model is not None:
        loop.model.load_state_dict(state.best_model)
    test_metrics = loop.evaluate("test")
    loop.model.eval()
    return TrainResult(
        model=loop.model,
        epochs=[EpochRecord(**record) for record in state.epochs],
        step_losses=list(state.step_losses),
        valid_metric=protocol.valid_metric,
        best_valid=state.best_value,
        best_epoch=state.best_epoch,
        test_metrics=test_metrics,
        stopped_early=state.stopped_early,
        train_seconds=seconds,
        samples_per_second=samples / step_seconds if step_seconds > 0 else 0.0,
        user_map=data.users,
        item_map=data.items,
        checkpoint=loop.last_checkpoint,
    )
