"""MMoE: multi-task ranking with shared experts and one softmax gate per task.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018.
Every expert (an MLP) reads all features; each task mixes the expert outputs with its own gate (a linear
layer + softmax over experts), then its own tower MLP produces that task's logit. Tasks are named by their
label columns, e.g. ``("click", "rating_ge_4")``; the loss is ``Σ weight_t · BCE_t`` where a NaN label means
"not labelled for this task" and is left out (e.g. rating for rows never clicked).

RecBole has no MMoE; defaults follow DeepCTR's (4 experts of 256-128, towers of 64) with RecBole-style
embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recplane.models.base import Batch, ModelSignature, RankingModel
from recplane.models.features import (
    MLP,
    DenseField,
    EmbeddingFactory,
    FeatureLayer,
    SparseField,
    weighted_bce,
)

__all__ = ["MMoE", "MMoEConfig", "check_tasks", "task_tower"]


def check_tasks(tasks: tuple[str, ...], task_weights: tuple[float, ...] | None) -> None:
    """Raise a ValueError unless tasks are distinct, non-empty names with one non-negative weight each."""
    if not tasks or len(set(tasks)) != len(tasks) or not all(tasks):
        raise ValueError(f"tasks {tasks!r} must be distinct, non-empty label names.")
    if task_weights is not None and (len(task_weights) != len(tasks) or min(task_weights) < 0):
        raise ValueError(f"task_weights {task_weights!r} must give one weight >= 0 per task {tasks!r}.")


def task_tower(in_dim: int, hidden_sizes: tuple[int, ...], dropout: float) -> nn.Sequential:
    """A task's tower: an MLP and a linear layer down to one logit."""
    mlp = MLP(in_dim, hidden_sizes, dropout=dropout)
    return nn.Sequential(mlp, nn.Linear(mlp.out_dim, 1))


@dataclass(frozen=True, kw_only=True)
class MMoEConfig:
    """MMoE fields, tasks and hyperparameters."""

    sparse_fields: tuple[SparseField, ...]
    dense_fields: tuple[DenseField, ...] = ()
    tasks: tuple[str, ...] = ("click", "rating_ge_4")
    task_weights: tuple[float, ...] | None = None  # None: 1.0 each
    embedding_size: int = 16
    num_experts: int = 4
    expert_hidden_size: tuple[int, ...] = (256, 128)
    tower_hidden_size: tuple[int, ...] = (64,)
    dropout_prob: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparse_fields", tuple(self.sparse_fields))
        object.__setattr__(self, "dense_fields", tuple(self.dense_fields))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.task_weights is not None:
            object.__setattr__(self, "task_weights", tuple(self.task_weights))
        object.__setattr__(self, "expert_hidden_size", tuple(self.expert_hidden_size))
        object.__setattr__(self, "tower_hidden_size", tuple(self.tower_hidden_size))
        check_tasks(self.tasks, self.task_weights)
        if not self.expert_hidden_size:
            raise ValueError("expert_hidden_size needs at least one entry (the expert output size).")
        if min((self.embedding_size, self.num_experts, *self.expert_hidden_size, *self.tower_hidden_size)) < 1:
            raise ValueError("embedding_size, num_experts and every hidden size must be >= 1.")
        if not 0.0 <= self.dropout_prob < 1.0:
            raise ValueError(f"dropout_prob {self.dropout_prob} is not in [0, 1).")


class MMoE(RankingModel):
    """Shared experts, a softmax gate and a tower per task; ``{task: logits}``."""

    def __init__(self, config: MMoEConfig, *, embedding_factory: EmbeddingFactory | None = None) -> None:
        super().__init__()
        self.config = config
        self.features = FeatureLayer(
            config.sparse_fields,
            config.dense_fields,
            default_dim=config.embedding_size,
            embedding_factory=embedding_factory,
        )
        width = self.features.output_dim
        self.experts = nn.ModuleList(
            MLP(width, config.expert_hidden_size, dropout=config.dropout_prob) for _ in range(config.num_experts)
        )
        expert_out = config.expert_hidden_size[-1]
        self.gates = nn.ModuleList(nn.Linear(width, config.num_experts) for _ in config.tasks)
        self.towers = nn.ModuleList(
            task_tower(expert_out, config.tower_hidden_size, config.dropout_prob) for _ in config.tasks
        )

    def signature(self) -> ModelSignature:
        """The declared fields plus one label per task; outputs: one logit per task."""
        labels = {task: "float32[B] 0/1, NaN = unlabelled (training)" for task in self.config.tasks}
        return ModelSignature(
            inputs={**self.features.input_spec(), **labels},
            outputs={task: "float32[B] logit" for task in self.config.tasks},
            tasks=self.config.tasks,
            feature_names=self.features.feature_names,
        )

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """``{task: logits [B]}``."""
        x = self.features(batch).flat()
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, E, H]
        logits = {}
        for task, gate, tower in zip(self.config.tasks, self.gates, self.towers, strict=True):
            mixed = torch.einsum("be,beh->bh", torch.softmax(gate(x), dim=-1), experts)
            logits[task] = tower(mixed).squeeze(1)
        return logits

    def gate_weights(self, batch: Batch) -> dict[str, Tensor]:
        """``{task: [B, E]}`` softmax weights each task's gate gives the experts, for monitoring."""
        x = self.features(batch).flat()
        return {task: torch.softmax(gate(x), dim=-1) for task, gate in zip(self.config.tasks, self.gates, strict=True)}

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """``Σ weight_t · BCE_t`` over the tasks; NaN labels are left out of their task's mean."""
        return weighted_bce(outputs, batch, self.config.tasks, self.config.task_weights)
