"""SASRec: next-item recommendation with causal self-attention over a user's interaction sequence.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018, laid out as RecBole's implementation
(post-LayerNorm blocks, learned absolute positions, GELU feed-forward, N(0, 0.02) init) so that numbers are
comparable with RecBole's SASRec.

Sequence layout (RecBole's): ``history`` ``[B, L]`` is **right-padded** — ``history[b, :history_len[b]]`` are
the user's items oldest → newest, positions ``>= history_len`` are ignored (any value). Item id 0 is reserved
for padding; real items are ``1 .. num_items - 1``. Keep the most recent ``max_seq_length`` items when a history
is longer. Because padding sits after the real items, the causal mask alone keeps real positions from ever
seeing padding, so attention runs on PyTorch's fused causal kernel.

Training targets, either:

* ``item_id`` ``[B]`` — the item that followed the history (RecBole's layout: one prefix per row), or
* ``target_seq`` ``[B, L]`` — ``target_seq[b, t]`` is the item that followed ``history[b, :t+1]`` (0 where
  none). Causality makes the hidden state at position t depend only on that prefix, so one row trains every
  prefix at once — the same examples as RecBole's prefix augmentation, about L times fewer forward passes.

Loss ``CE`` (RecBole's default): softmax cross-entropy over every item; ``BPR``: one sampled negative per
target (``neg_item_id`` ``[B]`` or ``neg_target_seq`` ``[B, L]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recplane.models.base import Batch, ModelSignature, RetrievalModel
from recplane.models.features import EmbeddingFactory, check_ids, lookup_all, require

__all__ = ["SASRec", "SASRecConfig"]


@dataclass(frozen=True, kw_only=True)
class SASRecConfig:
    """SASRec hyperparameters; names and defaults are RecBole 1.2's (``SASRec.yaml``, MAX_ITEM_LIST_LENGTH 50)."""

    num_items: int  # size of the item id space, padding id 0 included
    max_seq_length: int = 50
    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    hidden_dropout_prob: float = 0.5
    attn_dropout_prob: float = 0.5
    hidden_act: Literal["gelu", "relu"] = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    loss_type: Literal["CE", "BPR"] = "CE"

    def __post_init__(self) -> None:
        if self.num_items < 2:
            raise ValueError(f"num_items is {self.num_items}; SASRec needs padding id 0 plus at least one item.")
        if self.max_seq_length < 1 or self.n_layers < 1 or self.n_heads < 1 or self.inner_size < 1:
            raise ValueError("max_seq_length, n_layers, n_heads and inner_size must all be >= 1.")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}.")
        if self.hidden_act not in ("gelu", "relu"):
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of 'gelu', 'relu'.")
        if self.loss_type not in ("CE", "BPR"):
            raise ValueError(f"loss_type {self.loss_type!r} is not one of 'CE', 'BPR'.")


class _CausalBlock(nn.Module):
    """One post-LN transformer layer (attention, then feed-forward), as in RecBole's TransformerLayer."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.n_heads = config.n_heads
        self.attn_dropout = config.attn_dropout_prob
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.ff_in = nn.Linear(hidden, config.inner_size)
        self.ff_out = nn.Linear(config.inner_size, hidden)
        self.ff_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.act = nn.GELU() if config.hidden_act == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, hidden // self.n_heads).permute(2, 0, 3, 1, 4)
        dropout = self.attn_dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        attended = attended.transpose(1, 2).reshape(batch, length, hidden)
        x = self.attn_norm(x + self.dropout(self.attn_out(attended)))
        return self.ff_norm(x + self.dropout(self.ff_out(self.act(self.ff_in(x)))))


class SASRec(RetrievalModel):
    """Causal self-attention over the item sequence; the query is the hidden state at the last real item."""

    def __init__(self, config: SASRecConfig, *, embedding_factory: EmbeddingFactory | None = None) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.item_embedding = (
            embedding_factory(config.num_items, hidden)
            if embedding_factory
            else nn.Embedding(config.num_items, hidden, padding_idx=0)
        )
        self.position_embedding = nn.Embedding(config.max_seq_length, hidden)
        self.input_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.input_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.blocks = nn.ModuleList(_CausalBlock(config) for _ in range(config.n_layers))
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # RecBole's SASRec init: N(0, initializer_range) for linear and embedding weights, zero biases.
        if isinstance(module, nn.Linear | nn.Embedding):
            module.weight.data.normal_(0.0, self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()

    def signature(self) -> ModelSignature:
        """Inputs: the right-padded history and its length, plus training targets; outputs: query vectors."""
        return ModelSignature(
            inputs={
                "history": "int64[B, L] right-padded item ids (0 = padding), L <= max_seq_length",
                "history_len": "int64[B]",
                "item_id": "int64[B] next item (training, CE/BPR; scored when present)",
                "neg_item_id": "int64[B] sampled negative (BPR)",
                "target_seq": "int64[B, L] next item after each prefix, 0 = none (training, every position)",
                "neg_target_seq": "int64[B, L] sampled negative per position (BPR with target_seq)",
            },
            outputs={
                "hidden": "float32[B, L, D] hidden state after each prefix",
                "user": "float32[B, D] hidden state at the last real item (the query vector)",
                "score": "float32[B] query · item_id (when item_id is given)",
                "neg_score": "float32[B] query · neg_item_id (when neg_item_id is given)",
            },
            tasks=(),
        )

    def encode(self, history: Tensor, history_len: Tensor) -> Tensor:
        """``[B, L, D]``: the hidden state after each prefix of the (right-padded) histories."""
        if history.dim() != 2:
            raise ValueError(f"history must be [B, L], got shape {tuple(history.shape)}.")
        length = history.shape[1]
        if length > self.config.max_seq_length:
            raise ValueError(
                f"history has length {length} > max_seq_length {self.config.max_seq_length}; keep the most "
                "recent items only."
            )
        positions = torch.arange(length, device=history.device)
        # Padding may hold any value: it is replaced by the padding id so that lookups stay in range.
        history = history.masked_fill(positions >= history_len.unsqueeze(1), 0)
        self._check_items("history", history)
        x = self.item_embedding(history) + self.position_embedding(positions)
        x = self.input_dropout(self.input_norm(x))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Hidden states, the query vector, and scores of ``item_id`` / ``neg_item_id`` when present."""
        history = require(batch, "history", "right-padded item ids")
        history_len = require(batch, "history_len", "history lengths")
        hidden = self.encode(history, history_len)
        # An empty history reads position 0 (the padding item plus position 0): a learned "no history" query.
        last = (history_len.clamp(1, history.shape[1]) - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        user = hidden.gather(1, last).squeeze(1)
        outputs = {"hidden": hidden, "user": user}
        for key, name in (("item_id", "score"), ("neg_item_id", "neg_score")):
            if key in batch:
                self._check_items(key, batch[key])
                outputs[name] = (user * self.item_embedding(batch[key])).sum(-1)
        return outputs

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """CE over all items (or BPR) at the last position, or at every position when ``target_seq`` is given."""
        if "target_seq" in batch:
            targets = batch["target_seq"]
            valid = targets > 0
            queries, positives = outputs["hidden"][valid], targets[valid]
            negatives_key, negatives = "neg_target_seq", batch.get("neg_target_seq")
            if negatives is not None:
                negatives = negatives[valid]
        elif "item_id" in batch:
            queries, positives = outputs["user"], batch["item_id"]
            negatives_key, negatives = "neg_item_id", batch.get("neg_item_id")
        else:
            raise ValueError(f"SASRec.loss needs 'item_id' or 'target_seq' in the batch; it holds {sorted(batch)}.")
        self._check_items("training targets", positives)
        if positives.numel() and int(positives.min()) < 1:
            raise ValueError("SASRec training targets hold the padding id 0; targets must be real items >= 1.")
        if self.config.loss_type == "CE":
            # Padding (column 0) is never a target, so it is left out of the softmax.
            logits = queries @ self._all_items()[1:].T
            return F.cross_entropy(logits, positives - 1)
        if negatives is None:
            raise ValueError(f"loss_type 'BPR' needs {negatives_key!r} in the batch.")
        self._check_items(negatives_key, negatives)
        pos = (queries * self.item_embedding(positives)).sum(-1)
        neg = (queries * self.item_embedding(negatives)).sum(-1)
        return -F.logsigmoid(pos - neg).mean()

    def user_representation(self, batch: Batch) -> Tensor:
        """``[B, D]``: the hidden state at each history's last real item."""
        # Only the sequence goes in: scoring targets that happen to be in the batch are not needed here.
        query = {key: require(batch, key, "the user's sequence") for key in ("history", "history_len")}
        return self.forward(query)["user"]

    def item_representation(self, item_ids: Tensor | None = None) -> Tensor:
        """Item embeddings (the output layer is tied to the input table); row 0 is the padding id."""
        if item_ids is None:
            return self._all_items()
        return self.item_embedding(item_ids)

    def score_all(self, batch: Batch) -> Tensor:
        """``[B, num_items]`` scores; column 0 (padding) is ``-inf`` so it is never recommended."""
        scores = super().score_all(batch)
        scores[:, 0] = float("-inf")
        return scores

    def _all_items(self) -> Tensor:
        return lookup_all(self.item_embedding, self.config.num_items)

    def _check_items(self, what: str, ids: Tensor) -> None:
        if isinstance(self.item_embedding, nn.Embedding):
            check_ids(f"SASRec {what}", ids, self.config.num_items)
