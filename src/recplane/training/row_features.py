"""Per-row features of the ranking models: fitted once on the training split, encoded the same way at serving.

A row feature is a column of the interaction table that describes the request a row stands for — typically a
point-in-time feature of a training set (the user's ratings in the last 30 days as of that row's time). The
trainer fits a :class:`RowFeatureEncoder` on the training split and saves it with the model
(``row_features.json``); the serving layer loads that file and encodes online feature values with the very same
code, so a value means the same thing in training and at request time. Each column's Arrow type at fit time
says what it becomes:

* string, bool, dictionary, or an integer column with at most ``max_int_categories`` distinct training values →
  **categorical**: a vocabulary of the training values, sorted; value ``i`` of it is id ``i + 1``, and a null or
  unseen value is id 0. Model input: int64 ``[N]``.
* ``list<string|int|bool>`` (e.g. a ``last_n`` aggregation) → **bag**: ids as above, right-padded to the longest
  training list (a longer list keeps its last — newest — entries). Inputs: int64 ``[N, width]`` and
  ``<name>_len`` int64 ``[N]``.
* float, decimal and the other integer columns → **dense**: ``(value - mean) / std`` with the training split's
  mean and standard deviation; null, NaN and ±inf become 0 (the mean). When the training column had missing
  values, a second value flags them (1.0 = missing), so "no data" stays distinguishable from "average". Input:
  float32 ``[N]``, or ``[N, 2]`` with the flag.

Encoding is deterministic and reads a ``pyarrow.Table`` or a mapping of column → list of values (what an online
lookup returns). This module needs only NumPy and Arrow, so serving can use it without the trainer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Literal, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recplane.errors import InvalidInput

__all__ = ["MAX_INT_CATEGORIES", "RowFeature", "RowFeatureEncoder", "RowFeatureKind"]

RowFeatureKind = Literal["categorical", "bag", "dense"]
MAX_INT_CATEGORIES = 32
_FORMAT = 1
_VALUE_TYPES: dict[str, pa.DataType] = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}
RowData: TypeAlias = pa.Table | Mapping[str, Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray]


@dataclass(frozen=True)
class RowFeature:
    """How one column is encoded: its kind and what was fitted (vocabulary, bag width, mean/std, missing flag)."""

    name: str
    kind: RowFeatureKind
    value_type: str = ""  # categorical and bag: "string", "int64" or "bool"
    vocabulary: tuple[Any, ...] = ()
    width: int = 0  # bag: ids per row
    mean: float = 0.0
    std: float = 1.0
    flags_missing: bool = False

    @property
    def cardinality(self) -> int:
        """Embedding rows a categorical or bag field needs: the vocabulary plus id 0 (null or unseen)."""
        return len(self.vocabulary) + 1

    @property
    def dim(self) -> int:
        """Width of a dense feature: the value, plus the missing flag when it has one."""
        return 2 if self.flags_missing else 1

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model input keys this feature fills."""
        return (self.name, f"{self.name}_len") if self.kind == "bag" else (self.name,)

    @cached_property
    def _value_set(self) -> pa.Array:
        return pa.array(list(self.vocabulary), type=_VALUE_TYPES[self.value_type])

    def encode(self, values: pa.Array) -> dict[str, np.ndarray]:
        """The model inputs of this feature for ``values`` (one entry per row)."""
        if self.kind == "dense":
            return {self.name: self._dense(values)}
        if self.kind == "categorical":
            return {self.name: self._codes(_cast(values, _VALUE_TYPES[self.value_type], self.name))}
        return self._bag(values)

    def _codes(self, values: pa.Array) -> np.ndarray:
        positions = pc.index_in(values, value_set=self._value_set)
        return np.asarray(positions.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64) + 1

    def _dense(self, values: pa.Array) -> np.ndarray:
        raw = _floats(values, self.name)
        missing = ~np.isfinite(raw)
        # A missing value takes the mean, so it scales to 0.
        scaled = ((np.where(missing, self.mean, raw) - self.mean) / self.std).astype(np.float32)
        if not self.flags_missing:
            return scaled
        return np.stack([scaled, missing.astype(np.float32)], axis=1)

    def _bag(self, values: pa.Array) -> dict[str, np.ndarray]:
        lists = _cast(values, pa.list_(_VALUE_TYPES[self.value_type]), self.name)
        lengths = np.asarray(pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        codes = self._codes(pc.list_flatten(lists))
        owners = np.repeat(np.arange(len(lengths)), lengths)
        positions = np.arange(len(codes)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        # Lists longer than the fitted width keep their last entries (last_n lists are oldest first).
        dropped = np.maximum(lengths - self.width, 0)
        kept = positions >= dropped[owners]
        padded = np.zeros((len(lengths), self.width), dtype=np.int64)
        padded[owners[kept], (positions - dropped[owners])[kept]] = codes[kept]
        return {self.name: padded, f"{self.name}_len": np.minimum(lengths, self.width)}


@dataclass(frozen=True)
class RowFeatureEncoder:
    """Fitted encodings of a table's row-feature columns (see the module docstring)."""

    features: tuple[RowFeature, ...]

    @classmethod
    def fit(
        cls, table: pa.Table, columns: Sequence[str], *, max_int_categories: int = MAX_INT_CATEGORIES
    ) -> RowFeatureEncoder:
        """Fit the encoding of ``columns`` of ``table`` (the training split)."""
        repeated = sorted({name for name in columns if list(columns).count(name) > 1})
        if repeated:
            raise InvalidInput(f"Row feature column(s) {repeated} are listed more than once.")
        missing = [name for name in columns if name not in table.column_names]
        if missing:
            raise InvalidInput(
                f"Row feature column(s) {missing} are not in the interaction table; its columns are "
                f"{table.column_names}."
            )
        return cls(tuple(_fit_column(name, table.column(name), max_int_categories) for name in columns))

    @property
    def columns(self) -> list[str]:
        """The columns it reads, in order."""
        return [feature.name for feature in self.features]

    @property
    def input_names(self) -> list[str]:
        """The model input keys it produces (bags add ``<name>_len``)."""
        return [name for feature in self.features for name in feature.input_names]

    def encode(self, data: RowData) -> dict[str, np.ndarray]:
        """Model input arrays, keyed by input name, for every row of ``data`` (a table or column → values)."""
        columns, rows = _columns_of(data, self.columns)
        encoded: dict[str, np.ndarray] = {}
        for feature in self.features:
            values = columns[feature.name]
            if len(values) != rows:
                raise InvalidInput(
                    f"Row feature {feature.name!r} has {len(values)} value(s) but other columns have {rows}; give "
                    "one value per row."
                )
            encoded.update(feature.encode(values))
        return encoded

    def to_json(self) -> str:
        """The fitted encoder as JSON text (what the model bundle stores as ``row_features.json``)."""
        body = {"format": _FORMAT, "features": [{**asdict(f), "vocabulary": list(f.vocabulary)} for f in self.features]}
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> RowFeatureEncoder:
        """The encoder :meth:`to_json` wrote."""
        try:
            body = json.loads(text)
            if body.get("format") != _FORMAT:
                raise ValueError(f"format {body.get('format')!r} is not {_FORMAT}")
            features = tuple(
                RowFeature(**{**entry, "vocabulary": tuple(entry.get("vocabulary", ()))}) for entry in body["features"]
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidInput(f"Not a row feature encoder written by recplane: {exc}") from exc
        bad = [f.name for f in features if f.kind not in ("categorical", "bag", "dense")]
        bad += [f.name for f in features if f.kind != "dense" and f.value_type not in _VALUE_TYPES]
        if bad:
            raise InvalidInput(f"Row feature encoder JSON has invalid feature(s) {bad}.")
        return cls(features)


def _fit_column(name: str, column: pa.ChunkedArray, max_int_categories: int) -> RowFeature:
    values = column.combine_chunks()
    data_type = values.type
    if pa.types.is_dictionary(data_type):
        values, data_type = values.cast(data_type.value_type), data_type.value_type
    value_type = _value_type(data_type)
    if value_type is not None:
        distinct = _distinct(values, value_type)
        if value_type != "int64" or len(distinct) <= max_int_categories:
            return RowFeature(name, "categorical", value_type, tuple(distinct.to_pylist()))
        return _fit_dense(name, values)
    if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type) or pa.types.is_null(data_type):
        return _fit_dense(name, values)
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        element_type = _value_type(data_type.value_type)
        if element_type is not None:
            lengths = pc.list_value_length(values).fill_null(0)
            width = max(int(pc.max(lengths).as_py() or 0), 1)
            distinct = _distinct(pc.list_flatten(values), element_type)
            return RowFeature(name, "bag", element_type, tuple(distinct.to_pylist()), width=width)
    raise InvalidInput(
        f"Row feature column {name!r} has type {data_type}, which is not a row feature type: use string, bool or "
        "int (categorical), float or int (dense), or list<string|int> (a bag, e.g. last_n)."
    )


def _value_type(data_type: pa.DataType) -> str | None:
    """The vocabulary type of a categorical Arrow type, or None when the type is not categorical."""
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "string"
    if pa.types.is_boolean(data_type):
        return "bool"
    if pa.types.is_integer(data_type):
        return "int64"
    return None


def _distinct(values: pa.Array, value_type: str) -> pa.Array:
    """Distinct non-null values, sorted: the same vocabulary whatever the row order."""
    distinct = pc.unique(values.cast(_VALUE_TYPES[value_type])).drop_null()
    return distinct.take(pc.sort_indices(distinct))


def _fit_dense(name: str, values: pa.Array) -> RowFeature:
    raw = _floats(values, name)
    finite = raw[np.isfinite(raw)]
    mean = float(finite.mean()) if len(finite) else 0.0
    std = float(finite.std()) if len(finite) else 0.0
    std = std if std > 0 and math.isfinite(std) else 1.0
    return RowFeature(name, "dense", mean=mean, std=std, flags_missing=len(finite) < len(raw))


def _floats(values: pa.Array, name: str) -> np.ndarray:
    """float64 values with NaN for nulls."""
    cast = _cast(values, pa.float64(), name)
    return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)


def _cast(values: pa.Array, target: pa.DataType, name: str) -> pa.Array:
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if values.type == target:
        return values
    try:
        return values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(
            f"Row feature {name!r}: values of type {values.type} cannot be read as {target}, the type it was "
            f"trained with ({exc})."
        ) from exc


def _columns_of(data: RowData, names: list[str]) -> tuple[dict[str, pa.Array], int]:
    """The named columns of a table or mapping as Arrow arrays, and the row count."""
    missing = [name for name in names if name not in (data.column_names if isinstance(data, pa.Table) else data)]
    if missing:
        raise InvalidInput(f"Row feature input lacks column(s) {missing}; the model reads {names}.")
    if isinstance(data, pa.Table):
        return {name: data.column(name).combine_chunks() for name in names}, data.num_rows
    columns = {name: _array(data[name], name) for name in names}
    rows = len(next(iter(columns.values()))) if columns else 0
    return columns, rows


def _array(values: Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray, name: str) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    try:
        return pa.array(values if isinstance(values, np.ndarray) else list(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise InvalidInput(f"Row feature {name!r}: the values are not one type ({exc}).") from exc
