"""Side-feature tables (one row per item or user) → tensors indexed by model id, built once per run.

An item (or user) feature table is an Arrow table with the key column (``item_id`` / ``user_id``) and one column
per feature. Each column's Arrow type says what the feature is:

* string, integer, boolean or dictionary → a **categorical** field, encoded by its own :class:`IdMap` (``1..N``,
  0 = unknown or null);
* ``list<string|int>`` → a **multi-valued** categorical bag (right-padded ids plus bag sizes);
* float → a **dense scalar**; ``fixed_size_list<float, N>`` → a **dense vector** (e.g. a 384-d text embedding).

Row ``i`` of every tensor belongs to model id ``i``; entities missing from the table get 0 ids and zero vectors,
rows whose key is not in the interactions are ignored. A batch takes its features with :meth:`EntityFeatures.take`
(an index of these small tensors), so nothing is materialised per interaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from recplane.errors import InvalidInput
from recplane.models.base import Batch
from recplane.models.features import DenseField, SparseField
from recplane.training.data import IdMap

__all__ = ["EntityFeatures", "FeatureKind", "build_entity_features", "check_distinct_names"]

FeatureKind = Literal["categorical", "bag", "dense"]


@dataclass
class EntityFeatures:
    """Encoded features of one entity type; each tensor has one row per model id (row 0 = padding)."""

    categorical: dict[str, Tensor] = field(default_factory=dict)  # int64 [N]
    cardinalities: dict[str, int] = field(default_factory=dict)  # categorical and bag fields
    bags: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)  # int64 [N, L], lengths [N]
    dense: dict[str, Tensor] = field(default_factory=dict)  # float32 [N, dim]

    @property
    def names(self) -> list[str]:
        return [*self.categorical, *self.bags, *self.dense]

    def sparse_fields(self) -> list[SparseField]:
        """One field per categorical column and per bag, for the ranking models' ``FeatureLayer``."""
        single = [SparseField(name, self.cardinalities[name]) for name in self.categorical]
        bags = [SparseField(name, self.cardinalities[name], multi_valued=True) for name in self.bags]
        return single + bags

    def dense_fields(self) -> list[DenseField]:
        return [DenseField(name, int(values.shape[1])) for name, values in self.dense.items()]

    def take(self, ids: Tensor) -> Batch:
        """The batch keys of these features for the entities ``ids`` (model ids)."""
        batch: Batch = {name: values[ids] for name, values in self.categorical.items()}
        for name, (bag, lengths) in self.bags.items():
            batch[name], batch[f"{name}_len"] = bag[ids], lengths[ids]
        batch.update({name: values[ids] for name, values in self.dense.items()})
        return batch


def build_entity_features(table: pa.Table | None, key: str, ids: IdMap, *, what: str) -> EntityFeatures:
    """Encode every feature column of ``table`` for the entities of ``ids`` (``what`` names the table in errors)."""
    features = EntityFeatures()
    if table is None:
        return features
    rows = _rows_of_entities(table, key, ids, what)
    known = rows >= 0

    def by_id(values: np.ndarray) -> Tensor:
        return _scatter(values, rows, known)

    for name in table.column_names:
        if name == key:
            continue
        column = table.column(name).combine_chunks()
        kind = _kind_of(column.type, name, what)
        if kind == "categorical":
            codes, cardinality = _categorical(column)
            features.categorical[name] = by_id(codes)
            features.cardinalities[name] = cardinality
        elif kind == "bag":
            bag, lengths, cardinality = _bag(column)
            features.bags[name] = (by_id(bag), by_id(lengths))
            features.cardinalities[name] = cardinality
        else:
            features.dense[name] = by_id(_dense(column))
    return features


def check_distinct_names(reserved: set[str], *groups: tuple[str, EntityFeatures]) -> None:
    """Raise unless feature names are distinct across tables and clash with no batch key the trainer uses."""
    seen: dict[str, str] = {}
    for what, features in groups:
        keys = [*features.names, *(f"{name}_len" for name in features.bags)]
        for name in keys:
            if name in reserved:
                raise InvalidInput(
                    f"{what} column {name!r} clashes with a batch key the trainer uses ({sorted(reserved)}); "
                    "rename the column."
                )
            if name in seen:
                raise InvalidInput(f"Feature {name!r} appears in both {seen[name]} and {what}; rename one of them.")
            seen[name] = what


def _rows_of_entities(table: pa.Table, key: str, ids: IdMap, what: str) -> np.ndarray:
    """For each model id ``0..N``, the table row holding its features, or -1."""
    if key not in table.column_names:
        raise InvalidInput(f"The {what} table has no {key!r} column; its columns are {table.column_names}.")
    keys = table.column(key).combine_chunks()
    if keys.null_count:
        raise InvalidInput(f"The {what} table has {keys.null_count} null {key!r} value(s); every row needs a key.")
    if len(pc.unique(keys)) != len(keys):
        raise InvalidInput(f"The {what} table has duplicate {key!r} values; keep one row per {key}.")
    try:
        positions = pc.index_in(ids.values, value_set=keys.cast(ids.values.type))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise InvalidInput(
            f"The {what} table's {key!r} column is {keys.type}, but the interactions' is {ids.values.type}; "
            "use the same type."
        ) from error
    rows = np.asarray(positions.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.concatenate([[-1], rows])


def _kind_of(arrow_type: pa.DataType, name: str, what: str) -> FeatureKind:
    if pa.types.is_dictionary(arrow_type):
        return "categorical"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "categorical"
    if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
        return "categorical"
    if pa.types.is_floating(arrow_type):
        return "dense"
    if pa.types.is_fixed_size_list(arrow_type) and pa.types.is_floating(arrow_type.value_type):
        return "dense"
    if (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and _is_id_type(arrow_type.value_type):
        return "bag"
    raise InvalidInput(
        f"{what} column {name!r} has type {arrow_type}, which is not a feature type: use string/int (categorical), "
        "list<string|int> (multi-valued), float (dense) or fixed_size_list<float, N> (vector)."
    )


def _is_id_type(arrow_type: pa.DataType) -> bool:
    types = pa.types
    return bool(types.is_string(arrow_type) or types.is_large_string(arrow_type) or types.is_integer(arrow_type))


def _codes(values: pa.Array, vocabulary: IdMap) -> np.ndarray:
    """``1..N`` for known values, 0 for nulls."""
    positions = pc.index_in(values, value_set=vocabulary.values)
    return np.asarray(positions.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64) + 1


def _categorical(column: pa.Array) -> tuple[np.ndarray, int]:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    vocabulary = IdMap.build(column)
    return _codes(column, vocabulary), vocabulary.num_embeddings


def _bag(column: pa.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """Right-padded ids ``[rows, longest]``, bag sizes ``[rows]`` (null lists are empty) and the cardinality."""
    lengths = np.asarray(pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    flat = pc.list_flatten(column)
    vocabulary = IdMap.build(flat)
    codes = _codes(flat, vocabulary)
    width = max(int(lengths.max(initial=0)), 1)
    owners = np.repeat(np.arange(len(lengths)), lengths)
    positions = np.arange(len(codes)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    padded = np.zeros((len(lengths), width), dtype=np.int64)
    padded[owners, positions] = codes
    return padded, lengths, vocabulary.num_embeddings


def _dense(column: pa.Array) -> np.ndarray:
    """``[rows, dim]`` float32; nulls (whole values or vector entries) are 0."""
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
        values = column.fill_null(pa.scalar([0.0] * dim, type=column.type)) if column.null_count else column
        flat = pc.fill_null(values.flatten(), 0.0).cast(pa.float32())
        return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(column), dim)
    filled = pc.fill_null(column, 0.0).cast(pa.float32())
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, 1)


def _scatter(values: np.ndarray, rows: np.ndarray, known: np.ndarray) -> Tensor:
    """Rows of ``values`` reordered by model id; entities without a row get zeros."""
    out = np.zeros((len(rows), *values.shape[1:]), dtype=values.dtype)
    out[known] = values[rows[known]]
    return torch.from_numpy(out)
