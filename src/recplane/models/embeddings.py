"""Embedding tables: one interface for turning sparse integer ids into dense vectors.

Every model in the zoo looks ids up through an :class:`EmbeddingTable`, so the storage behind a feature can be
swapped without touching the model:

* :class:`FixedEmbedding` — a known, dense vocabulary (``nn.Embedding``); the default for ids the training
  engine has already remapped to ``1..N``.
* :class:`HashedEmbedding` — raw int64 ids of any range folded into a bounded table with a collision-light
  scheme: quotient-remainder (Shi et al. 2020) or multi-hash. Memory is fixed up front; a few ids may share
  their vector, and :meth:`EmbeddingTable.collision_rate` says how many.
* :class:`~recplane.models.dynamic_embedding.DynamicEmbedding` — collisionless, growing, with admission and
  eviction (Monolith-style), in its own module.

Convention shared by all tables: id ``0`` is padding (a zero vector that gets no gradient) unless the table is
built with ``padding_id=None``.
"""

from __future__ import annotations

import abc
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EmbeddingTable", "FixedEmbedding", "HashedEmbedding", "hash_ids", "shared_code_fraction"]

_U64 = 1 << 64
_MAX63 = (1 << 63) - 1


def _signed(value: int) -> int:
    """The int64 bit pattern of an unsigned 64-bit constant (torch has no uint64 arithmetic on CPU)."""
    return value - _U64 if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def hash_ids(ids: Tensor, seed: int = 0) -> Tensor:
    """Non-negative 63-bit hashes of int64 ids: the splitmix64 finaliser, vectorised, wrapping like uint64.

    Sequential ids (the usual case for database keys) come out uncorrelated, which plain ``id % buckets`` does
    not give. ``seed`` selects an independent hash function.
    """
    z = ids.to(torch.int64) + _signed((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % _U64)
    z = z + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    z = z ^ _shift_right(z, 31)
    return z & _MAX63


def shared_code_fraction(codes: Tensor, sizes: tuple[int, ...]) -> float:
    """Fraction of rows of ``codes`` (``[n, C]``, one row per distinct id) that equal another row.

    ``sizes`` are the ranges of the C columns; when their product fits in int64 the codes are packed into one
    key (one sort), else rows are compared directly.
    """
    if codes.shape[0] == 0:
        return 0.0
    if math.prod(sizes) <= _MAX63:
        key = torch.zeros(codes.shape[0], dtype=torch.int64)
        for column, size in enumerate(sizes):
            key = key * size + codes[:, column]
        _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).double().mean())


class EmbeddingTable(nn.Module, abc.ABC):
    """Maps integer ids of any shape ``[...]`` to vectors ``[..., dim]``; the one interface models look ids up
    through."""

    def __init__(self, dim: int, padding_id: int | None) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"Embedding dim must be positive, got {dim}.")
        self.dim = dim
        self.padding_id = padding_id

    @property
    @abc.abstractmethod
    def num_embeddings(self) -> int:
        """Rows holding vectors right now (for a growing table: rows in use, not the allocated capacity)."""

    @property
    @abc.abstractmethod
    def sparse(self) -> bool:
        """True when lookups produce sparse gradients (train with SparseAdam, Adagrad or SGD)."""

    @abc.abstractmethod
    def forward(self, ids: Tensor) -> Tensor:
        """``[..., dim]`` vectors for int64 ids ``[...]``."""

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Bytes held by the table (weights plus any id mapping), excluding optimizer state."""

    def collision_rate(self, ids: Tensor) -> float:
        """Fraction of the distinct non-padding ids in ``ids`` that share their full code (hence their vector)
        with another id. Tables that give every id its own row return 0.0."""
        return 0.0

    def _distinct_ids(self, ids: Tensor) -> Tensor:
        """Distinct ids, padding removed: the population a collision rate is measured over."""
        distinct = torch.unique(ids.reshape(-1).to(torch.int64))
        if self.padding_id is not None:
            distinct = distinct[distinct != self.padding_id]
        return distinct


class FixedEmbedding(EmbeddingTable):
    """A fixed vocabulary of ``num_embeddings`` rows (ids ``0..num_embeddings-1``, row 0 = padding)."""

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        *,
        sparse: bool = False,
        padding_id: int | None = 0,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(dim, padding_id)
        if num_embeddings <= 0:
            raise ValueError(f"FixedEmbedding needs at least one row, got num_embeddings={num_embeddings}.")
        self.embedding = nn.Embedding(num_embeddings, dim, padding_idx=padding_id, sparse=sparse)
        nn.init.normal_(self.embedding.weight, std=init_std)
        if padding_id is not None:
            with torch.no_grad():
                self.embedding.weight[padding_id].zero_()

    @property
    def num_embeddings(self) -> int:
        return self.embedding.num_embeddings

    @property
    def sparse(self) -> bool:
        return self.embedding.sparse

    @property
    def weight(self) -> Tensor:
        """The ``[num_embeddings, dim]`` weight (index = id), e.g. for scoring every item at once."""
        return self.embedding.weight

    def forward(self, ids: Tensor) -> Tensor:
        return self.embedding(ids)

    def memory_bytes(self) -> int:
        weight = self.embedding.weight
        return weight.numel() * weight.element_size()


class HashedEmbedding(EmbeddingTable):
    """Raw int64 ids of any range in a bounded table of ``num_rows`` rows, combining several rows per id.

    The rows are split into segments and each id gets one row per segment (its *code*); its vector combines
    those rows, so two ids share a vector only if they share every row of their code:

    * ``scheme="qr"`` (quotient-remainder, Shi et al. 2020): two segments of ``Q`` and ``R`` rows,
      ``q = v // R``, ``r = v % R`` for ``v`` in a virtual vocabulary of ``Q * R`` ids; ``v`` is the id's hash,
      or the id itself with ``hash_ids=False`` (then ids below ``Q * R`` never collide). Combined by element-wise
      product (default) or sum.
    * ``scheme="multi_hash"``: ``num_hashes`` segments of equal size, one independent hash each, summed by
      default; ``num_hashes=1`` is the plain hashing trick.
    """

    offsets: Tensor

    def __init__(
        self,
        num_rows: int,
        dim: int,
        *,
        scheme: Literal["qr", "multi_hash"] = "qr",
        num_hashes: int = 2,
        combine: Literal["sum", "product"] | None = None,
        hash_ids: bool = True,
        sparse: bool = False,
        padding_id: int | None = 0,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(dim, padding_id)
        if scheme == "qr":
            if num_rows < 2:
                raise ValueError(f"Quotient-remainder hashing needs num_rows >= 2, got {num_rows}.")
            remainder_rows = num_rows // 2
            sizes: tuple[int, ...] = (num_rows - remainder_rows, remainder_rows)
        elif scheme == "multi_hash":
            if num_hashes < 1 or num_rows < num_hashes:
                raise ValueError(
                    f"multi_hash needs 1 <= num_hashes <= num_rows, got num_hashes={num_hashes}, num_rows={num_rows}."
                )
            sizes = (num_rows // num_hashes,) * num_hashes
        else:
            raise ValueError(f"Unknown hashing scheme {scheme!r}; use 'qr' or 'multi_hash'.")
        if not hash_ids and scheme != "qr":
            raise ValueError("hash_ids=False only makes sense with scheme='qr' (ids split into quotient/remainder).")
        self.scheme = scheme
        self.combine: Literal["sum", "product"] = combine or ("product" if scheme == "qr" else "sum")
        self.hash_ids = hash_ids
        self.seed = seed
        self.sizes = sizes
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]], dtype=torch.int64).cumsum(0), persistent=False)
        self._sparse = sparse
        self.weight = nn.Parameter(torch.empty(sum(sizes), dim))
        # Keep the combined vector's scale near init_std whatever the combiner: a product of two N(0, s) rows has
        # std s**2, a sum of C rows has std s*sqrt(C).
        segment_std = math.sqrt(init_std) if self.combine == "product" else init_std / math.sqrt(len(sizes))
        nn.init.normal_(self.weight, std=segment_std)

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    @property
    def sparse(self) -> bool:
        return self._sparse

    def codes(self, ids: Tensor) -> Tensor:
        """``[..., C]`` row index of each id within each segment (before segment offsets)."""
        ids = ids.to(torch.int64)
        if self.scheme == "qr":
            quotient_rows, remainder_rows = self.sizes
            virtual = hash_ids(ids, self.seed) if self.hash_ids else ids
            virtual = virtual.remainder(quotient_rows * remainder_rows)
            return torch.stack([virtual // remainder_rows, virtual % remainder_rows], dim=-1)
        return torch.stack(
            [hash_ids(ids, self.seed + k) % size for k, size in enumerate(self.sizes)],
            dim=-1,
        )

    def forward(self, ids: Tensor) -> Tensor:
        rows = F.embedding(self.codes(ids) + self.offsets, self.weight, sparse=self._sparse)
        out = rows.prod(dim=-2) if self.combine == "product" else rows.sum(dim=-2)
        if self.padding_id is None:
            return out
        return out * (ids != self.padding_id).unsqueeze(-1).to(out.dtype)

    def memory_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    def collision_rate(self, ids: Tensor) -> float:
        distinct = self._distinct_ids(ids.cpu())
        return shared_code_fraction(self.codes(distinct), self.sizes)
