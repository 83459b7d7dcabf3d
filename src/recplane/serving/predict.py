"""Batch inference (``recplane predict``): a deployment's top-k for every user of a dataset, as a dataset version.

Users are read from one column of a dataset (or given as an Arrow array), deduplicated in first-seen order, and
run through the deployment's :class:`~recplane.serving.recommender.Recommender` ``chunk`` users at a time — the
same pipeline as online serving, so batch and online answers agree. Inference memory is bounded by the chunk;
the answers are kept as compact Arrow columns (about 40 bytes per row) and committed once, with
``DatasetService.replace``, so each run is exactly one new version of the output dataset holding exactly that
run's rows (earlier runs stay readable by time travel). The output dataset is created with a declared schema
when it does not exist; its commit records the deployment, the model versions and the users' dataset version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from recplane.auth import ADMIN, Principal
from recplane.errors import InvalidInput, NotFound
from recplane.serving.spec import DeploymentSpec

if TYPE_CHECKING:
    from recplane.runtime import Runtime
    from recplane.serving.recommender import Recommender

__all__ = ["PredictResult", "output_spec", "predict", "rich_progress"]

DEFAULT_CHUNK = 4096
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
        parts: list[pa.Table] = []
        done = 0
        for start in range(0, len(ids), chunk):
            part = model.recommend_table(ids.slice(start, chunk), k)
            parts.append(part)
            done = min(start + chunk, len(ids))
            if progress is not None:
                progress(done, len(ids))
        item_type = model.retrieval.items.values.type
        versions = model.model_versions
    finally:
        if recommender is None:
            model.close()
    rows = _output_rows(parts, ids.type, item_type, versions)
    _ensure_output(runtime, out, ids.type, item_type, principal)
    metadata = {
        "deployment": spec.name,
        "model_versions": versions,
        "k": k,
        "users_dataset": users_dataset,
        "users_version": users_version,
    }
    version = runtime.datasets.replace(out, rows, principal=principal, metadata={"predict": metadata})
    fallback_users = _fallback_users(rows)
    return PredictResult(
        deployment=spec.name,
        out=out,
        version=version,
        users=len(ids),
        rows=rows.num_rows,
        fallback_users=fallback_users,
        seconds=time.perf_counter() - started,
        model_versions=versions,
        users_dataset=users_dataset,
        users_version=users_version,
    )


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


def _output_rows(
    parts: list[pa.Table], user_type: pa.DataType, item_type: pa.DataType, versions: dict[str, str]
) -> pa.Table:
    from recplane.serving.recommender import recommendation_schema

    rows = pa.concat_tables(parts) if parts else recommendation_schema(user_type, item_type).empty_table()
    count = rows.num_rows
    now = datetime.now(UTC)
    rows = rows.append_column("retrieval_model", pa.repeat(pa.scalar(versions.get("retrieval"), pa.string()), count))
    rows = rows.append_column("ranking_model", pa.repeat(pa.scalar(versions.get("ranking"), pa.string()), count))
    return rows.append_column("predicted_at", pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), count))


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
