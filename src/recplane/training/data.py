"""Arrow interactions → contiguous id maps and int64 tensors, built once; a seeded, resumable batch order.

Ids in the zoo are ``1 .. N`` with 0 reserved for padding: :class:`IdMap` assigns them by sorting the distinct raw
ids, so the same table always gives the same map. Everything the training loop touches is a tensor with one row
per training example; a batch is a gather of those tensors by a slice of a seeded permutation, with no per-sample
Python. :class:`BatchOrder` derives each epoch's permutation from ``(seed, epoch)`` alone, so a run resumed at
``(epoch, batch)`` sees exactly the batches the uninterrupted run would have seen. It also groups consecutive
batches into :class:`BatchChunk` s, so that a task builds many batches (and draws their negatives) in one call:
per-call costs are then paid once per chunk instead of once per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from recplane.errors import InvalidInput

__all__ = ["BatchChunk", "BatchOrder", "IdMap", "padded_sequences"]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class IdMap:
    """Raw ids (sorted, distinct) ↔ model ids ``1 .. len(values)``; id 0 is padding."""

    values: pa.Array

    @classmethod
    def build(cls, *columns: pa.Array | pa.ChunkedArray) -> IdMap:
        """The map over every distinct non-null value of the given columns."""
        if not columns:
            raise InvalidInput("IdMap.build needs at least one column of raw ids.")
        arrays = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns]
        distinct = pc.unique(pa.concat_arrays(arrays)).drop_null()
        return cls(distinct.take(pc.sort_indices(distinct)))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def num_embeddings(self) -> int:
        """Size of an embedding table over these ids, padding row included."""
        return len(self.values) + 1

    def encode(self, raw: pa.Array | pa.ChunkedArray, *, what: str = "id") -> IntArray:
        """Model ids (int64, ``>= 1``) of the raw ids; an unknown or null id is an error."""
        positions = pc.index_in(raw, value_set=self.values)
        if positions.null_count:
            missing = pc.filter(raw, pc.is_null(positions)).slice(0, 3).to_pylist()
            raise InvalidInput(f"{positions.null_count} {what} value(s) are null or not in the id map, e.g. {missing}.")
        return np.asarray(positions.to_numpy(zero_copy_only=False), dtype=np.int64) + 1

    def decode(self, ids: IntArray | Tensor) -> pa.Array:
        """Raw ids of model ids ``>= 1``."""
        array = np.asarray(ids.cpu().numpy() if isinstance(ids, Tensor) else ids, dtype=np.int64)
        if array.size and (array.min() < 1 or array.max() > len(self.values)):
            raise InvalidInput(f"Model ids must be in 1 .. {len(self.values)}; got {array.min()} .. {array.max()}.")
        return self.values.take(pa.array(array - 1))


def padded_sequences(
    users: IntArray, items: IntArray, times: IntArray, num_users: int, max_len: int
) -> tuple[Tensor, Tensor]:
    """``(sequences [num_users, max_len], lengths [num_users])``: each user's most recent ``max_len`` items,
    oldest → newest, right-padded with 0. Ties in time keep their input order."""
    order = np.lexsort((np.arange(len(users)), times, users))
    users, items = users[order], items[order]
    counts = np.bincount(users, minlength=num_users).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(users), dtype=np.int64) - starts[users]
    # Keep the newest max_len rows of each user, shifted to start at column 0.
    skip = np.maximum(counts - max_len, 0)
    keep = position >= skip[users]
    column = position - skip[users]
    sequences = np.zeros((num_users, max_len), dtype=np.int64)
    sequences[users[keep], column[keep]] = items[keep]
    return torch.from_numpy(sequences), torch.from_numpy(np.minimum(counts, max_len))


@dataclass(frozen=True)
class BatchChunk:
    """Consecutive mini-batches of one epoch, positions ``first .. end - 1``: their row indices in one tensor, so a
    task builds all their batches with one call (one negative draw instead of one per step). Training starts at
    position ``start`` (after ``first`` only when a run resumes inside the chunk)."""

    first: int
    end: int
    start: int
    rows: Tensor
    batch_size: int

    def batches(self, built: dict[str, Tensor]) -> Iterator[tuple[int, int, dict[str, Tensor]]]:
        """``(position, rows in the batch, batch)`` of each mini-batch from ``start`` on, cut out of ``built`` (the
        task's batch of ``rows``) as views: per-row tensors (first dim ``len(rows)``) are sliced, others shared."""
        total = len(self.rows)
        for position in range(self.start, self.end):
            begin = (position - self.first) * self.batch_size
            stop = min(begin + self.batch_size, total)
            batch = {key: value[begin:stop] if value.shape[:1] == (total,) else value for key, value in built.items()}
            yield position, stop - begin, batch


@dataclass(frozen=True)
class BatchOrder:
    """Mini-batches of row indices: a fresh permutation per epoch from a generator seeded by ``(seed, epoch)``."""

    num_rows: int
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        if self.num_rows < 1:
            raise InvalidInput("There are no training examples: the training split is empty.")
        if self.batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1; got {self.batch_size}.")

    @property
    def num_batches(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def permutation(self, epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (1 << 63))
        return torch.randperm(self.num_rows, generator=generator)

    def chunks(self, epoch: int, steps: int, start: int = 0) -> Iterator[BatchChunk]:
        """The epoch's batches ``steps`` at a time from position ``start`` on. Chunk boundaries are fixed
        (multiples of ``steps`` from the epoch start), so a run resumed mid-chunk rebuilds the same chunk."""
        if steps < 1:
            raise InvalidInput(f"A chunk holds at least one batch; got steps={steps}.")
        order = self.permutation(epoch)
        for first in range(start - start % steps, self.num_batches, steps):
            end = min(first + steps, self.num_batches)
            rows = order[first * self.batch_size : end * self.batch_size]
            yield BatchChunk(first, end, max(start, first), rows, self.batch_size)
