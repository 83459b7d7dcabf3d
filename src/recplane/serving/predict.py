"""Batch inference (``recplane predict``): a deployment's top-k for every user of a dataset, as a dataset version.

Users are read from one column of a dataset (or given as an Arrow array), deduplicated in first-seen order, and
run through the deployment's :class:`~recplane.serving.recommender.Recommender` ``chunk`` users at a time — the
same pipeline as online serving, so batch and online answers agree.

Memory stays bounded however many users there are: each chunk's answers (:class:`PredictionStream`) are appended
to a staging Parquet file in a temporary folder as soon as they are computed, one row group per chunk, and the
staged file then streams into ``DatasetService.replace`` as a RecordBatchReader, so a run holds the users' ids,
one chunk of answers and the writers' buffers, never every answer. Staging rather than feeding the Delta writer
straight from the recommender: the writer pulls batches on its own runtime's threads, where the recommender's
code (online feature lookups, anything reading a dataset) must not run, and a run whose inference fails never
touches the output dataset. The commit happens once, after the last batch: each run is exactly one new version
of the output dataset holding exactly that run's rows (a failed run writes none, and earlier runs stay readable
by time travel). The output dataset is created with a declared schema when it does not exist; its commit records
the deployment, the model versions and the users' dataset version.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recplane.auth import ADMIN, Principal
from recplane.errors import InvalidInput, NotFound
from recplane.serving.spec import DeploymentSpec

if TYPE_CHECKING:
    from recplane.runtime import Runtime
    from recplane.serving.recommender import Recommender

__all__ = ["PredictResult", "PredictionStream", "output_spec", "predict", "rich_progress"]

DEFAULT_CHUNK = 4096
STAGED_BATCH_ROWS = 65_536  # rows per batch read back from the staging file into the dataset writer
_PREDICTED_AT = pa.timestamp("us", tz="UTC")
Progress = Callable[[int, int], None]
"""Told ``(users done, users in all)`` after each chunk."""


@dataclass(frozen=True)
class PredictResult:
    """What a batch inference run wrote."""

    deployment: str
    out: str
    version: int
    users: int
    rows: int
    fallback_users: int
    seconds: float
    model_versions: dict[str, str] = field(default_factory=dict)
    users_dataset: str | None = None
    users_version: int | None = None


def predict(
    runtime: Runtime,
    spec: DeploymentSpec,
    *,
    users: str | pa.Array | pa.ChunkedArray,
    out: str,
    k: int | None = None,
    users_column: str = "user_id",
    chunk: int = DEFAULT_CHUNK,
    principal: Principal = ADMIN,
    progress: Progress | None = None,
    recommender: Recommender | None = None,
) -> PredictResult:
    """Write ``spec``'s top-``k`` for every user of ``users`` (a dataset name, or ids) as a new version of ``out``."""
    from recplane.serving.recommender import Recommender

    k = spec.k if k is None else k
    if k < 1 or chunk < 1:
        raise InvalidInput(f"k and chunk must be >= 1; got k={k}, chunk={chunk}.")
    started = time.perf_counter()
    ids, users_dataset, users_version = _user_ids(runtime, users, users_column, principal)
    model = recommender or Recommender.load(spec, runtime)
    try:
        stream = PredictionStream(model, ids, k, chunk=chunk, progress=progress)
        metadata = {
            "deployment": spec.name,
            "model_versions": stream.model_versions,
            "k": k,
            "users_dataset": users_dataset,
            "users_version": users_version,
        }
        with tempfile.TemporaryDirectory(prefix="recplane-predict-") as scratch:
            staged = stream.stage(Path(scratch) / "predictions.parquet")
            _ensure_output(runtime, out, ids.type, stream.item_type, principal)
            version = runtime.datasets.replace(out, staged, principal=principal, metadata={"predict": metadata})
    finally:
        if recommender is None:
            model.close()
    return PredictResult(
        deployment=spec.name,
        out=out,
        version=version,
        users=len(ids),
        rows=stream.rows,
        fallback_users=stream.fallback_users,
        seconds=time.perf_counter() - started,
        model_versions=stream.model_versions,
        users_dataset=users_dataset,
        users_version=users_version,
    )


class PredictionStream:
    """Every user's top-``k``, computed ``chunk`` users at a time as it is iterated (one table per chunk).

    Nothing is computed ahead of the consumer, so iterating holds one chunk's answers at a time; ``rows``,
    ``fallback_users`` and ``chunks`` count what has been produced so far.
    """

    def __init__(
        self, model: Recommender, user_ids: pa.Array, k: int, *, chunk: int = DEFAULT_CHUNK, progress: Progress | None
    ) -> None:
        if k < 1 or chunk < 1:
            raise InvalidInput(f"k and chunk must be >= 1; got k={k}, chunk={chunk}.")
        self.model, self.user_ids, self.k, self.chunk, self.progress = model, user_ids, k, chunk, progress
        self.item_type = model.retrieval.items.values.type
        self.model_versions = model.model_versions
        self.rows = self.fallback_users = self.chunks = 0

    @property
    def schema(self) -> pa.Schema:
        """The columns of every batch: :func:`recommendation_schema` plus the run's models and time."""
        from recplane.serving.recommender import recommendation_schema

        run = [("retrieval_model", pa.string()), ("ranking_model", pa.string()), ("predicted_at", _PREDICTED_AT)]
        return pa.schema([*recommendation_schema(self.user_ids.type, self.item_type), *run])

    def stage(self, path: Path) -> pa.RecordBatchReader:
        """Compute every chunk into the Parquet file ``path`` (one row group each, written as it comes); a reader
        streaming the file back in bounded batches, for ``DatasetService.replace``."""
        with pq.ParquetWriter(path, self.schema) as writer:
            for part in self:
                writer.write_table(part)
        batches = pq.ParquetFile(path).iter_batches(batch_size=STAGED_BATCH_ROWS)
        return pa.RecordBatchReader.from_batches(self.schema, batches)

    def __iter__(self) -> Iterator[pa.Table]:
        schema, total = self.schema, len(self.user_ids)
        run = {
            "retrieval_model": pa.scalar(self.model_versions.get("retrieval"), pa.string()),
            "ranking_model": pa.scalar(self.model_versions.get("ranking"), pa.string()),
            "predicted_at": pa.scalar(datetime.now(UTC), _PREDICTED_AT),
        }
        for start in range(0, total, self.chunk):
            part = self.model.recommend_table(self.user_ids.slice(start, self.chunk), self.k)
            for name, value in run.items():
                part = part.append_column(name, pa.repeat(value, part.num_rows))
            self.rows += part.num_rows
            self.fallback_users += _fallback_users(part)  # users are distinct, so per-chunk counts add up
            self.chunks += 1
            if self.progress is not None:
                self.progress(min(start + self.chunk, total), total)
            yield part.cast(schema)


def output_spec(name: str, user_type: pa.DataType, item_type: pa.DataType) -> dict[str, Any]:
    """The declared schema of a predictions dataset."""
    from recplane.lake.spec import type_string

    return {
        "name": name,
        "description": "Top-k recommendations per user written by `recplane predict`.",
        "event_time": "predicted_at",
        "columns": {
            "user_id": {"type": type_string(user_type), "nullable": False},
            "rank": {"type": "int32", "nullable": False, "description": "1 = best."},
            "item_id": {"type": type_string(item_type), "nullable": False},
            "score": {"type": "float32", "nullable": False, "description": "Final score (ranker and boosts)."},
            "retrieval_score": {"type": "float32", "description": "The retrieval model's score."},
            "retrieval_model": {"type": "string", "nullable": False, "description": "name:version"},
            "ranking_model": {"type": "string", "description": "name:version, null without a ranker."},
            "fallback": {"type": "string", "description": "Null, or the fallback served and why."},
            "predicted_at": {"type": "timestamp", "nullable": False},
        },
    }


def _user_ids(
    runtime: Runtime, users: str | pa.Array | pa.ChunkedArray, column: str, principal: Principal
) -> tuple[pa.Array, str | None, int | None]:
    """Distinct user ids in first-seen order, and the dataset and version they came from."""
    if isinstance(users, str):
        info = runtime.datasets.get(users, principal=principal)
        columns = list(info.spec.get("columns", {}))
        if column not in columns:
            raise InvalidInput(
                f"Dataset {users!r} has no column {column!r}; its columns are {columns}. Name the "
                "user id column with users_column (--users-column)."
            )
        table = runtime.datasets.read(users, principal=principal, version=info.current_version, columns=[column])
        values, name, version = table.column(column), users, info.current_version
    else:
        values, name, version = users, None, None
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else pa.array(values)
    array = array.drop_null()
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    if not (pa.types.is_integer(array.type) or pa.types.is_string(array.type)):
        raise InvalidInput(f"User ids must be integers or strings; column {column!r} holds {array.type}.")
    if pa.types.is_integer(array.type):
        array = array.cast(pa.int64())
    return _distinct_in_order(array), name, version


def _distinct_in_order(array: pa.Array) -> pa.Array:
    """The distinct values of ``array`` in the order they first appear."""
    table = pa.table({"id": array, "row": pa.array(range(len(array)), pa.int64())})
    firsts = table.group_by("id", use_threads=False).aggregate([("row", "min")]).column("row_min").combine_chunks()
    return array.take(firsts.take(pc.array_sort_indices(firsts)))


def _ensure_output(
    runtime: Runtime, out: str, user_type: pa.DataType, item_type: pa.DataType, principal: Principal
) -> None:
    """Create the output dataset with the predictions schema unless it exists."""
    try:
        runtime.datasets.get(out, principal=principal)
    except NotFound:
        runtime.datasets.create(output_spec(out, user_type, item_type), principal=principal)


def _fallback_users(rows: pa.Table) -> int:
    served = rows.filter(pc.is_valid(rows.column("fallback")))
    return len(pc.unique(served.column("user_id"))) if served.num_rows else 0


@contextmanager
def rich_progress(description: str = "predict") -> Iterator[Progress]:
    """A Rich progress bar over users, stopped however the run ends."""
    from rich import progress as bars

    display = bars.Progress(
        "[progress.description]{task.description}",
        bars.BarColumn(),
        bars.MofNCompleteColumn(),
        bars.TimeElapsedColumn(),
        bars.TimeRemainingColumn(),
        transient=False,
    )
    task = display.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        display.update(task, completed=done, total=total)

    with display:
        yield update
