"""The serving bundle: what a trained model needs at request time, written once after training, loaded by serving.

A bundle is the exported model folder (:mod:`recplane.training.export`: manifest, signature, inference form,
``item_vectors.npy`` for retrieval models) plus:

* ``user_ids.parquet`` / ``item_ids.parquet`` — the raw ids behind model ids: row ``i`` is model id ``i + 1``;
  model id 0 is padding and stands for "unknown" at request time;
* ``features/<entity>.<key>.npy`` — the item and user feature columns the model reads, encoded exactly as in
  training (:func:`~recplane.training.feature_tables.build_entity_features`), one row per model id, so a
  request gathers them with one index;
* ``interactions/`` — what the training data says per user and item: the (user, item) pairs seen, as sorted
  keys (for "exclude seen" rules), each user's items in time order (histories for SASRec, DIN and two-tower)
  and every item's interaction count (the popularity fallback);
* ``row_features.json`` — only for a ranker trained with per-row features: its
  :class:`~recplane.training.row_features.RowFeatureEncoder`;
* ``bundle.json`` — the bundle format and what it holds.

Arrays are plain ``.npy`` files opened memory-mapped, so loading a bundle over a large catalog is quick and the
pages a request never touches stay on disk. :meth:`ModelBundle.ranking_inputs` and
:meth:`ModelBundle.query_inputs` build the exact batch the exported graph reads (``manifest.inputs``) from model
ids, with NumPy gathers only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recplane.errors import InvalidInput
from recplane.training.export import FORMS, ExportedModel, InputSpec, export_model, load_exported

if TYPE_CHECKING:
    from recplane.models.base import RecModel
    from recplane.training.data import IdMap
    from recplane.training.row_features import RowFeatureEncoder
    from recplane.training.trainer import TrainResult

__all__ = [
    "BUNDLE_FORMAT",
    "IdIndex",
    "ModelBundle",
    "UserInteractions",
    "load_bundle",
    "write_bundle",
    "write_model_bundle",
]

BUNDLE_FORMAT = 1
BUNDLE_FILE = "bundle.json"
ROW_FEATURES_FILE = "row_features.json"
FEATURES_FOLDER = "features"
INTERACTIONS_FOLDER = "interactions"
Entity = Literal["user", "item"]


def write_bundle(
    result: TrainResult,
    folder: str | Path,
    *,
    interactions: pa.Table,
    item_features: pa.Table | None = None,
    user_features: pa.Table | None = None,
    row_features: RowFeatureEncoder | None = None,
    forms: Sequence[str] = FORMS,
) -> Path:
    """Export a run's model into ``folder`` with everything serving needs (see the module docstring).

    ``interactions`` and the feature tables are the ones the run trained on; ``row_features`` defaults to the
    encoder the trainer fitted, when the result carries one; ``forms``: the inference forms to try (fastest wins).
    """
    return write_model_bundle(
        result.model,
        folder,
        example_batch=result.example_batch or {},
        user_map=result.user_map,
        item_map=result.item_map,
        interactions=interactions,
        item_features=item_features,
        user_features=user_features,
        row_features=row_features if row_features is not None else result.row_encoder,
        forms=forms,
    )


def write_model_bundle(
    model: RecModel,
    folder: str | Path,
    *,
    example_batch: Mapping[str, Any],
    user_map: IdMap,
    item_map: IdMap,
    interactions: pa.Table,
    item_features: pa.Table | None = None,
    user_features: pa.Table | None = None,
    row_features: RowFeatureEncoder | None = None,
    forms: Sequence[str] = FORMS,
) -> Path:
    """Export ``model`` (ids per ``user_map``/``item_map``) with its serving data into ``folder``."""
    directory = Path(folder)
    manifest = export_model(model, directory, example_batch=example_batch, forms=forms)
    pq.write_table(pa.table({"user_id": user_map.values}), directory / "user_ids.parquet")
    pq.write_table(pa.table({"item_id": item_map.values}), directory / "item_ids.parquet")
    read = {spec.name for spec in manifest.inputs}
    features = {
        "item": _write_features(directory, "item", item_features, item_map, read),
        "user": _write_features(directory, "user", user_features, user_map, read),
    }
    users = user_map.encode(interactions.column("user_id"), what="user_id")
    items = item_map.encode(interactions.column("item_id"), what="item_id")
    built = UserInteractions.build(users, items, _times(interactions), user_map.num_embeddings, item_map.num_embeddings)
    built.save(directory / INTERACTIONS_FOLDER)
    if row_features is not None:
        (directory / ROW_FEATURES_FILE).write_text(row_features.to_json())
    body = {
        "format": BUNDLE_FORMAT,
        "kind": manifest.kind,
        "num_users": len(user_map),
        "num_items": len(item_map),
        "features": features,
        "interactions": int(interactions.num_rows),
        "row_features": row_features is not None,
    }
    (directory / BUNDLE_FILE).write_text(json.dumps(body, indent=2))
    return directory


def load_bundle(path: str | Path, *, form: str | None = None) -> ModelBundle:
    """Load a bundle folder: the exported model (its chosen form, or ``form``), id maps, features, interactions."""
    directory = Path(path)
    model = load_exported(directory, form=form)
    for name in ("user_ids.parquet", "item_ids.parquet"):
        if not (directory / name).is_file():
            raise InvalidInput(f"{directory} holds no {name}: it is an exported model, not a serving bundle.")
    body = json.loads((directory / BUNDLE_FILE).read_text()) if (directory / BUNDLE_FILE).is_file() else {}
    if body.get("format", BUNDLE_FORMAT) != BUNDLE_FORMAT:
        raise InvalidInput(
            f"{directory} is a bundle of format {body.get('format')}; this recplane reads format {BUNDLE_FORMAT}."
        )
    features = {
        entity: {key: _mapped(_feature_path(directory, entity, key)) for key in keys}
        for entity, keys in body.get("features", {}).items()
    }
    folder = directory / INTERACTIONS_FOLDER
    return ModelBundle(
        path=directory,
        model=model,
        users=IdIndex(pq.read_table(directory / "user_ids.parquet").column("user_id").combine_chunks()),
        items=IdIndex(pq.read_table(directory / "item_ids.parquet").column("item_id").combine_chunks()),
        user_features=features.get("user", {}),
        item_features=features.get("item", {}),
        interactions=UserInteractions.load(folder) if folder.is_dir() else None,
        row_features=_row_features(directory),
    )


class IdIndex:
    """Raw ids ↔ model ids of one entity (model id ``i + 1`` is raw value ``i``; 0 = unknown), searched in bulk.

    Raw ids are kept sorted in a NumPy array (int64, or UTF-8 bytes for string ids), so encoding a batch is one
    ``searchsorted`` whatever the catalog size, with no per-id Python beyond converting the request's values.
    """

    def __init__(self, values: pa.Array) -> None:
        self.values = values
        self.numeric = pa.types.is_integer(values.type)
        if self.numeric:
            keys = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)
        else:
            keys = np.array([str(value).encode() for value in values.to_pylist()], dtype=np.bytes_)
        self._keys = keys
        # IdMap sorts raw ids already; keep a permutation only for maps sorted some other way.
        self._order = None if _is_sorted(keys) else np.argsort(keys, kind="stable")
        if self._order is not None:
            self._keys = keys[self._order]

    def __len__(self) -> int:
        return len(self.values)

    @property
    def num_embeddings(self) -> int:
        """Known ids plus the padding id 0."""
        return len(self.values) + 1

    def encode(self, raw: Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Model ids (int64) of raw ids; unknown, null or unparseable ids are 0."""
        query, parsed = self._query(raw)
        if len(self._keys) == 0 or len(query) == 0:
            return np.zeros(len(query), dtype=np.int64)
        positions = np.minimum(np.searchsorted(self._keys, query), len(self._keys) - 1)
        found = (self._keys[positions] == query) & parsed
        ids = positions if self._order is None else self._order[positions]
        return np.where(found, ids + 1, 0).astype(np.int64)

    def decode(self, model_ids: np.ndarray) -> list[Any]:
        """Raw ids (Python values) of model ids ``>= 1``."""
        return self.decode_arrow(model_ids).to_pylist()

    def decode_arrow(self, model_ids: np.ndarray) -> pa.Array:
        """Raw ids of model ids ``>= 1`` as an Arrow array of the map's type."""
        return self.values.take(pa.array(np.asarray(model_ids, dtype=np.int64) - 1))

    def _query(self, raw: Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """The raw ids as an array comparable with the keys, and which of them could be read at all."""
        if isinstance(raw, pa.ChunkedArray):
            raw = raw.combine_chunks()
        if isinstance(raw, pa.Array):
            valid = np.asarray(raw.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            if self.numeric and pa.types.is_integer(raw.type):
                return np.asarray(raw.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64), valid
            raw = raw.to_pylist()
        if self.numeric:
            return _as_int64(raw)
        values = list(raw) if not isinstance(raw, np.ndarray) else raw.tolist()
        parsed = np.array([value is not None for value in values], dtype=bool)
        encoded = np.array([b"" if v is None else str(v).encode() for v in values], dtype=np.bytes_)
        return encoded.reshape(len(values)), parsed


def _as_int64(raw: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer ids from ints or numeric strings (JSON bodies carry either); anything else is unparseable."""
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "iu":
        return raw.astype(np.int64, copy=False), np.ones(len(raw), dtype=bool)
    try:
        values = np.asarray(raw, dtype=np.int64)
        if values.ndim == 1 and not any(isinstance(value, float | bool) for value in raw):
            return values, np.ones(len(values), dtype=bool)
    except (TypeError, ValueError, OverflowError):
        pass
    parsed = np.zeros(len(raw), dtype=bool)
    values = np.zeros(len(raw), dtype=np.int64)
    for index, value in enumerate(raw):
        number = _integer(value)
        if number is not None:
            values[index], parsed[index] = number, True
    return values, parsed


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _is_sorted(keys: np.ndarray) -> bool:
    return bool(len(keys) < 2 or np.all(keys[1:] > keys[:-1]))


@dataclass(frozen=True)
class UserInteractions:
    """What the training data holds per user: seen (user, item) pairs and items in time order, plus item counts.

    ``seen_keys`` are the distinct ``user * num_items + item`` pairs, sorted, so testing a whole ``[B, C]``
    candidate matrix is one ``searchsorted``; ``history_items[history_indptr[u]:history_indptr[u + 1]]`` are user
    ``u``'s items oldest first (repeats kept, as training histories keep them).
    """

    seen_keys: np.ndarray  # int64, sorted distinct user * num_items + item
    seen_indptr: np.ndarray  # int64 [num_users + 1]: user u's pairs are seen_keys[indptr[u]:indptr[u + 1]]
    history_indptr: np.ndarray  # int64 [num_users + 1]
    history_items: np.ndarray  # int32 or int64, time-ordered per user
    item_counts: np.ndarray  # int64 [num_items]: interactions per item (row 0, padding, is 0)
    num_items: int  # item model ids are 0 .. num_items - 1 (padding included)

    @classmethod
    def build(
        cls, users: np.ndarray, items: np.ndarray, times: np.ndarray | None, num_users: int, num_items: int
    ) -> UserInteractions:
        """From one model id pair per interaction (and its time, for the history order)."""
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        keys = (times, users) if times is not None else (users,)
        order = np.lexsort((np.arange(len(users)), *keys))
        counts = np.bincount(users, minlength=num_users)
        history_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        seen_keys = np.unique(users * num_items + items)
        seen_indptr = np.searchsorted(seen_keys, np.arange(num_users + 1, dtype=np.int64) * num_items)
        return cls(
            seen_keys=seen_keys,
            seen_indptr=seen_indptr.astype(np.int64),
            history_indptr=history_indptr,
            history_items=items[order].astype(np.int32 if num_items < 2**31 else np.int64),
            item_counts=np.bincount(items, minlength=num_items).astype(np.int64),
            num_items=num_items,
        )

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("seen_keys", "seen_indptr", "history_indptr", "history_items", "item_counts"):
            np.save(folder / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: Path) -> UserInteractions:
        arrays = {
            name: _mapped(folder / f"{name}.npy")
            for name in ("seen_keys", "seen_indptr", "history_indptr", "history_items", "item_counts")
        }
        return cls(**arrays, num_items=len(arrays["item_counts"]))

    @property
    def num_users(self) -> int:
        """User model ids are 0 .. num_users - 1 (padding included)."""
        return len(self.seen_indptr) - 1

    def seen_counts(self, users: np.ndarray) -> np.ndarray:
        """Distinct items each user has interacted with (0 for unknown users)."""
        users = self._known(users)
        return np.asarray(self.seen_indptr[users + 1] - self.seen_indptr[users], dtype=np.int64)

    def seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``[B, C]`` bool: has row ``b``'s user interacted with ``items[b, c]``? (Negative items never.)"""
        if len(self.seen_keys) == 0 or items.size == 0:
            return np.zeros(items.shape, dtype=bool)
        keys = self._known(users)[:, None] * self.num_items + np.maximum(items, 0)
        positions = np.minimum(np.searchsorted(self.seen_keys, keys), len(self.seen_keys) - 1)
        return (np.asarray(self.seen_keys)[positions] == keys) & (items > 0)

    def recent(self, users: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``([B, width], [B])``: each user's latest ``width`` items, oldest first, right-padded with 0."""
        users = self._known(users)
        ends = np.asarray(self.history_indptr[users + 1], dtype=np.int64)
        lengths = np.minimum(ends - np.asarray(self.history_indptr[users], dtype=np.int64), width)
        columns = np.arange(width, dtype=np.int64)
        valid = columns[None, :] < lengths[:, None]
        positions = np.where(valid, (ends - lengths)[:, None] + columns[None, :], 0)
        if len(self.history_items) == 0:
            return np.zeros((len(users), width), dtype=np.int64), lengths
        return np.where(valid, self.history_items[positions], 0).astype(np.int64), lengths

    def _known(self, users: np.ndarray) -> np.ndarray:
        """User ids outside this table (a ranker's users mapped elsewhere) read as the empty padding user."""
        users = np.asarray(users, dtype=np.int64)
        return np.where((users >= 0) & (users < self.num_users), users, 0)


@dataclass
class ModelBundle:
    """A loaded bundle: the exported model, raw ↔ model ids, request-time features and interaction data."""

    path: Path
    model: ExportedModel
    users: IdIndex
    items: IdIndex
    user_features: dict[str, np.ndarray] = field(default_factory=dict)
    item_features: dict[str, np.ndarray] = field(default_factory=dict)
    interactions: UserInteractions | None = None
    row_features: RowFeatureEncoder | None = None

    @property
    def kind(self) -> str:
        """``retrieval`` or ``ranking``."""
        return self.model.manifest.kind

    @property
    def inputs(self) -> list[InputSpec]:
        """What the exported graph reads, in order."""
        return self.model.manifest.inputs

    @property
    def item_vectors(self) -> np.ndarray:
        """``[num_items + 1, D]`` float32 item vectors of a retrieval model (row = model id; row 0 = padding)."""
        return self.model.item_vectors

    def query_inputs(self, user_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The batch a retrieval model's query graph reads for these users (model ids; 0 = unknown)."""
        users = np.asarray(user_ids, dtype=np.int64)
        return {spec.name: self._input(spec, users, None, None) for spec in self.inputs}

    def query_vectors(self, user_ids: np.ndarray) -> np.ndarray:
        """``[B, D]`` float32 query vectors of a retrieval model for these users, in one call."""
        return np.asarray(self.model.query_vectors(self.query_inputs(user_ids)), dtype=np.float32)

    def ranking_inputs(
        self,
        user_model_ids: np.ndarray,
        item_model_ids: np.ndarray,
        row_features: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """The exact batch the exported ranker reads for (user, item) rows given as model ids.

        ``row_features``: encoded per-row inputs (:meth:`RowFeatureEncoder.encode`), one row per pair.
        """
        users = np.asarray(user_model_ids, dtype=np.int64)
        items = np.asarray(item_model_ids, dtype=np.int64)
        if users.shape != items.shape or users.ndim != 1:
            raise InvalidInput(f"Give one user and one item per row; got shapes {users.shape} and {items.shape}.")
        return {spec.name: self._input(spec, users, items, row_features) for spec in self.inputs}

    def rank(
        self,
        user_model_ids: np.ndarray,
        item_model_ids: np.ndarray,
        row_features: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-task probabilities of a ranker for (user, item) rows, in one batched call."""
        return self.model.predict(self.ranking_inputs(user_model_ids, item_model_ids, row_features))

    def _input(
        self,
        spec: InputSpec,
        users: np.ndarray,
        items: np.ndarray | None,
        row_features: Mapping[str, np.ndarray] | None,
    ) -> np.ndarray:
        name = spec.name
        if name == "user_id":
            return users
        if name == "item_id" and items is not None:
            return items
        if name in ("history", "history_len"):
            return self._history(users, spec)[0 if name == "history" else 1]
        if name in self.item_features and items is not None:
            return np.asarray(self.item_features[name][items])
        if name in self.user_features:
            return np.asarray(self.user_features[name][users])
        if row_features is not None and name in row_features:
            return np.asarray(row_features[name])
        raise InvalidInput(
            f"The model in {self.path} reads {name!r}, which this bundle cannot supply"
            + (" (a row feature: pass row_features)" if self._is_row_feature(name) else "")
            + f"; it reads {[s.name for s in self.inputs]}.",
            details={"missing": name},
        )

    def _history(self, users: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
        if self.interactions is None:
            raise InvalidInput(f"The model in {self.path} reads user histories, but the bundle holds no interactions.")
        width = next((s.shape[1] for s in self.inputs if s.name == "history"), None)
        if not isinstance(width, int):
            raise InvalidInput(f"The model in {self.path} declares no fixed history width ({spec.shape}).")
        return self.interactions.recent(users, width)

    def _is_row_feature(self, name: str) -> bool:
        return self.row_features is not None and name in self.row_features.input_names


def _write_features(directory: Path, entity: Entity, table: pa.Table | None, ids: IdMap, read: set[str]) -> list[str]:
    """Save the encoded feature columns of one entity that the model reads; returns their keys."""
    if table is None:
        return []
    from recplane.training.feature_tables import build_entity_features

    encoded = build_entity_features(table, f"{entity}_id", ids, what=f"{entity} feature")
    arrays = {name: values.numpy() for name, values in encoded.categorical.items()}
    for name, (bag, lengths) in encoded.bags.items():
        arrays[name], arrays[f"{name}_len"] = bag.numpy(), lengths.numpy()
    arrays.update({name: values.numpy() for name, values in encoded.dense.items()})
    kept = [key for key in arrays if key in read]
    for key in kept:
        path = _feature_path(directory, entity, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, arrays[key])
    return kept


def _mapped(path: Path) -> np.ndarray:
    """A memory-mapped ``.npy`` as a plain ndarray view of the map: every gather on a ``np.memmap`` pays for the
    subclass's bookkeeping, a few µs per request path gather."""
    return np.asarray(np.load(path, mmap_mode="r"))


def _feature_path(directory: Path, entity: str, key: str) -> Path:
    return directory / FEATURES_FOLDER / f"{entity}.{key}.npy"


def _times(table: pa.Table) -> np.ndarray | None:
    if "ts" not in table.column_names:
        return None
    column = table.column("ts")
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us"))
    return np.asarray(column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _row_features(directory: Path) -> RowFeatureEncoder | None:
    path = directory / ROW_FEATURES_FILE
    if not path.is_file():
        return None
    from recplane.training.row_features import RowFeatureEncoder

    return RowFeatureEncoder.from_json(path.read_text())
