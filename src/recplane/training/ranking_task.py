"""The ranking task: DeepFM, DCN-v2, DIN, MMoE and the sparse MoE ranker under RecBole's context protocol.

The interaction table is split at random 8:1:1 over all rows (``default_protocol("context")``). A row's label is
the ``label_column`` when the table has it, else ``rating_column >= rating_threshold`` (4.0, as RecBole's
context-aware ml-100k config). Every row becomes a (user, item) example whose sparse fields are ``user_id`` and
``item_id`` plus the columns of the optional item and user feature tables (:mod:`~recplane.training.
feature_tables`); a batch gathers each entity's features by id. The table's ``row_feature_columns`` (e.g. the
point-in-time features of a training set) are per-row fields, encoded by a
:class:`~recplane.training.row_features.RowFeatureEncoder` fitted on the training split (``task.row_encoder``).

* **DIN** also reads the user's behaviour history: for each row, the user's training items strictly earlier in
  time (``ts``), the most recent ``max_history`` of them. Rows only store where that window ends in the
  user-and-time-sorted training items, so a batch gathers its histories with one index.
* **Multi-task models** (MMoE, sparse MoE) learn two tasks: ``click`` — observed rows are 1, and each split also
  gets ``click_negatives`` unobserved items per observed row, drawn once by training popularity (seeded), that
  are 0 — and ``like`` — the label above, unknown (NaN, weight 0) on the sampled rows.

Evaluation scores every row of the split and reports ``auc``, ``gauc`` (per user, weighted by positives as
RecBole does) and ``logloss`` of the first task; the other task's metrics carry its name (``like_auc`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from recplane.errors import InvalidInput
from recplane.models.base import Batch, RankingModel, RecModel
from recplane.models.dcn import DCNv2, DCNv2Config
from recplane.models.deepfm import DeepFM, DeepFMConfig
from recplane.models.din import DIN, DINConfig
from recplane.models.features import DenseField, SparseField
from recplane.models.mmoe import MMoE, MMoEConfig
from recplane.models.moe import SparseMoEConfig, SparseMoERanker
from recplane.models.negatives import InteractionSet, NegativeSampler
from recplane.training.data import IdMap
from recplane.training.evaluate import DEFAULT_COLD_THRESHOLD
from recplane.training.feature_tables import build_entity_features, check_distinct_names
from recplane.training.metrics import auc, gauc, log_loss
from recplane.training.protocol import Protocol, default_protocol, split_for_protocol
from recplane.training.row_features import RowFeatureEncoder
from recplane.training.task import Part, build_with_params

if TYPE_CHECKING:
    from recplane.training.trainer import TrainConfig

__all__ = ["MULTI_TASKS", "RankingTask"]

MULTI_TASKS = ("click", "like")
SINGLE_TASK = "label"
_EVAL_ROWS = 8192  # rows scored at once during evaluation
_RESERVED = {"user_id", "item_id", "history", "history_len", SINGLE_TASK, *MULTI_TASKS}


@dataclass(frozen=True)
class _Rows:
    """The examples of one split: ids, labels per task, (DIN) where each row's history window ends, and the
    encoded row features (model input name → one row per example)."""

    users: Tensor
    items: Tensor
    labels: dict[str, Tensor]
    history_end: Tensor | None = None
    history_len: Tensor | None = None
    row_features: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass(frozen=True)
class _HistoryIndex:
    """Training rows sorted by (user, time), for DIN's "training items strictly before this row" windows.

    Times become ranks among the distinct training times, so one int64 key per (user, time) sorts both and
    never overflows, whatever unit ``ts`` is in.
    """

    keys: Tensor  # sorted user * (T + 1) + time rank
    items: Tensor  # item of each sorted row
    starts: Tensor  # first sorted position of each user
    times: Tensor  # distinct training times, ascending

    @classmethod
    def build(cls, users: Tensor, items: Tensor, times: Tensor, num_users: int) -> _HistoryIndex:
        order = torch.from_numpy(np.lexsort((np.arange(len(users)), times.numpy(), users.numpy())))
        distinct = torch.unique(times)
        users, times = users[order], times[order]
        keys = users * (len(distinct) + 1) + torch.searchsorted(distinct, times)
        return cls(keys, items[order], torch.searchsorted(users, torch.arange(num_users)), distinct)

    def window(self, users: Tensor, times: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
        """For each row, where its window ends in the sorted rows and its length (at most ``max_len``)."""
        keys = users * (len(self.times) + 1) + torch.searchsorted(self.times, times)
        end = torch.searchsorted(self.keys, keys)
        return end, (end - self.starts[users]).clamp(max=max_len)

    def gather(self, end: Tensor, length: Tensor, max_len: int) -> Tensor:
        """``[B, max_len]`` right-padded item ids of the windows, oldest first."""
        positions = torch.arange(max_len)
        valid = positions.unsqueeze(0) < length.unsqueeze(1)
        index = torch.where(valid, (end - length).unsqueeze(1) + positions, 0)
        return torch.where(valid, self.items[index], 0)


class RankingTask:
    """CTR and multi-task rows, features and label/AUC evaluation for one run (see the module docstring)."""

    def __init__(
        self, table: pa.Table, config: TrainConfig, item_features: pa.Table | None, user_features: pa.Table | None
    ) -> None:
        self.config = config
        self.multi_task = config.model in ("mmoe", "moe")
        self.tasks = MULTI_TASKS if self.multi_task else (SINGLE_TASK,)
        if self.multi_task and config.click_negatives < 1:
            raise InvalidInput(
                f"Model {config.model!r} learns clicks from sampled non-clicks; set click_negatives >= 1."
            )
        self.protocol = self._protocol(table)
        for column in ("user_id", "item_id", *(["ts"] if config.model == "din" else [])):
            if column not in table.column_names:
                raise InvalidInput(
                    f"Model {config.model!r} needs a {column!r} column; the table's columns are {table.column_names}."
                )
        self.users = IdMap.build(table.column("user_id"))
        self.items = IdMap.build(table.column("item_id"))
        self.item_features = build_entity_features(item_features, "item_id", self.items, what="item feature")
        self.user_features = build_entity_features(user_features, "user_id", self.users, what="user feature")
        check_distinct_names(_RESERVED, ("item feature", self.item_features), ("user feature", self.user_features))
        split = split_for_protocol(table, self.protocol)
        self.row_encoder = self._fit_row_features(split.train)
        parts: dict[Part, pa.Table] = {"train": split.train, "valid": split.valid, "test": split.test}
        observed = {name: self._observed(part) for name, part in parts.items()}
        row_features = {name: self._row_features(part) for name, part in parts.items()}
        train_users, train_items, _, train_times = observed["train"]
        self.history = (
            _HistoryIndex.build(train_users, train_items, train_times, self.users.num_embeddings)
            if config.model == "din"
            else None
        )
        sampler = self._click_sampler(table, train_items) if self.multi_task else None
        self.parts: dict[Part, _Rows] = {
            name: self._rows(*values, row_features[name], sampler=sampler, seed=config.seed + offset)
            for offset, (name, values) in enumerate(observed.items())
        }

    @property
    def num_rows(self) -> int:
        return len(self.parts["train"])

    def _protocol(self, table: pa.Table) -> Protocol:
        protocol = default_protocol("context")
        if self.config.label_column in table.column_names:
            return protocol
        if self.config.rating_column in table.column_names:
            return replace(protocol, label_threshold=(self.config.rating_column, self.config.rating_threshold))
        raise InvalidInput(
            f"Model {self.config.model!r} needs labels: the table has neither a {self.config.label_column!r} column "
            f"(0/1) nor a {self.config.rating_column!r} column to threshold at {self.config.rating_threshold}; its "
            f"columns are {table.column_names}. Set label_column or rating_column in the TrainConfig."
        )

    def _fit_row_features(self, train: pa.Table) -> RowFeatureEncoder | None:
        """The encoder of ``row_feature_columns``, fitted on the training split; None without row features."""
        columns = list(self.config.row_feature_columns)
        if not columns:
            return None
        labels = {self.config.label_column, self.config.rating_column}
        leaking = sorted(labels & set(columns))
        if leaking:
            raise InvalidInput(f"Row feature column(s) {leaking} hold the label; a model may not read its own label.")
        encoder = RowFeatureEncoder.fit(train, columns)
        entity_names = {*self.item_features.names, *self.user_features.names}
        entity_names |= {f"{name}_len" for name in [*self.item_features.bags, *self.user_features.bags]}
        for name in encoder.input_names:
            if name in _RESERVED:
                raise InvalidInput(
                    f"Row feature column {name!r} clashes with a batch key the trainer uses ({sorted(_RESERVED)}); "
                    "rename it."
                )
            if name in entity_names:
                raise InvalidInput(f"Feature {name!r} is both a row feature and an item/user feature; rename one.")
        return encoder

    def _row_features(self, part: pa.Table) -> dict[str, Tensor]:
        if self.row_encoder is None:
            return {}
        return {name: torch.from_numpy(values) for name, values in self.row_encoder.encode(part).items()}

    def _observed(self, part: pa.Table) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(users, items, label, time) of a split's observed rows as tensors."""
        users = torch.from_numpy(self.users.encode(part.column("user_id"), what="user_id"))
        items = torch.from_numpy(self.items.encode(part.column("item_id"), what="item_id"))
        times = (
            torch.tensor(part.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=torch.int64)
            if "ts" in part.column_names
            else torch.zeros(len(users), dtype=torch.int64)
        )
        return users, items, self._labels(part), times

    def _labels(self, part: pa.Table) -> Tensor:
        if self.protocol.label_threshold is None:
            values = pc.fill_null(part.column(self.config.label_column).cast(pa.float32()), 0.0)
            labels = torch.tensor(values.to_numpy(), dtype=torch.float32)
            if bool(((labels != 0) & (labels != 1)).any()):
                raise InvalidInput(f"Column {self.config.label_column!r} must hold 0/1 labels.")
            return labels
        column, threshold = self.protocol.label_threshold
        ratings = pc.fill_null(part.column(column).cast(pa.float64()), float("-inf"))
        return (torch.tensor(ratings.to_numpy(), dtype=torch.float64) >= threshold).float()

    def _click_sampler(self, table: pa.Table, train_items: Tensor) -> NegativeSampler:
        """Popularity-weighted unobserved items: never a pair the user has in any split."""
        every_user = torch.from_numpy(self.users.encode(table.column("user_id"), what="user_id"))
        every_item = torch.from_numpy(self.items.encode(table.column("item_id"), what="item_id"))
        seen = InteractionSet(every_user, every_item, self.items.num_embeddings)
        counts = torch.bincount(train_items, minlength=self.items.num_embeddings)
        return NegativeSampler.popularity(counts, exclude=seen)

    def _rows(
        self,
        users: Tensor,
        items: Tensor,
        label: Tensor,
        times: Tensor,
        row_features: dict[str, Tensor],
        *,
        sampler: NegativeSampler | None,
        seed: int,
    ) -> _Rows:
        labels = {SINGLE_TASK: label}
        if sampler is not None:
            per_row = self.config.click_negatives
            sampled = sampler.sample(users, per_row, generator=torch.Generator().manual_seed(seed)).reshape(-1)
            labels = {
                "click": torch.cat([torch.ones(len(users)), torch.zeros(len(sampled))]),
                "like": torch.cat([label, torch.full((len(sampled),), float("nan"))]),
            }
            users, items = torch.cat([users, users.repeat_interleave(per_row)]), torch.cat([items, sampled])
            times = torch.cat([times, times.repeat_interleave(per_row)])
            # A sampled non-click happens in the same request as its observed row, so it shares the row features.
            row_features = {
                name: torch.cat([v, v.repeat_interleave(per_row, dim=0)]) for name, v in row_features.items()
            }
        if self.history is None:
            return _Rows(users, items, labels, row_features=row_features)
        end, length = self.history.window(users, times, self.config.max_history)
        return _Rows(users, items, labels, end, length, row_features)

    def build_model(self) -> RecModel:
        params = self.config.params
        item_id = [] if self.config.model == "din" else [SparseField("item_id", self.items.num_embeddings)]
        sparse = (
            SparseField("user_id", self.users.num_embeddings),
            *item_id,
            *self.item_features.sparse_fields(),
            *self.user_features.sparse_fields(),
            *self._row_sparse_fields(),
        )
        dense = (*self.item_features.dense_fields(), *self.user_features.dense_fields(), *self._row_dense_fields())
        fields = {"sparse_fields": sparse, "dense_fields": dense}
        model = self.config.model
        if model == "deepfm":
            return DeepFM(build_with_params(model, params, {**fields, "label": SINGLE_TASK}, DeepFMConfig))
        if model == "dcn":
            return DCNv2(build_with_params(model, params, {**fields, "label": SINGLE_TASK}, DCNv2Config))
        if model == "din":
            owned = {**fields, "label": SINGLE_TASK, "num_items": self.items.num_embeddings}
            return DIN(build_with_params(model, params, owned, DINConfig))
        if model == "mmoe":
            return MMoE(build_with_params(model, params, {**fields, "tasks": MULTI_TASKS}, MMoEConfig))
        return SparseMoERanker(build_with_params(model, params, {**fields, "tasks": MULTI_TASKS}, SparseMoEConfig))

    def _row_sparse_fields(self) -> list[SparseField]:
        features = self.row_encoder.features if self.row_encoder else ()
        return [SparseField(f.name, f.cardinality, multi_valued=f.kind == "bag") for f in features if f.kind != "dense"]

    def _row_dense_fields(self) -> list[DenseField]:
        features = self.row_encoder.features if self.row_encoder else ()
        return [DenseField(f.name, f.dim) for f in features if f.kind == "dense"]

    def features(self, part: _Rows, rows: Tensor) -> Batch:
        """The model inputs of ``rows`` of a split (no labels)."""
        users, items = part.users[rows], part.items[rows]
        batch: Batch = {"user_id": users, "item_id": items}
        batch.update(self.item_features.take(items))
        batch.update(self.user_features.take(users))
        batch.update({name: values[rows] for name, values in part.row_features.items()})
        if self.history is not None and part.history_end is not None and part.history_len is not None:
            lengths = part.history_len[rows]
            batch["history"] = self.history.gather(part.history_end[rows], lengths, self.config.max_history)
            batch["history_len"] = lengths
        return batch

    def batch(self, rows: Tensor, generator: torch.Generator) -> Batch:
        train = self.parts["train"]
        batch = self.features(train, rows)
        batch.update({task: train.labels[task][rows] for task in self.tasks})
        return batch

    def evaluate(self, model: RecModel, part: Literal["valid", "test"], device: torch.device) -> dict[str, float]:
        rows = self.parts[part]
        if len(rows) == 0:
            return {}
        if not isinstance(model, RankingModel):
            raise TypeError(f"Label evaluation needs a ranking model, got {type(model).__name__}.")
        chunks: list[dict[str, Tensor]] = []
        for start in range(0, len(rows), _EVAL_ROWS):
            index = torch.arange(start, min(start + _EVAL_ROWS, len(rows)))
            batch = {key: value.to(device) for key, value in self.features(rows, index).items()}
            chunks.append({task: p.float().cpu() for task, p in model.predict(batch).items()})
        metrics: dict[str, float] = {}
        cold = self._cold_item_rows(rows)
        for position, task in enumerate(self.tasks):
            prefix = "" if position == 0 else f"{task}_"
            probabilities = torch.cat([chunk[task] for chunk in chunks])
            values = _binary_metrics(rows.labels[task], probabilities, rows.users)
            metrics.update({prefix + name: value for name, value in values.items()})
            if position == 0 and bool(cold.any()):
                # The segment text features are for: items seen fewer than 5 times in training.
                values = _binary_metrics(rows.labels[task][cold], probabilities[cold], rows.users[cold])
                metrics.update({f"cold_items/{name}": value for name, value in values.items()})
        return metrics

    def _cold_item_rows(self, rows: _Rows) -> Tensor:
        """Rows whose item has fewer than ``DEFAULT_COLD_THRESHOLD`` observed training rows (sampled
        non-clicks of the multi-task models do not count as interactions)."""
        train = self.parts["train"]
        observed = train.labels["click"] == 1 if self.multi_task else torch.ones(len(train), dtype=torch.bool)
        counts = torch.bincount(train.items[observed], minlength=self.items.num_embeddings)
        return counts[rows.items] < DEFAULT_COLD_THRESHOLD


def _binary_metrics(labels: Tensor, probabilities: Tensor, users: Tensor) -> dict[str, float]:
    """AUC, GAUC and LogLoss over the labelled rows; a metric that needs both classes is left out without them."""
    known = ~torch.isnan(labels)
    truth, predicted, groups = labels[known].numpy(), probabilities[known].numpy(), users[known].numpy()
    if len(truth) == 0:
        return {}
    metrics = {"logloss": log_loss(truth, predicted)}
    if 0 < truth.sum() < len(truth):
        metrics["auc"] = auc(truth, predicted)
    positives = np.bincount(groups, weights=truth)
    sizes = np.bincount(groups)
    if ((positives > 0) & (positives < sizes)).any():
        metrics["gauc"] = gauc(truth, predicted, groups)
    return metrics
