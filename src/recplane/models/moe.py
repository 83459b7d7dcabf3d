"""Sparse mixture-of-experts ranker: noisy top-k gating over E experts, task heads on the mixture.

Shazeer et al., "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer", ICLR 2017.
A gate scores the E experts for each example; during training Gaussian noise with a learned, input-dependent
scale is added (``noisy_gating``) so that routing explores. Only the top-k experts of each example run: rows
are sorted by expert and each expert sees one contiguous slice (dispatch by index), so the cost is ≈ k/E of
running every expert. Their outputs are combined with the softmax of the k chosen logits, and one tower per
task turns the mixture into that task's logit (e.g. ``click`` and ``rating_ge_4``).

A load-balancing loss keeps experts in use:

* ``"cv2"`` (Shazeer): ``CV²(importance) + CV²(load)`` — importance is the per-expert sum of gate weights,
  load the expected number of examples per expert under the noise (a smooth estimator, differentiable);
* ``"switch"`` (Fedus et al., Switch Transformers 2021): ``E · Σ_i f_i · P_i`` — f the fraction of routed
  slots per expert, P the mean router probability; equals 1 when perfectly balanced.

``forward`` returns the task logits plus ``balance_loss`` (scalar) and ``expert_load`` ``[E]`` (fraction of
routed slots per expert, summing to 1) for monitoring; ``loss`` adds ``balance_weight * balance_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recplane.models.base import Batch, ModelSignature, RankingModel
from recplane.models.features import DenseField, EmbeddingFactory, FeatureLayer, SparseField, weighted_bce
from recplane.models.mmoe import check_tasks, task_tower

__all__ = [
    "MoEOutput",
    "Routing",
    "SparseMoE",
    "SparseMoEConfig",
    "SparseMoERanker",
    "cv_squared",
    "importance_load_loss",
    "switch_balance_loss",
]

BalanceLoss = Literal["cv2", "switch"]
_NOISE_EPSILON = 1e-2  # floor on the noise scale, as in Shazeer et al.'s reference code


def cv_squared(values: Tensor) -> Tensor:
    """Squared coefficient of variation ``var / mean²`` (0 for a single value): small when values are even."""
    values = values.float()
    if values.numel() <= 1:
        return values.new_zeros(())
    return values.var() / (values.mean().pow(2) + 1e-10)


def importance_load_loss(gates: Tensor, load: Tensor) -> Tensor:
    """Shazeer's balance loss ``CV²(Σ_b gates[b]) + CV²(load)`` from dense gates ``[B, E]`` and load ``[E]``."""
    return cv_squared(gates.sum(dim=0)) + cv_squared(load)


def switch_balance_loss(router_probs: Tensor, expert_index: Tensor) -> Tensor:
    """Switch Transformer balance loss ``E · Σ_i f_i · P_i`` from router probs ``[B, E]`` and choices ``[B, k]``."""
    num_experts = router_probs.shape[1]
    counts = torch.bincount(expert_index.reshape(-1), minlength=num_experts).to(router_probs.dtype)
    # Clamped denominators keep an empty batch at zero loss instead of NaN.
    fraction = counts / max(expert_index.numel(), 1)
    mean_probs = router_probs.sum(dim=0) / max(router_probs.shape[0], 1)
    return num_experts * (fraction * mean_probs).sum()


@dataclass(frozen=True)
class Routing:
    """Where each example goes: its k experts and their weights, plus what the balance losses need."""

    expert_index: Tensor  # [B, k] chosen experts, best first
    expert_gate: Tensor  # [B, k] their weights (softmax over the chosen logits)
    router_probs: Tensor  # [B, E] softmax over all (noisy) logits
    load: Tensor  # [E] expected examples per expert (differentiable under noise), else counts

    def dense_gates(self, num_experts: int) -> Tensor:
        """``[B, E]`` gate weights with zeros for the experts not chosen."""
        gates = self.expert_gate.new_zeros(self.expert_gate.shape[0], num_experts)
        return gates.scatter(1, self.expert_index, self.expert_gate)


@dataclass(frozen=True)
class MoEOutput:
    """The mixture for a batch and its routing statistics."""

    output: Tensor  # [B, output_size]
    routing: Routing
    expert_load: Tensor  # [E] fraction of routed slots per expert (sums to 1)
    balance_loss: Tensor  # scalar
    rows_evaluated: int  # expert input rows actually computed: B * k with sparse dispatch


class SparseMoE(nn.Module):
    """A noisy top-k gated layer of E one-hidden-layer MLP experts, evaluated only where routed."""

    def __init__(
        self,
        in_dim: int,
        *,
        num_experts: int,
        top_k: int,
        hidden_size: int,
        output_size: int,
        noisy_gating: bool = True,
        balance_loss: BalanceLoss = "cv2",
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k {top_k} must be in [1, num_experts={num_experts}].")
        if balance_loss not in ("cv2", "switch"):
            raise ValueError(f"balance_loss {balance_loss!r} is not one of 'cv2', 'switch'.")
        self.num_experts, self.top_k, self.balance_kind = num_experts, top_k, balance_loss
        # Expert weights are stacked so that one expert is a slice, and a dense reference run is one einsum.
        self.w1 = nn.Parameter(_uniform(num_experts, in_dim, hidden_size, fan_in=in_dim))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden_size))
        self.w2 = nn.Parameter(_uniform(num_experts, hidden_size, output_size, fan_in=hidden_size))
        self.b2 = nn.Parameter(torch.zeros(num_experts, output_size))
        self.gate = nn.Linear(in_dim, num_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=0.01)
        self.noise = nn.Linear(in_dim, num_experts, bias=False) if noisy_gating else None
        if self.noise is not None:
            nn.init.zeros_(self.noise.weight)  # starts at noise scale softplus(0) ≈ 0.69, learned from there

    def route(self, x: Tensor) -> Routing:
        """Pick each row's top-k experts (with noise while training) and their softmax weights."""
        clean = self.gate(x)
        logits, scale = clean, None
        if self.noise is not None and self.training:
            scale = F.softplus(self.noise(x)) + _NOISE_EPSILON
            logits = clean + torch.randn_like(clean) * scale
        top_logits, top_index = logits.topk(min(self.top_k + 1, self.num_experts), dim=1)
        index = top_index[:, : self.top_k]
        if scale is not None and self.top_k < self.num_experts:
            load = _prob_in_top_k(clean, logits, scale, top_logits, self.top_k).sum(dim=0)
        else:
            load = torch.bincount(index.reshape(-1), minlength=self.num_experts).to(clean.dtype)
        return Routing(
            expert_index=index,
            expert_gate=torch.softmax(top_logits[:, : self.top_k], dim=1),
            router_probs=torch.softmax(logits, dim=1),
            load=load,
        )

    def forward(self, x: Tensor) -> MoEOutput:
        """Route ``x`` ``[B, in]``, run each expert on its rows only, and combine."""
        routing = self.route(x)
        output, rows = self._dispatch(x, routing)
        counts = torch.bincount(routing.expert_index.reshape(-1), minlength=self.num_experts)
        return MoEOutput(
            output=output,
            routing=routing,
            expert_load=counts.float() / max(routing.expert_index.numel(), 1),
            balance_loss=self._balance_loss(routing),
            rows_evaluated=rows,
        )

    def forward_dense(self, x: Tensor, routing: Routing) -> Tensor:
        """The same mixture computed by running every expert on every row: a reference for tests and timing."""
        experts, in_dim, hidden_size = self.w1.shape
        # The fastest dense form measured here: one wide matmul, then one batched matmul over experts.
        first = x @ self.w1.transpose(0, 1).reshape(in_dim, experts * hidden_size)
        hidden = torch.relu(first.view(-1, experts, hidden_size) + self.b1)
        every = (torch.bmm(hidden.transpose(0, 1), self.w2) + self.b2.unsqueeze(1)).transpose(0, 1)  # [B, E, out]
        chosen = every.gather(1, routing.expert_index.unsqueeze(-1).expand(-1, -1, every.shape[-1]))
        return (chosen * routing.expert_gate.unsqueeze(-1)).sum(dim=1)

    def _dispatch(self, x: Tensor, routing: Routing) -> tuple[Tensor, int]:
        output = x.new_zeros(x.shape[0], self.w2.shape[-1])
        if x.shape[0] == 0:
            return output, 0
        slots = routing.expert_index.reshape(-1)  # [B * k], row-major: slot s belongs to row s // k
        order = torch.argsort(slots, stable=True)
        rows = order // self.top_k
        # Chunk sizes must be Python ints: one host sync per batch, the price of variable-size slices.
        counts = torch.bincount(slots, minlength=self.num_experts).tolist()
        pieces = [self._expert(e, chunk) for e, chunk in enumerate(x.index_select(0, rows).split(counts)) if counts[e]]
        weighted = torch.cat(pieces) * routing.expert_gate.reshape(-1)[order].unsqueeze(1)
        return output.index_add(0, rows, weighted), sum(counts)

    def _expert(self, e: int, rows: Tensor) -> Tensor:
        hidden = torch.relu(torch.addmm(self.b1[e], rows, self.w1[e]))
        return torch.addmm(self.b2[e], hidden, self.w2[e])

    def _balance_loss(self, routing: Routing) -> Tensor:
        if self.balance_kind == "switch":
            return switch_balance_loss(routing.router_probs, routing.expert_index)
        return importance_load_loss(routing.dense_gates(self.num_experts), routing.load)


def _uniform(experts: int, rows: int, cols: int, *, fan_in: int) -> Tensor:
    # nn.Linear's default range, per expert.
    bound = fan_in**-0.5
    return torch.empty(experts, rows, cols).uniform_(-bound, bound)


def _prob_in_top_k(clean: Tensor, noisy: Tensor, scale: Tensor, top_noisy: Tensor, k: int) -> Tensor:
    """``[B, E]`` probability that each expert lands in the top k under fresh noise (Shazeer's estimator)."""
    # An expert now in the top k stays in if it beats the (k+1)-th value; one outside must beat the k-th.
    threshold_if_in = top_noisy[:, k : k + 1]
    threshold_if_out = top_noisy[:, k - 1 : k]
    is_in = noisy > threshold_if_in
    prob_if_in = torch.special.ndtr((clean - threshold_if_in) / scale)
    prob_if_out = torch.special.ndtr((clean - threshold_if_out) / scale)
    return torch.where(is_in, prob_if_in, prob_if_out)


@dataclass(frozen=True, kw_only=True)
class SparseMoEConfig:
    """Sparse MoE ranker fields, tasks and hyperparameters."""

    sparse_fields: tuple[SparseField, ...]
    dense_fields: tuple[DenseField, ...] = ()
    tasks: tuple[str, ...] = ("click", "rating_ge_4")
    task_weights: tuple[float, ...] | None = None  # None: 1.0 each
    embedding_size: int = 16
    num_experts: int = 8
    top_k: int = 2
    expert_hidden_size: int = 128
    expert_output_size: int = 64
    noisy_gating: bool = True
    balance_loss: BalanceLoss = "cv2"
    balance_weight: float = 0.01
    tower_hidden_size: tuple[int, ...] = (64,)
    dropout_prob: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparse_fields", tuple(self.sparse_fields))
        object.__setattr__(self, "dense_fields", tuple(self.dense_fields))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.task_weights is not None:
            object.__setattr__(self, "task_weights", tuple(self.task_weights))
        object.__setattr__(self, "tower_hidden_size", tuple(self.tower_hidden_size))
        check_tasks(self.tasks, self.task_weights)
        sizes = (self.embedding_size, self.num_experts, self.expert_hidden_size, self.expert_output_size)
        if min((*sizes, *self.tower_hidden_size)) < 1:
            raise ValueError("embedding_size, num_experts, expert sizes and tower sizes must be >= 1.")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k {self.top_k} must be in [1, num_experts={self.num_experts}].")
        if self.balance_loss not in ("cv2", "switch"):
            raise ValueError(f"balance_loss {self.balance_loss!r} is not one of 'cv2', 'switch'.")
        if self.balance_weight < 0:
            raise ValueError(f"balance_weight {self.balance_weight} must be >= 0.")
        if not 0.0 <= self.dropout_prob < 1.0:
            raise ValueError(f"dropout_prob {self.dropout_prob} is not in [0, 1).")
        reserved = {"balance_loss", "expert_load"} & set(self.tasks)
        if reserved:
            raise ValueError(f"Task names {sorted(reserved)} are reserved for the ranker's routing outputs.")


class SparseMoERanker(RankingModel):
    """Features → sparse MoE layer → one tower per task; ``{task: logits, balance_loss, expert_load}``."""

    def __init__(self, config: SparseMoEConfig, *, embedding_factory: EmbeddingFactory | None = None) -> None:
        super().__init__()
        self.config = config
        self.features = FeatureLayer(
            config.sparse_fields,
            config.dense_fields,
            default_dim=config.embedding_size,
            embedding_factory=embedding_factory,
        )
        self.moe = SparseMoE(
            self.features.output_dim,
            num_experts=config.num_experts,
            top_k=config.top_k,
            hidden_size=config.expert_hidden_size,
            output_size=config.expert_output_size,
            noisy_gating=config.noisy_gating,
            balance_loss=config.balance_loss,
        )
        self.towers = nn.ModuleList(
            task_tower(config.expert_output_size, config.tower_hidden_size, config.dropout_prob) for _ in config.tasks
        )

    def signature(self) -> ModelSignature:
        """The declared fields plus one label per task; outputs: task logits and routing statistics."""
        labels = {task: "float32[B] 0/1, NaN = unlabelled (training)" for task in self.config.tasks}
        return ModelSignature(
            inputs={**self.features.input_spec(), **labels},
            outputs={
                **{task: "float32[B] logit" for task in self.config.tasks},
                "balance_loss": "float32[] load-balancing loss of this batch",
                "expert_load": f"float32[{self.config.num_experts}] fraction of routed slots per expert",
            },
            tasks=self.config.tasks,
            feature_names=self.features.feature_names,
        )

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Task logits ``[B]`` plus ``balance_loss`` and ``expert_load``."""
        mixed = self.moe(self.features(batch).flat())
        outputs = {
            task: tower(mixed.output).squeeze(1) for task, tower in zip(self.config.tasks, self.towers, strict=True)
        }
        outputs["balance_loss"] = mixed.balance_loss
        outputs["expert_load"] = mixed.expert_load
        return outputs

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """``Σ weight_t · BCE_t`` (NaN labels left out) ``+ balance_weight · balance_loss``."""
        task_loss = weighted_bce(outputs, batch, self.config.tasks, self.config.task_weights)
        return task_loss + self.config.balance_weight * outputs["balance_loss"]
