"""DeepFM: a factorisation machine and an MLP sharing one set of field embeddings, for CTR prediction.

Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction", IJCAI 2017, with
RecBole's defaults (embedding 10, MLP 128-128-128, dropout 0.2). The logit is the sum of

* first order: a learned weight per sparse id (mean over a bag) + a linear term on the dense values + bias,
* second order: the FM pairwise interactions of the field embeddings, in O(F·D),
* deep: an MLP over the concatenated field embeddings.

Dense fields join the FM as fields of their own (each projected to the embedding size without bias, i.e.
value * learned vector for a scalar, like RecBole's float-field embeddings), so every sparse field must use
the model's ``embedding_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from recplane.models.base import Batch, ModelSignature, RankingModel
from recplane.models.features import (
    MLP,
    DenseField,
    EmbeddingFactory,
    FeatureLayer,
    SparseField,
    single_label_signature,
    weighted_bce,
)

__all__ = ["DeepFM", "DeepFMConfig"]


@dataclass(frozen=True, kw_only=True)
class DeepFMConfig:
    """DeepFM fields and hyperparameters (defaults: RecBole 1.2's ``DeepFM.yaml``)."""

    sparse_fields: tuple[SparseField, ...]
    dense_fields: tuple[DenseField, ...] = ()
    embedding_size: int = 10
    mlp_hidden_size: tuple[int, ...] = (128, 128, 128)
    dropout_prob: float = 0.2
    label: str = "label"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparse_fields", tuple(self.sparse_fields))
        object.__setattr__(self, "dense_fields", tuple(self.dense_fields))
        object.__setattr__(self, "mlp_hidden_size", tuple(self.mlp_hidden_size))
        if not self.sparse_fields:
            raise ValueError("DeepFM needs at least one sparse field.")
        if self.embedding_size < 1 or any(h < 1 for h in self.mlp_hidden_size):
            raise ValueError("embedding_size and every mlp_hidden_size entry must be >= 1.")
        if not 0.0 <= self.dropout_prob < 1.0:
            raise ValueError(f"dropout_prob {self.dropout_prob} is not in [0, 1).")
        odd = [f.name for f in self.sparse_fields if f.dim not in (None, self.embedding_size)]
        if odd:
            raise ValueError(
                f"Sparse fields {odd} set a dim other than embedding_size {self.embedding_size}; the FM needs one "
                "dim for every field. Leave dim unset."
            )


class DeepFM(RankingModel):
    """FM + DNN over shared field embeddings; one logit for ``config.label``."""

    def __init__(self, config: DeepFMConfig, *, embedding_factory: EmbeddingFactory | None = None) -> None:
        super().__init__()
        self.config = config
        size = config.embedding_size
        self.features = FeatureLayer(
            config.sparse_fields, config.dense_fields, default_dim=size, embedding_factory=embedding_factory
        )
        # First-order weights are one-wide embeddings of the same ids (mean over a bag, like the FM part).
        self.first_order = FeatureLayer(
            [replace(f, dim=1) for f in config.sparse_fields], default_dim=1, embedding_factory=embedding_factory
        )
        self.dense_linear = nn.Linear(self.features.dense_dim, 1) if config.dense_fields else None
        self.dense_to_field = nn.ModuleList(nn.Linear(f.dim, size, bias=False) for f in config.dense_fields)
        num_fields = len(config.sparse_fields) + len(config.dense_fields)
        self.mlp = MLP(num_fields * size, config.mlp_hidden_size, dropout=config.dropout_prob)
        self.deep_head = nn.Linear(self.mlp.out_dim, 1)
        self.bias = nn.Parameter(torch.zeros(()))
        for linear in [*self.dense_to_field, self.deep_head]:
            nn.init.xavier_normal_(linear.weight)

    def signature(self) -> ModelSignature:
        """The declared fields plus the label; output: one logit per row."""
        return single_label_signature(self.features, self.config.label)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """``{label: logits [B]}``."""
        inputs = self.features(batch)
        dense_fields = (
            [
                project(values)
                for project, values in zip(
                    self.dense_to_field, inputs.dense.split([f.dim for f in self.config.dense_fields], 1), strict=True
                )
            ]
            if self.config.dense_fields
            else []  # an empty split exports but does not reload under torch.export
        )
        fields = torch.cat([inputs.stacked(), *(d.unsqueeze(1) for d in dense_fields)], dim=1)  # [B, F, D]
        first = torch.cat(self.first_order(batch).sparse, dim=1).sum(dim=1) + self.bias
        if self.dense_linear is not None:
            first = first + self.dense_linear(inputs.dense).squeeze(1)
        # Pairwise interactions: 0.5 * ((sum_f v_f)^2 - sum_f v_f^2), summed over the embedding dims.
        second = 0.5 * (fields.sum(dim=1).pow(2) - fields.pow(2).sum(dim=1)).sum(dim=1)
        deep = self.deep_head(self.mlp(fields.flatten(1))).squeeze(1)
        return {self.config.label: first + second + deep}

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """Binary cross-entropy with logits against ``batch[label]``."""
        return weighted_bce(outputs, batch, (self.config.label,))
