"""Train / validation / test splits of an interaction table, following RecBole 1.2.1's rules exactly.

Every split takes an Arrow table of interactions (``user_id``, ``item_id``, ``ts``, any other columns) and
returns a :class:`Split` of three Arrow tables; every input row lands in exactly one part, and each part
keeps the input's row order. The rules (``recbole/data/dataset/dataset.py``):

* :func:`random_split` — RecBole's ``RS`` with ``order: RO``: shuffle every row with ``torch.randperm``
  under a seeded generator, then cut each user's rows (or the whole table when ``group_by=None``) by
  :func:`split_sizes`, RecBole's ``_calcu_split_ids`` rounding;
* :func:`leave_one_out_split` — RecBole's ``LS`` with ``order: TO``: each user's last interaction in time
  is the test row and the one before it the validation row, keeping at least ``min_train`` rows in train;
* :func:`temporal_split` — a global cut over time by ratio (RecBole's ``RS`` with ``order: TO`` and
  ``group_by: none``), and :func:`temporal_split_at`, a global cut at given timestamps.

Time order is a stable sort on the time column: rows with equal timestamps keep their input order, as
RecBole's ``Interaction.sort`` (``np.argsort(kind="stable")``) does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recplane.errors import InvalidInput

__all__ = [
    "DEFAULT_SEED",
    "Split",
    "leave_one_out_split",
    "random_split",
    "split_sizes",
    "temporal_split",
    "temporal_split_at",
]

DEFAULT_SEED = 2020
"""RecBole's default ``seed`` (``recbole/properties/overall.yaml``)."""

LeaveOneOutMode = Literal["valid_and_test", "valid_only", "test_only"]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Split:
    """The three parts of a split; together they hold every input row exactly once."""

    train: pa.Table
    valid: pa.Table
    test: pa.Table

    def sizes(self) -> tuple[int, int, int]:
        """Row counts of (train, valid, test)."""
        return self.train.num_rows, self.valid.num_rows, self.test.num_rows


def split_sizes(totals: Any, ratios: Sequence[float]) -> IntArray:
    """Rows per part for each group of ``totals`` rows, rounded as RecBole's ``_calcu_split_ids``.

    Every part but the first gets ``int(ratio * total)`` rows (ratios normalised to sum to 1); the first
    gets the rest. Then, from the last part backwards and while the first part has more than one row, a
    part whose exact share is strictly between 0 and 1 row takes one row from the first part. Returns an
    ``[len(totals), len(ratios)]`` array (``[len(ratios)]`` for a scalar ``totals``).
    """
    normalised = _normalised(ratios)
    counts_in = np.asarray(totals, dtype=np.int64)
    scalar = counts_in.ndim == 0
    tot = np.atleast_1d(counts_in)
    if (tot < 0).any():
        raise InvalidInput(f"totals must be non-negative; got {tot[tot < 0][:3].tolist()}.")
    shares = np.stack([np.float64(r) * tot.astype(np.float64) for r in normalised], axis=1)
    counts = np.floor(shares).astype(np.int64)
    counts[:, 0] = tot - counts[:, 1:].sum(axis=1)
    active = np.ones(len(tot), dtype=bool)
    for part in range(len(normalised) - 1, 0, -1):
        active &= counts[:, 0] > 1
        bump = active & (shares[:, part] > 0) & (shares[:, part] < 1)
        counts[bump, part] += 1
        counts[bump, 0] -= 1
    return counts[0] if scalar else counts


def _normalised(ratios: Sequence[float]) -> list[float]:
    values = [float(r) for r in ratios]
    if len(values) != 3 or any(r < 0 for r in values) or sum(values) <= 0:
        raise InvalidInput(
            f"ratios must be three non-negative numbers (train, valid, test) with a positive sum; got {ratios!r}."
        )
    # Python's left-to-right float sum and division, as RecBole computes them, so int() truncates alike.
    total = sum(values)
    return [r / total for r in values]


def _column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        raise InvalidInput(f"The interaction table has no column {name!r}; its columns are {table.column_names}.")
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise InvalidInput(f"Column {name!r} has {column.null_count} null value(s); splits need every value set.")
    return column


def _group_codes(table: pa.Table, name: str) -> IntArray:
    encoded = pc.dictionary_encode(_column(table, name))
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _time_order(table: pa.Table, time_col: str) -> IntArray:
    times = _column(table, time_col).to_numpy(zero_copy_only=False)
    return np.argsort(times, kind="stable").astype(np.int64)


def _positions_in_groups(codes_in_order: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """For rows listed in some order: the stable grouping order, each grouped row's position, group sizes."""
    grouping = np.argsort(codes_in_order, kind="stable").astype(np.int64)
    sizes = np.bincount(codes_in_order).astype(np.int64)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    positions = np.arange(len(codes_in_order), dtype=np.int64) - starts
    return grouping, positions, sizes


def _take_parts(table: pa.Table, rows: IntArray, parts: npt.NDArray[np.int8]) -> Split:
    """Split ``table`` by ``parts[j]`` (0 train, 1 valid, 2 test) of row ``rows[j]``, keeping input order."""
    taken = [table.take(pa.array(np.sort(rows[parts == p]))) for p in range(3)]
    return Split(train=taken[0], valid=taken[1], test=taken[2])


def _parts_by_position(positions: IntArray, bounds: IntArray) -> npt.NDArray[np.int8]:
    """Part of each row from its position in its group and the group's ``[rows, 3]`` part sizes."""
    first, second = bounds[:, 0], bounds[:, 0] + bounds[:, 1]
    return np.where(positions < first, 0, np.where(positions < second, 1, 2)).astype(np.int8)


def random_split(
    table: pa.Table,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    group_by: str | None = "user_id",
    seed: int = DEFAULT_SEED,
) -> Split:
    """RecBole's random ratio split (``RS``, ``order: RO``): shuffle, then cut each group by ``ratios``.

    The shuffle is ``torch.randperm(num_rows)`` from a generator seeded with ``seed``, as RecBole's
    ``Interaction.shuffle`` draws it after ``init_seed``. With ``group_by=None`` the whole table is one
    group (RecBole's ``group_by: none``, the context-aware default).
    """
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(table.num_rows, generator=generator).numpy().astype(np.int64)
    codes = np.zeros(table.num_rows, dtype=np.int64) if group_by is None else _group_codes(table, group_by)
    grouping, positions, sizes = _positions_in_groups(codes[shuffled])
    rows = shuffled[grouping]
    bounds = split_sizes(sizes, ratios)
    group_of_row = np.repeat(np.arange(len(sizes)), sizes)
    return _take_parts(table, rows, _parts_by_position(positions, bounds[group_of_row]))


def leave_one_out_split(
    table: pa.Table,
    *,
    user_col: str = "user_id",
    time_col: str = "ts",
    mode: LeaveOneOutMode = "valid_and_test",
    min_train: int = 1,
) -> Split:
    """RecBole's leave-one-out split (``LS``, ``order: TO``): each user's latest rows go to test and valid.

    ``valid_and_test`` sends a user's last interaction to test and the one before to valid; ``valid_only``
    and ``test_only`` send only the last one. A user keeps at least ``min_train`` rows in train: RecBole
    keeps one for general models, and effectively two for sequential models (their first interaction is
    never a target, so a user with 3 interactions has a test row but no validation row).
    """
    if mode not in ("valid_and_test", "valid_only", "test_only"):
        raise InvalidInput(f"mode must be 'valid_and_test', 'valid_only' or 'test_only'; got {mode!r}.")
    if min_train < 1:
        raise InvalidInput(f"min_train must be at least 1; got {min_train}.")
    in_time = _time_order(table, time_col)
    grouping, positions, sizes = _positions_in_groups(_group_codes(table, user_col)[in_time])
    rows = in_time[grouping]
    group_sizes = np.repeat(sizes, sizes)
    from_end = group_sizes - 1 - positions
    held_out = 2 if mode == "valid_and_test" else 1
    legal = np.clip(np.minimum(held_out, group_sizes - min_train), 0, None)
    if mode == "valid_and_test":
        held = np.where(from_end == 0, 2, 1).astype(np.int8)
    else:
        held = np.full(len(rows), 2 if mode == "test_only" else 1, dtype=np.int8)
    parts = np.where(from_end < legal, held, 0).astype(np.int8)
    return _take_parts(table, rows, parts)


def temporal_split(table: pa.Table, ratios: Sequence[float] = (0.8, 0.1, 0.1), *, time_col: str = "ts") -> Split:
    """A global cut over time by ratio: the oldest rows train, the newest test (RecBole ``RS`` + ``TO``, ungrouped).

    Sizes follow :func:`split_sizes` over the whole table; rows with the same timestamp can fall on both
    sides of a cut (ordered by input position), exactly as in RecBole.
    """
    in_time = _time_order(table, time_col)
    bounds = split_sizes(np.array([table.num_rows]), ratios)
    positions = np.arange(table.num_rows, dtype=np.int64)
    return _take_parts(table, in_time, _parts_by_position(positions, np.repeat(bounds, table.num_rows, axis=0)))


def temporal_split_at(table: pa.Table, valid_from: Any, test_from: Any, *, time_col: str = "ts") -> Split:
    """A global cut at two instants: ``ts < valid_from`` trains, ``valid_from <= ts < test_from`` validates."""
    times = _column(table, time_col)
    try:
        valid_cut = pa.scalar(valid_from, type=times.type)
        test_cut = pa.scalar(test_from, type=times.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise InvalidInput(
            f"Cut points {valid_from!r} and {test_from!r} do not match the {times.type} column {time_col!r}: {exc}"
        ) from exc
    if pc.greater(valid_cut, test_cut).as_py():
        raise InvalidInput(f"valid_from ({valid_from!r}) must not be after test_from ({test_from!r}).")
    in_valid = pc.greater_equal(times, valid_cut).to_numpy(zero_copy_only=False)
    in_test = pc.greater_equal(times, test_cut).to_numpy(zero_copy_only=False)
    parts = in_valid.astype(np.int8) + in_test.astype(np.int8)
    return _take_parts(table, np.arange(table.num_rows, dtype=np.int64), parts)
