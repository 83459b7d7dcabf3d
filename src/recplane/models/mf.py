"""Matrix factorisation with the BPR loss (Rendle et al. 2009): the baseline every retrieval model must beat.

Users and items get one vector each; the score of a (user, item) pair is their dot product. Training pushes
each observed item above sampled negatives (``neg_item_id``) with the pairwise BPR loss plus L2 on the
vectors used in the batch (RecBole's convention: squared norms summed, divided by the batch size).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from recplane.models.base import Batch, ModelSignature, RetrievalModel
from recplane.models.embeddings import EmbeddingTable, FixedEmbedding

__all__ = ["MF", "bpr_loss", "gather_pair_scores", "l2_penalty", "mask_padding_item", "pair_scores"]


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


def pair_scores(user_vec: Tensor, item_vecs: Tensor) -> Tensor:
    """``[B, K]`` dot products of ``user_vec [B, D]`` with each of ``item_vecs [B, K, D]``.

    A broadcast multiply and sum, not ``einsum``: on CPU einsum lowers this to ``bmm`` over B tiny matrices,
    which was ~15x slower forward and backward at B=2048, K=2, D=64.
    """
    return (user_vec.unsqueeze(1) * item_vecs).sum(-1)


class _GatherScores(torch.autograd.Function):
    """``(scores [B, J], squared norms, BPR loss)`` of user rows against ``J`` item rows each (column 0 the
    positive), straight from the tables.

    The pairwise training step of MF in one autograd node with a hand-written backward: gathers, dot products,
    the squared-norm sum the L2 term needs, the BPR loss, and in backward the row gradients added into dense table
    gradients (padding rows get none, like ``nn.Embedding(padding_idx=...)``). Autograd's own graph for the same
    maths (two embeddings, a broadcast product, two pow-sums, the loss's seven nodes, their backward) cost ~2x as
    much per step at ml-100k size. Any output may feed the loss: backward adds the gradients of those that do.

    Item rows are gathered column-major (``[J, B, D]``: all positives, then each negative column) so that every
    product pairs two contiguous ``[B, D]`` blocks: at B=2048, J=2, D=64 the scores took 63 us this way against
    99 us for a broadcast over ``[B, J, D]`` and 149 us for ``bmm``, and the item gradient 28 us against 67 us.
    """

    @staticmethod
    def forward(
        ctx: Any, user_weight: Tensor, item_weight: Tensor, users: Tensor, items: Tensor, padding: int, norms: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        columns = items.shape[1]
        item_ids = items.t().reshape(-1)
        user_vec = user_weight.index_select(0, users)
        item_vecs = item_weight.index_select(0, item_ids).view(columns, *user_vec.shape)
        by_column = (item_vecs * user_vec).sum(-1)  # [J, B]
        margins = by_column[:1] - by_column[1:]
        loss = -F.logsigmoid(margins).mean()
        squares = by_column.new_zeros(())
        if norms:
            flat_users, flat_items = user_vec.reshape(-1), item_vecs.reshape(-1)
            squares = torch.dot(flat_users, flat_users) + torch.dot(flat_items, flat_items)
        ctx.save_for_backward(user_vec, item_vecs, users, item_ids, margins)
        ctx.sizes, ctx.padding, ctx.norms = (user_weight.shape[0], item_weight.shape[0]), padding, norms
        ctx.set_materialize_grads(False)
        return by_column.t(), squares, loss

    @staticmethod
    def backward(
        ctx: Any, grad_scores: Tensor | None, grad_squares: Tensor | None, grad_loss: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        user_vec, item_vecs, users, item_ids, margins = ctx.saved_tensors
        by_column = _score_gradient(grad_scores, grad_loss, margins).unsqueeze(2)  # [J, B, 1]
        # One multiply-add per column (J is 1 + negatives, small): bmm of [B,1,J] x [B,J,D] was 7x slower.
        grad_user = item_vecs[0] * by_column[0]
        for column in range(1, item_vecs.shape[0]):
            grad_user.addcmul_(item_vecs[column], by_column[column])
        grad_items = by_column * user_vec
        if ctx.norms and grad_squares is not None:
            twice = 2 * grad_squares
            grad_user.addcmul_(user_vec, twice)
            grad_items.addcmul_(item_vecs, twice)
        return (
            _rows_to_table(grad_user, users, ctx.sizes[0], ctx.padding),
            _rows_to_table(grad_items.view(-1, user_vec.shape[-1]), item_ids, ctx.sizes[1], ctx.padding),
            None,
            None,
            None,
            None,
        )


def _score_gradient(grad_scores: Tensor | None, grad_loss: Tensor | None, margins: Tensor) -> Tensor:
    """``[J, B]`` gradient of the scores: what came for them directly plus what the BPR loss passes down."""
    columns = margins.new_zeros(margins.shape[0] + 1, margins.shape[1])
    if grad_loss is not None:
        # d/dm of -log sigmoid(m) is -sigmoid(-m); the mean divides by the number of (row, negative) pairs.
        grad_margins = torch.sigmoid(margins.neg()).mul_(grad_loss * (-1.0 / margins.numel()))
        torch.sum(grad_margins, dim=0, out=columns[0])
        torch.neg(grad_margins, out=columns[1:])
    if grad_scores is not None:
        columns.add_(grad_scores.t())
    return columns


def _rows_to_table(grad_rows: Tensor, ids: Tensor, num_rows: int, padding: int) -> Tensor:
    table = grad_rows.new_zeros(num_rows, grad_rows.shape[-1]).index_add_(0, ids, grad_rows)
    if 0 <= padding < num_rows:
        table[padding].zero_()
    return table


def gather_pair_scores(
    user_weight: Tensor, item_weight: Tensor, users: Tensor, items: Tensor, padding: int = -1, *, norms: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """``(scores [B, J], sum of squared entries of the gathered rows, bpr_loss of the scores)`` for ``users [B]``
    against ``items [B, J]`` (column 0 the positive), differentiable in both weights; rows ``padding`` get no
    gradient (-1: none). With ``norms=False`` the second value is a constant 0 (skips its cost when no L2 term
    reads it)."""
    scores, squares, loss = _GatherScores.apply(user_weight, item_weight, users, items, padding, norms)
    return scores, squares, loss


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
        if "neg_item_id" in batch and self._plain_tables() and torch.is_grad_enabled():
            return self._pairwise_step(batch)
        user_vec = self.user_table(batch["user_id"])
        if "neg_item_id" not in batch:
            item_vec = self.item_table(batch["item_id"])
            return {"score": (user_vec * item_vec).sum(-1), "user_vec": user_vec, "item_vec": item_vec}
        # One lookup for positives and negatives: cheaper, and a dynamic table must be read once per step.
        items = torch.cat([batch["item_id"].unsqueeze(-1), negatives_2d(batch)], dim=1)
        item_vecs = self.item_table(items)
        scores = pair_scores(user_vec, item_vecs)
        return {
            "score": scores[:, 0],
            "neg_score": scores[:, 1:],
            "user_vec": user_vec,
            "item_vec": item_vecs,
        }

    def _plain_tables(self) -> bool:
        """Both tables dense ``FixedEmbedding`` with the same padding row: the fused training step applies."""
        tables = (self.user_table, self.item_table)
        return all(isinstance(t, FixedEmbedding) and not t.sparse for t in tables) and (
            self.user_table.padding_id == self.item_table.padding_id
        )

    def _pairwise_step(self, batch: Batch) -> dict[str, Tensor]:
        """Training-step outputs in one fused node: scores plus the squared norms of the rows used (for L2)."""
        assert isinstance(self.user_table, FixedEmbedding) and isinstance(self.item_table, FixedEmbedding)
        padding = self.user_table.padding_id
        items = torch.cat([batch["item_id"].unsqueeze(-1), negatives_2d(batch)], dim=1)
        scores, squares, loss = gather_pair_scores(
            self.user_table.weight,
            self.item_table.weight,
            batch["user_id"],
            items,
            -1 if padding is None else padding,
            norms=self.l2 > 0,
        )
        return {"score": scores[:, 0], "neg_score": scores[:, 1:], "squared_norms": squares, "bpr_loss": loss}

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        if "neg_score" not in outputs:
            raise ValueError("MF.loss needs negatives: the batch given to forward lacked 'neg_item_id'.")
        loss = outputs["bpr_loss"] if "bpr_loss" in outputs else bpr_loss(outputs["score"], outputs["neg_score"])
        if self.l2 > 0:
            batch_size = outputs["score"].shape[0]
            if "squared_norms" in outputs:
                return loss + self.l2 * outputs["squared_norms"] / batch_size
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
