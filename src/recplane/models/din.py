"""DIN: CTR prediction with target attention over the user's behaviour history.

Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018, with RecBole's defaults.
The user's interest is a weighted sum of the history item embeddings, each weight computed by an activation
unit (an MLP over ``[h, t, h - t, h ⊙ t]`` of history item h and candidate t). As in the paper and RecBole the
weights are not softmax-normalised — how many related items the user touched is signal — and RecBole's
1/√D scaling is kept. Padding positions get weight exactly zero.

Inputs: ``item_id`` ``[B]`` the candidate, ``history`` ``[B, L]`` right-padded item ids with ``history_len``
``[B]`` (positions ``>= history_len`` are ignored, any value), and any other declared sparse/dense fields
(user, context) through ``FeatureLayer``. The MLP reads ``[interest, candidate, interest ⊙ candidate, other
fields]`` with Dice activations and batch norm, as RecBole does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from recplane.models.base import Batch, ModelSignature, RankingModel
from recplane.models.features import (
    MLP,
    DenseField,
    EmbeddingFactory,
    FeatureLayer,
    SparseField,
    check_ids,
    default_embedding,
    require,
    weighted_bce,
)

__all__ = ["DIN", "DINConfig", "Dice"]


@dataclass(frozen=True, kw_only=True)
class DINConfig:
    """DIN hyperparameters (defaults: RecBole 1.2's ``DIN.yaml``; attention MLP 80-40 as in the DIN paper)."""

    num_items: int
    sparse_fields: tuple[SparseField, ...] = ()
    dense_fields: tuple[DenseField, ...] = ()
    embedding_size: int = 10
    attention_hidden_size: tuple[int, ...] = (80, 40)
    mlp_hidden_size: tuple[int, ...] = (256, 256, 256)
    dropout_prob: float = 0.0
    activation: Literal["dice", "prelu", "relu"] = "dice"
    label: str = "label"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparse_fields", tuple(self.sparse_fields))
        object.__setattr__(self, "dense_fields", tuple(self.dense_fields))
        object.__setattr__(self, "attention_hidden_size", tuple(self.attention_hidden_size))
        object.__setattr__(self, "mlp_hidden_size", tuple(self.mlp_hidden_size))
        if self.num_items < 1:
            raise ValueError(f"num_items is {self.num_items}; it must be >= 1.")
        if min((self.embedding_size, *self.attention_hidden_size, *self.mlp_hidden_size)) < 1:
            raise ValueError("embedding_size and every hidden size must be >= 1.")
        if self.activation not in ("dice", "prelu", "relu"):
            raise ValueError(f"activation {self.activation!r} is not one of 'dice', 'prelu', 'relu'.")
        if not 0.0 <= self.dropout_prob < 1.0:
            raise ValueError(f"dropout_prob {self.dropout_prob} is not in [0, 1).")
        reserved = {"item_id", "history", "history_len", self.label}
        names = {f.name for f in self.sparse_fields} | {f.name for f in self.dense_fields}
        clashing = sorted(reserved & names)
        if clashing:
            raise ValueError(f"Fields {clashing} clash with DIN's own batch keys {sorted(reserved)}; rename them.")


class Dice(nn.Module):
    """DIN's data-adaptive activation: ``p(x)*x + (1 - p(x))*alpha*x`` with ``p = sigmoid(batchnorm(x))``."""

    def __init__(self, width: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(width, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        p = torch.sigmoid(self.norm(x))
        return p * x + (1 - p) * self.alpha * x


class _ActivationUnit(nn.Module):
    """Scores each history item against the candidate: MLP([h, t, h - t, h ⊙ t]) → one weight."""

    def __init__(self, dim: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        # Sigmoid hidden activations, as RecBole's SequenceAttLayer.
        self.mlp = MLP(4 * dim, hidden_sizes, activation=lambda _: nn.Sigmoid())
        self.out = nn.Linear(self.mlp.out_dim, 1)
        self.scale = dim**-0.5

    def forward(self, candidate: Tensor, history: Tensor, mask: Tensor) -> Tensor:
        """``[B, D]`` interest: the mask-weighted sum of ``history`` ``[B, L, D]``."""
        target = candidate.unsqueeze(1).expand_as(history)
        features = torch.cat([history, target, history - target, history * target], dim=-1)
        weights = self.out(self.mlp(features.flatten(0, 1))).view(mask.shape) * self.scale
        weights = weights.masked_fill(~mask, 0.0)
        # Zeroing the keys too keeps the output exactly independent of whatever sits in padded positions.
        return torch.einsum("bl,bld->bd", weights, history * mask.unsqueeze(-1))


class DIN(RankingModel):
    """Target attention over the behaviour history plus other fields, then an MLP; one logit."""

    def __init__(self, config: DINConfig, *, embedding_factory: EmbeddingFactory | None = None) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_size
        self.item_embedding = (embedding_factory or default_embedding)(config.num_items, dim)
        self.features = (
            FeatureLayer(
                config.sparse_fields, config.dense_fields, default_dim=dim, embedding_factory=embedding_factory
            )
            if config.sparse_fields or config.dense_fields
            else None
        )
        self.attention = _ActivationUnit(dim, config.attention_hidden_size)
        other = self.features.output_dim if self.features else 0
        activation: dict[str, Callable[[int], nn.Module]] = {
            "dice": Dice,
            "prelu": lambda width: nn.PReLU(width),
            "relu": lambda _: nn.ReLU(),
        }
        self.mlp = MLP(
            3 * dim + other,
            config.mlp_hidden_size,
            dropout=config.dropout_prob,
            batch_norm=True,
            activation=activation[config.activation],
        )
        self.head = nn.Linear(self.mlp.out_dim, 1)
        nn.init.xavier_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def signature(self) -> ModelSignature:
        """Candidate, history and other fields plus the label; output: one logit per row."""
        other = self.features.input_spec() if self.features else {}
        return ModelSignature(
            inputs={
                "item_id": "int64[B] candidate item",
                "history": "int64[B, L] right-padded item ids",
                "history_len": "int64[B]",
                **other,
                self.config.label: "float32[B] 0/1 (training)",
            },
            outputs={self.config.label: "float32[B] logit"},
            tasks=(self.config.label,),
            feature_names=("item_id", "history", *(self.features.feature_names if self.features else ())),
        )

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """``{label: logits [B]}``."""
        return {self.config.label: self.head(self.mlp(self._mlp_input(batch))).squeeze(1)}

    def interest(self, batch: Batch) -> Tensor:
        """``[B, D]``: the user's interest w.r.t. each candidate (attention-pooled history)."""
        candidate, history, mask = self._lookup(batch)
        return self.attention(candidate, history, mask)

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """Binary cross-entropy with logits against ``batch[label]``."""
        return weighted_bce(outputs, batch, (self.config.label,))

    def _lookup(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        item_id = require(batch, "item_id", "candidate item ids")
        history = require(batch, "history", "right-padded item ids")
        history_len = require(batch, "history_len", "history lengths")
        if history.dim() != 2 or item_id.dim() != 1:
            raise ValueError(
                f"DIN needs item_id [B] and history [B, L]; got {tuple(item_id.shape)}, {tuple(history.shape)}."
            )
        mask = torch.arange(history.shape[1], device=history.device) < history_len.unsqueeze(1)
        # Padding may hold any value: it is replaced by id 0 so that lookups stay in range.
        history = history.masked_fill(~mask, 0)
        if isinstance(self.item_embedding, nn.Embedding):
            check_ids("DIN item_id", item_id, self.config.num_items)
            check_ids("DIN history", history, self.config.num_items)
        return self.item_embedding(item_id), self.item_embedding(history), mask

    def _mlp_input(self, batch: Batch) -> Tensor:
        candidate, history, mask = self._lookup(batch)
        interest = self.attention(candidate, history, mask)
        parts = [interest, candidate, interest * candidate]
        if self.features is not None:
            parts.append(self.features(batch).flat())
        return torch.cat(parts, dim=1)
