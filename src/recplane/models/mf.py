"""Matrix factorisation with the BPR loss (Rendle et al. 2009): the baseline every retrieval model must beat.

Users and items get one vector each; the score of a (user, item) pair is their dot product. Training pushes
each observed item above sampled negatives (``neg_item_id``) with the pairwise BPR loss plus L2 on the
vectors used in the batch (RecBole's convention: squared norms summed, divided by the batch size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recplane.models.base import Batch, ModelSignature, RetrievalModel
from recplane.models.embeddings import EmbeddingTable, FixedEmbedding

__all__ = ["MF", "bpr_loss", "l2_penalty", "mask_padding_item"]


def pairwise_signature() -> ModelSignature:
    """The signature of pairwise (BPR-trained) retrieval models: a user, an item, optional negatives."""
    return ModelSignature(
        inputs={
            "user_id": "int64[B]",
            "item_id": "int64[B]",
            "neg_item_id": "int64[B] or int64[B,K] (training only)",
        },
        outputs={"score": "float32[B]", "neg_score": "float32[B,K] (when neg_item_id is given)"},
    )


def bpr_loss(pos_score: Tensor, neg_score: Tensor) -> Tensor:
    """Mean of ``-log sigmoid(pos - neg)`` over a ``[B]`` positive score and ``[B, K]`` negative scores."""
    return -F.logsigmoid(pos_score.unsqueeze(-1) - neg_score).mean()


def l2_penalty(*vectors: Tensor, batch_size: int) -> Tensor:
    """Sum of squared entries of the given embedding tensors, divided by the batch size."""
    return sum((v.pow(2).sum() for v in vectors), torch.zeros(())) / batch_size


def mask_padding_item(scores: Tensor) -> Tensor:
    """``[B, num_items]`` scores with column 0 (the padding item) set to ``-inf`` so it is never recommended."""
    scores[:, 0] = float("-inf")
    return scores


def negatives_2d(batch: Batch) -> Tensor:
    """``neg_item_id`` as ``[B, K]`` (a ``[B]`` tensor means one negative per row)."""
    if "neg_item_id" not in batch:
        raise ValueError("This loss needs sampled negatives: add 'neg_item_id' ([B] or [B, K] int64) to the batch.")
    negatives = batch["neg_item_id"]
    return negatives.unsqueeze(-1) if negatives.dim() == 1 else negatives


class MF(RetrievalModel):
    """Matrix factorisation with BPR. Ids are ``1..num-1`` (0 = padding); tables can be swapped for hashed or
    dynamic ones via ``user_table`` / ``item_table``."""

    def __init__(
        self,
        num_users: int,
        num_items: int,
        dim: int = 64,
        *,
        l2: float = 1e-5,
        sparse: bool = False,
        init_std: float = 0.1,
        user_table: EmbeddingTable | None = None,
        item_table: EmbeddingTable | None = None,
    ) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items
        self.l2 = l2
        self.user_table = user_table or FixedEmbedding(num_users, dim, sparse=sparse, init_std=init_std)
        self.item_table = item_table or FixedEmbedding(num_items, dim, sparse=sparse, init_std=init_std)
        if self.user_table.dim != self.item_table.dim:
            raise ValueError(f"User and item tables differ in dim: {self.user_table.dim} vs {self.item_table.dim}.")

    def signature(self) -> ModelSignature:
        return pairwise_signature()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        user_vec = self.user_table(batch["user_id"])
        if "neg_item_id" not in batch:
            item_vec = self.item_table(batch["item_id"])
            return {"score": (user_vec * item_vec).sum(-1), "user_vec": user_vec, "item_vec": item_vec}
        # One lookup for positives and negatives: cheaper, and a dynamic table must be read once per step.
        items = torch.cat([batch["item_id"].unsqueeze(-1), negatives_2d(batch)], dim=1)
        item_vecs = self.item_table(items)
        scores = torch.einsum("bd,bkd->bk", user_vec, item_vecs)
        return {
            "score": scores[:, 0],
            "neg_score": scores[:, 1:],
            "user_vec": user_vec,
            "item_vec": item_vecs,
        }

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        if "neg_score" not in outputs:
            raise ValueError("MF.loss needs negatives: the batch given to forward lacked 'neg_item_id'.")
        loss = bpr_loss(outputs["score"], outputs["neg_score"])
        if self.l2 > 0:
            batch_size = outputs["score"].shape[0]
            loss = loss + self.l2 * l2_penalty(outputs["user_vec"], outputs["item_vec"], batch_size=batch_size)
        return loss

    def score_all(self, batch: Batch) -> Tensor:
        """``[B, num_items]`` scores of every item; column 0 (padding) is ``-inf``."""
        return mask_padding_item(super().score_all(batch))

    def user_representation(self, batch: Batch) -> Tensor:
        return self.user_table(batch["user_id"])

    def item_representation(self, item_ids: Tensor | None = None) -> Tensor:
        if item_ids is None:
            item_ids = torch.arange(self.num_items, device=_device_of(self.item_table))
        return self.item_table(item_ids)


def _device_of(module: torch.nn.Module) -> torch.device:
    """Device of a module's first parameter (CPU for a parameterless module)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))
