"""The one interface every recplane model implements: batches of tensors in, scores and a loss out.

Models are pure PyTorch (no catalog, files or HTTP): the training engine feeds them dict batches of
tensors built once from Arrow, and serving calls the same methods. Two families share it:

* retrieval models (MF-BPR, two-tower, LightGCN, SASRec) also expose ``user_representation`` and
  ``item_representation`` so evaluation can score every item at once (full-sort) and serving can build an
  ANN index over item vectors;
* ranking / CTR and multi-task models (DeepFM, DCN-v2, DIN, MMoE, sparse MoE) score given (user, item,
  context) rows and return one logit per task.

Batch keys are plain strings documented by each model's ``inputs`` (e.g. ``user_id``, ``item_id``,
``neg_item_id``, ``history``, ``history_len``, ``label``, feature names).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["Batch", "ModelSignature", "RankingModel", "RecModel", "RetrievalModel"]

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class ModelSignature:
    """What a model reads and writes: batch keys with dtypes and shapes (``B`` = batch, ``L`` = length)."""

    inputs: dict[str, str]
    outputs: dict[str, str]
    tasks: tuple[str, ...] = ("label",)
    feature_names: tuple[str, ...] = field(default_factory=tuple)


class RecModel(nn.Module, abc.ABC):
    """Base of every model in the zoo."""

    @abc.abstractmethod
    def signature(self) -> ModelSignature:
        """The inputs and outputs of this model, for training loaders, export and serving."""

    @abc.abstractmethod
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Scores for a batch (keys per the signature's outputs)."""

    @abc.abstractmethod
    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        """The scalar training loss of a batch, given ``forward``'s outputs (regularisers included)."""


class RetrievalModel(RecModel):
    """A model that embeds users (or sessions) and items into one space; score = dot product."""

    @abc.abstractmethod
    def user_representation(self, batch: Batch) -> Tensor:
        """``[B, D]`` query vectors for the users (or sequences) in the batch."""

    @abc.abstractmethod
    def item_representation(self, item_ids: Tensor | None = None) -> Tensor:
        """``[N, D]`` vectors for the given items, or for every item (index = item id) when None."""

    def score_all(self, batch: Batch) -> Tensor:
        """``[B, num_items]`` scores of every item for each query (full-sort evaluation)."""
        return self.user_representation(batch) @ self.item_representation().T


class RankingModel(RecModel):
    """A model that scores (user, item, context) rows: one logit per task."""

    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """Probabilities per task (sigmoid of the logits), for evaluation and serving.

        Only the signature's tasks are converted: ``forward`` may also return auxiliary outputs (the sparse
        MoE ranker's balance loss and expert load).
        """
        with torch.no_grad():
            outputs = self.forward(batch)
            return {task: torch.sigmoid(outputs[task]) for task in self.signature().tasks}
