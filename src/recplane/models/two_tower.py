"""Two-tower retrieval (Covington et al. 2016; Yi et al. 2019): a user tower and an item tower meet in one space.

* User tower: user id, categorical side features (one embedding table each), dense features, and the mean of
  the item embeddings of the user's recent items (``history`` ``[B, L]``, left-aligned, masked by
  ``history_len``).
* Item tower: item id, categorical and dense item features, and optionally a precomputed dense vector per
  item (e.g. a 384-d MiniLM text embedding) through a linear projection — the part that helps cold items.
* Both end in an MLP and are L2-normalised; score = cosine / temperature.

Item features are held by the model (one row per item id, set at construction or with
:meth:`TwoTower.set_item_features`), not read from the batch: training, full-sort evaluation and the serving
index then embed an item from the same data. User features come with each batch.

Losses: softmax over in-batch negatives with logQ correction (Yi et al. 2019: subtract ``log q(item)``, the
item's sampling probability as an in-batch negative, from every logit, else popular items are over-penalised),
over sampled negatives (``neg_item_id`` ``[B, K]``), or over both at once ("mixed", Yang et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recplane.models.base import Batch, ModelSignature, RetrievalModel
from recplane.models.embeddings import FixedEmbedding
from recplane.models.mf import mask_padding_item, negatives_2d
from recplane.models.negatives import item_log_frequency

__all__ = ["TwoTower", "TwoTowerConfig", "in_batch_softmax_loss"]

ITEM_VECTOR = "item_vector"


@dataclass
class TwoTowerConfig:
    """Shape and training choices of a :class:`TwoTower`; the defaults suit MovieLens-size data."""

    num_users: int
    num_items: int
    embedding_dim: int = 64
    tower_dims: tuple[int, ...] = (128, 64)
    user_categorical: dict[str, int] = field(default_factory=dict)
    user_dense: dict[str, int] = field(default_factory=dict)
    item_categorical: dict[str, int] = field(default_factory=dict)
    item_dense: dict[str, int] = field(default_factory=dict)
    item_vector_dim: int = 0
    use_user_id: bool = True
    use_item_id: bool = True
    use_history: bool = True
    temperature: float = 0.05
    negatives: Literal["in_batch", "sampled", "mixed"] = "in_batch"
    dropout: float = 0.0
    sparse: bool = False
    init_std: float = 0.1

    def __post_init__(self) -> None:
        if not self.tower_dims:
            raise ValueError("TwoTowerConfig.tower_dims needs at least one layer (the output size).")
        if self.temperature <= 0:
            raise ValueError(f"TwoTowerConfig.temperature must be positive, got {self.temperature}.")
        if self.negatives not in ("in_batch", "sampled", "mixed"):
            raise ValueError(
                f"TwoTowerConfig.negatives must be 'in_batch', 'sampled' or 'mixed', got {self.negatives!r}."
            )


def in_batch_softmax_loss(
    user_vec: Tensor,
    item_vec: Tensor,
    item_ids: Tensor,
    temperature: float,
    item_logq: Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Softmax cross-entropy of each user against the batch's items, the diagonal being the positive.

    ``item_logq`` (``[B]``, log sampling probability of each batch item) is subtracted from every logit of that
    item's column; other occurrences of a row's own positive item are masked, not counted as negatives.
    """
    logits = _in_batch_logits(user_vec, item_vec, item_ids, temperature, item_logq)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device), reduction=reduction)


def _in_batch_logits(
    user_vec: Tensor, item_vec: Tensor, item_ids: Tensor, temperature: float, item_logq: Tensor | None
) -> Tensor:
    logits = user_vec @ item_vec.T / temperature
    if item_logq is not None:
        logits = logits - item_logq.unsqueeze(0)
    duplicate = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
    duplicate.fill_diagonal_(False)
    return logits.masked_fill(duplicate, float("-inf"))


def _mlp(in_dim: int, dims: tuple[int, ...], dropout: float) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them; the last layer is linear."""
    layers: list[nn.Module] = []
    for index, out_dim in enumerate(dims):
        layers.append(nn.Linear(in_dim, out_dim))
        if index < len(dims) - 1:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        in_dim = out_dim
    return nn.Sequential(*layers)


class TwoTower(RetrievalModel):
    """Two-tower retrieval model with side features, history pooling and logQ-corrected softmax losses."""

    item_logq: Tensor
    item_features_ready: Tensor

    def __init__(
        self,
        config: TwoTowerConfig,
        *,
        item_features: dict[str, Tensor] | None = None,
        item_popularity: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_dim
        self.user_id_table = self._table(config.num_users) if config.use_user_id else None
        # The item id table also embeds the history, so it exists when either uses it.
        self.item_id_table = self._table(config.num_items) if config.use_item_id or config.use_history else None
        self.user_tables = nn.ModuleDict({name: self._table(n) for name, n in config.user_categorical.items()})
        self.item_tables = nn.ModuleDict({name: self._table(n) for name, n in config.item_categorical.items()})
        self.item_vector_projection = nn.Linear(config.item_vector_dim, dim) if config.item_vector_dim else None
        user_in = dim * (int(config.use_user_id) + len(config.user_categorical) + int(config.use_history))
        user_in += sum(config.user_dense.values())
        item_in = dim * (int(config.use_item_id) + len(config.item_categorical) + int(config.item_vector_dim > 0))
        item_in += sum(config.item_dense.values())
        if user_in == 0 or item_in == 0:
            raise ValueError("TwoTower needs at least one input per tower (ids, features, history or item vector).")
        self.user_tower = _mlp(user_in, config.tower_dims, config.dropout)
        self.item_tower = _mlp(item_in, config.tower_dims, config.dropout)
        # Item feature rows (index = item id) live in buffers so checkpoints carry them; a flag says they were set.
        self._item_feature_widths: dict[str, int] = {
            **{name: 0 for name in config.item_categorical},
            **config.item_dense,
            **({ITEM_VECTOR: config.item_vector_dim} if config.item_vector_dim else {}),
        }
        for name, width in self._item_feature_widths.items():
            dtype = torch.int64 if width == 0 else torch.float32
            shape = (config.num_items,) if width == 0 else (config.num_items, width)
            self.register_buffer(f"item_feature_{name}", torch.zeros(shape, dtype=dtype))
        self.register_buffer("item_features_ready", torch.tensor(not self._item_feature_widths))
        # Zeros mean "no correction": a constant shift of every logit leaves the softmax unchanged.
        logq = item_log_frequency(item_popularity) if item_popularity is not None else torch.zeros(config.num_items)
        if logq.shape != (config.num_items,):
            raise ValueError(f"item_popularity must have shape ({config.num_items},), got {tuple(logq.shape)}.")
        self.register_buffer("item_logq", logq)
        if item_features is not None:
            self.set_item_features(item_features)

    def _table(self, rows: int) -> FixedEmbedding:
        return FixedEmbedding(rows, self.config.embedding_dim, sparse=self.config.sparse, init_std=self.config.init_std)

    def set_item_features(self, features: dict[str, Tensor]) -> None:
        """Set every declared item feature (``[num_items]`` int64 ids or ``[num_items, width]`` floats; the
        precomputed vector goes under ``"item_vector"``)."""
        missing = sorted(set(self._item_feature_widths) - set(features))
        unknown = sorted(set(features) - set(self._item_feature_widths))
        if missing or unknown:
            raise ValueError(f"Item features do not match the config: missing {missing}, undeclared {unknown}.")
        for name in self._item_feature_widths:
            buffer = self._item_feature(name)
            value = features[name].to(buffer.device, buffer.dtype)
            if value.dim() == 1 and buffer.dim() == 2 and buffer.shape[1] == 1:
                value = value.unsqueeze(1)
            if value.shape != buffer.shape:
                raise ValueError(
                    f"Item feature {name!r} must have shape {tuple(buffer.shape)}, got {tuple(value.shape)}."
                )
            buffer.copy_(value)
        self.item_features_ready.fill_(True)

    def _item_feature(self, name: str) -> Tensor:
        buffer = getattr(self, f"item_feature_{name}")
        assert isinstance(buffer, Tensor)
        return buffer

    def signature(self) -> ModelSignature:
        cfg = self.config
        inputs = {"user_id": "int64[B]", "item_id": "int64[B] (training)"}
        inputs.update({name: "int64[B]" for name in cfg.user_categorical})
        inputs.update({name: f"float32[B,{width}]" for name, width in cfg.user_dense.items()})
        if cfg.use_history:
            inputs.update({"history": "int64[B,L]", "history_len": "int64[B]"})
        inputs["item_logq"] = "float32[B] (optional; default from item_popularity)"
        if cfg.negatives != "in_batch":
            inputs["neg_item_id"] = "int64[B,K] (training)"
            inputs["neg_item_logq"] = "float32[B,K] (optional)"
        return ModelSignature(
            inputs=inputs,
            outputs={"score": "float32[B]", "neg_score": "float32[B,K] (when neg_item_id is given)"},
            feature_names=(*cfg.user_categorical, *cfg.user_dense, *self._item_feature_widths),
        )

    def score_all(self, batch: Batch) -> Tensor:
        """``[B, num_items]`` scores of every item; column 0 (padding) is ``-inf``."""
        return mask_padding_item(super().score_all(batch))

    def user_representation(self, batch: Batch) -> Tensor:
        cfg = self.config
        parts: list[Tensor] = []
        if self.user_id_table is not None:
            parts.append(self.user_id_table(batch["user_id"]))
        parts.extend(self.user_tables[name](batch[name]) for name in cfg.user_categorical)
        parts.extend(_as_2d(batch[name]).float() for name in cfg.user_dense)
        if cfg.use_history:
            parts.append(self._history_mean(batch["history"], batch["history_len"]))
        return F.normalize(self.user_tower(torch.cat(parts, dim=-1)), dim=-1)

    def _history_mean(self, history: Tensor, history_len: Tensor) -> Tensor:
        """Mean of the item-id embeddings of the first ``history_len`` items of each row (0 if empty)."""
        positions = torch.arange(history.shape[1], device=history.device)
        mask = (positions.unsqueeze(0) < history_len.unsqueeze(1)).unsqueeze(-1)
        assert self.item_id_table is not None  # built whenever use_history is set
        summed = (self.item_id_table(history) * mask).sum(dim=1)
        return summed / history_len.clamp(min=1).unsqueeze(1).to(summed.dtype)

    def item_representation(self, item_ids: Tensor | None = None) -> Tensor:
        if not bool(self.item_features_ready):
            raise ValueError("TwoTower item features were declared but never set: call set_item_features(...).")
        if item_ids is None:
            item_ids = torch.arange(self.config.num_items, device=self.item_logq.device)
        parts: list[Tensor] = []
        if self.config.use_item_id and self.item_id_table is not None:
            parts.append(self.item_id_table(item_ids))
        for name, width in self._item_feature_widths.items():
            values = self._item_feature(name)[item_ids]
            if name == ITEM_VECTOR and self.item_vector_projection is not None:
                parts.append(self.item_vector_projection(values))
            elif width == 0:
                parts.append(self.item_tables[name](values))
            else:
                parts.append(values)
        return F.normalize(self.item_tower(torch.cat(parts, dim=-1)), dim=-1)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        user_vec = self.user_representation(batch)
        item_ids = batch["item_id"]
        if "neg_item_id" not in batch:
            item_vec = self.item_representation(item_ids)
            score = (user_vec * item_vec).sum(-1) / self.config.temperature
            return {"score": score, "user_vec": user_vec, "item_vec": item_vec}
        negatives = negatives_2d(batch)
        # One pass through the item tower (and one lookup per table) for positives and negatives together.
        vectors = self.item_representation(torch.cat([item_ids.unsqueeze(1), negatives], dim=1).reshape(-1))
        vectors = vectors.view(item_ids.shape[0], negatives.shape[1] + 1, -1)
        scores = torch.einsum("bd,bkd->bk", user_vec, vectors) / self.config.temperature
        return {"score": scores[:, 0], "neg_score": scores[:, 1:], "user_vec": user_vec, "item_vec": vectors[:, 0]}

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        mode = self.config.negatives
        if mode == "sampled":
            return self._sampled_loss(batch, outputs)
        item_ids = batch["item_id"]
        item_logq = batch.get("item_logq", self.item_logq[item_ids])
        logits = _in_batch_logits(
            outputs["user_vec"], outputs["item_vec"], item_ids, self.config.temperature, item_logq
        )
        if mode == "mixed":
            logits = torch.cat([logits, self._negative_logits(batch, outputs)], dim=1)
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))

    def _sampled_loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        logits = torch.cat([outputs["score"].unsqueeze(1), self._negative_logits(batch, outputs)], dim=1)
        return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.int64, device=logits.device))

    def _negative_logits(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """Sampled-negative logits, logQ-corrected when ``neg_item_logq`` is given; accidental hits masked."""
        if "neg_score" not in outputs:
            raise ValueError(f"negatives={self.config.negatives!r} needs 'neg_item_id' ([B, K] int64) in the batch.")
        logits = outputs["neg_score"]
        if "neg_item_logq" in batch:
            logits = logits - batch["neg_item_logq"]
        hits = negatives_2d(batch) == batch["item_id"].unsqueeze(1)
        return logits.masked_fill(hits, float("-inf"))


def _as_2d(values: Tensor) -> Tensor:
    """A ``[B]`` dense feature as ``[B, 1]``; ``[B, W]`` unchanged."""
    return values.unsqueeze(-1) if values.dim() == 1 else values
