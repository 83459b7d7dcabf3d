"""DCN-v2: explicit bounded-degree feature crosses (cross network v2) alongside or before an MLP.

Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank
Systems", WWW 2021, with RecBole's defaults. Each cross layer computes

    x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l

with a full-rank ``W_l`` (``mixed=False``) or, when ``mixed=True``, a gated mixture of ``expert_num`` low-rank
experts ``x_0 ⊙ (U tanh(C tanh(Vᵀ x_l)) + b)`` (the paper's DCN-Mix). ``structure="parallel"`` feeds ``x_0``
to the cross network and the MLP side by side and concatenates them; ``"stacked"`` runs the MLP on the
cross network's output. ``x_0`` is every sparse field embedding and every dense value, concatenated.

Departure from RecBole: its cross weights start from N(0, 1) and carry an unsquared L2 penalty
(``reg_weight: 2``); here they start Xavier-normal and ``reg_weight`` (default 0) adds a squared L2 penalty on
the cross weights only — use the optimiser's weight decay for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

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

__all__ = ["CrossNetworkMix", "CrossNetworkV2", "DCNv2", "DCNv2Config"]


@dataclass(frozen=True, kw_only=True)
class DCNv2Config:
    """DCN-v2 fields and hyperparameters (defaults: RecBole 1.2's ``DCNV2.yaml``)."""

    sparse_fields: tuple[SparseField, ...]
    dense_fields: tuple[DenseField, ...] = ()
    embedding_size: int = 16
    mixed: bool = False
    structure: Literal["parallel", "stacked"] = "parallel"
    cross_layer_num: int = 3
    expert_num: int = 4
    low_rank: int = 128
    mlp_hidden_size: tuple[int, ...] = (768, 768)
    dropout_prob: float = 0.2
    batch_norm: bool = True
    reg_weight: float = 0.0
    label: str = "label"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparse_fields", tuple(self.sparse_fields))
        object.__setattr__(self, "dense_fields", tuple(self.dense_fields))
        object.__setattr__(self, "mlp_hidden_size", tuple(self.mlp_hidden_size))
        if self.structure not in ("parallel", "stacked"):
            raise ValueError(f"structure {self.structure!r} is not one of 'parallel', 'stacked'.")
        sizes = (self.embedding_size, self.cross_layer_num, self.expert_num, self.low_rank, *self.mlp_hidden_size)
        if min(sizes) < 1:
            raise ValueError("embedding_size, cross_layer_num, expert_num, low_rank and mlp sizes must be >= 1.")
        if self.structure == "stacked" and not self.mlp_hidden_size:
            raise ValueError("structure 'stacked' needs at least one mlp_hidden_size entry.")
        if not 0.0 <= self.dropout_prob < 1.0:
            raise ValueError(f"dropout_prob {self.dropout_prob} is not in [0, 1).")
        if self.reg_weight < 0:
            raise ValueError(f"reg_weight {self.reg_weight} must be >= 0.")


class CrossNetworkV2(nn.Module):
    """Full-rank cross layers: ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l``."""

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        layers = [nn.Linear(dim, dim) for _ in range(num_layers)]
        for layer in layers:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.layers = nn.ModuleList(layers)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x

    def weights(self) -> list[Tensor]:
        """The cross matrices, for the L2 penalty."""
        return [cast(nn.Linear, layer).weight for layer in self.layers]


class CrossNetworkMix(nn.Module):
    """Cross layers as a softmax-gated mixture of low-rank experts with tanh in the low-rank space."""

    def __init__(self, dim: int, num_layers: int, num_experts: int, rank: int) -> None:
        super().__init__()

        def stack(rows: int, cols: int) -> nn.ParameterList:
            params = [nn.Parameter(torch.empty(num_experts, rows, cols)) for _ in range(num_layers)]
            for p in params:
                for expert in p.data:
                    nn.init.xavier_normal_(expert)
            return nn.ParameterList(params)

        self.u = stack(dim, rank)  # back from the low-rank space
        self.v = stack(dim, rank)  # into the low-rank space
        self.c = stack(rank, rank)  # mixing inside it
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(num_layers))
        self.gates = nn.ModuleList(nn.Linear(dim, num_experts) for _ in range(num_layers))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for u, v, c, bias, gate in zip(self.u, self.v, self.c, self.bias, self.gates, strict=True):
            low = torch.tanh(torch.einsum("bi,eir->ber", x, v))
            low = torch.tanh(torch.einsum("ber,ers->bes", low, c))
            experts = x0.unsqueeze(1) * (torch.einsum("bes,eis->bei", low, u) + bias)  # [B, E, dim]
            weights = torch.softmax(gate(x), dim=-1)  # [B, E]
            x = x + torch.einsum("be,bei->bi", weights, experts)
        return x

    def weights(self) -> list[Tensor]:
        """The low-rank factors, for the L2 penalty."""
        return [*self.u, *self.v, *self.c]


class DCNv2(RankingModel):
    """Cross network v2 (full-rank or low-rank mixture) with an MLP, parallel or stacked; one logit."""

    def __init__(self, config: DCNv2Config, *, embedding_factory: EmbeddingFactory | None = None) -> None:
        super().__init__()
        self.config = config
        self.features = FeatureLayer(
            config.sparse_fields,
            config.dense_fields,
            default_dim=config.embedding_size,
            embedding_factory=embedding_factory,
        )
        width = self.features.output_dim
        self.cross: CrossNetworkV2 | CrossNetworkMix = (
            CrossNetworkMix(width, config.cross_layer_num, config.expert_num, config.low_rank)
            if config.mixed
            else CrossNetworkV2(width, config.cross_layer_num)
        )
        self.mlp = MLP(width, config.mlp_hidden_size, dropout=config.dropout_prob, batch_norm=config.batch_norm)
        head_in = width + self.mlp.out_dim if config.structure == "parallel" else self.mlp.out_dim
        self.head = nn.Linear(head_in, 1)
        nn.init.xavier_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def signature(self) -> ModelSignature:
        """The declared fields plus the label; output: one logit per row."""
        return single_label_signature(self.features, self.config.label)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """``{label: logits [B]}``."""
        x0 = self.features(batch).flat()
        crossed = self.cross(x0)
        parallel = self.config.structure == "parallel"
        hidden = torch.cat([crossed, self.mlp(x0)], dim=1) if parallel else self.mlp(crossed)
        return {self.config.label: self.head(hidden).squeeze(1)}

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """BCE with logits against ``batch[label]``, plus ``reg_weight`` * squared L2 of the cross weights."""
        loss = weighted_bce(outputs, batch, (self.config.label,))
        if self.config.reg_weight > 0:
            loss = loss + self.config.reg_weight * sum(w.pow(2).sum() for w in self.cross.weights())
        return loss
