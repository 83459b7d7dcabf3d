"""The ingestion service: validate any input against a dataset's spec and commit it once per batch id.

``ingest`` blocks until the batch is durably committed; ``submit`` returns a future and ``ingest_async``
awaits it without blocking an event loop. Small inputs are validated on the caller's thread and handed to
the dataset's :class:`~recplane.ingest.writer.TableWriter`, which merges them with other callers' batches
into few commits. Inputs of ``group_commit_max_rows`` rows or more (a 10M-row Parquet file) stream through
validation straight into one commit, never whole in memory.

Idempotency: a batch id seen before answers the original counts and version with ``duplicate=True`` and
writes nothing, also after a restart (the catalog remembers, and commits the catalog missed in a crash are
recovered from the Delta history).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import pyarrow as pa
from deltalake import Transaction

from recplane.auth import ADMIN, Principal
from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.errors import BackendUnavailable, InvalidInput, PayloadTooLarge
from recplane.ingest.ledger import BatchLedger, CommitOutcome
from recplane.ingest.result import MAX_REASON_SAMPLES, IngestResult, RejectedRow
from recplane.ingest.sources import Chunk, IngestSource, Mode, RowChunk, read_input
from recplane.ingest.validation import DEAD_LETTER_SCHEMA, Validated, Validator, dead_letters
from recplane.ingest.writer import BulkWrite, TableWriter
from recplane.lake.datasets import REJECTED_SUFFIX, OpenDataset, rejected_name
from recplane.lake.table import DeltaDataset

__all__ = ["DatasetAccess", "IngestService"]

log = logging.getLogger(__name__)

_MAX_BATCH_ID = 256
# How long a dataset's spec, validator and writer are reused without asking the catalog again. Changes made
# through this process's DatasetService drop them at once; a change made by another process (a server replica, a
# CLI on the same catalog) is seen within this long. Schema evolution only ever widens what a dataset accepts, and
# the writer commits against the table's current schema, so a stale spec never lets in a row the new one refuses.
SPEC_CACHE_SECONDS = 1.0
# Bodies up to this size are parsed and validated on the caller's event loop (well under a millisecond): a hop to
# a worker thread would cost more than the work. Larger ones go to a thread so the loop keeps answering.
INLINE_BODY_BYTES = 256 * 1024
T = TypeVar("T")
R = TypeVar("R")


class DatasetAccess(Protocol):
    """What ingestion needs from the dataset service (``recplane.lake.DatasetService``)."""

    def open(self, name: str, *, principal: Principal) -> OpenDataset:
        """The dataset's info, current spec and Delta handle (raises NotFound / Forbidden)."""
        ...

    def add_spec_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` whenever this service changes the spec of dataset ``name``."""
        ...

    def maybe_compact(self, name: str) -> object:
        """Compact ``name`` if it has many small files."""
        ...


@dataclass
class _Rejections:
    """Rejected rows gathered while validating: dead-letter text, reasons and the first samples."""

    raw: list[str | None] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    samples: list[RejectedRow] = field(default_factory=list)

    def add(self, validated: Validated) -> None:
        self.raw.extend(validated.rejected_raw)
        self.reasons.extend(validated.rejected_reasons)
        room = MAX_REASON_SAMPLES - len(self.samples)
        pairs = zip(validated.rejected_rows[:room], validated.rejected_reasons[:room], strict=True)
        self.samples.extend(RejectedRow(row=row, reason=reason) for row, reason in pairs)


def _chain(future: Future[T], convert: Callable[[T], R]) -> Future[R]:
    """A future resolving to ``convert(result)`` of ``future`` (or to its error)."""
    chained: Future[R] = Future()

    def forward(done: Future[T]) -> None:
        error = done.exception()
        if error is not None:
            chained.set_exception(error)
            return
        try:
            chained.set_result(convert(done.result()))
        except Exception as exc:
            chained.set_exception(exc)

    future.add_done_callback(forward)
    return chained


_NO_DEAD_LETTERS = DEAD_LETTER_SCHEMA.empty_table()


@dataclass(frozen=True)
class _Target:
    """What submitting to one dataset needs, reused for ``SPEC_CACHE_SECONDS``."""

    opened: OpenDataset
    writer: TableWriter
    validator: Validator
    checked_at: float


def _resolved(value: T) -> Future[T]:
    future: Future[T] = Future()
    future.set_result(value)
    return future


class IngestService:
    """Validates and commits ingestion batches for every dataset of one catalog."""

    def __init__(self, catalog: Catalog, datasets: DatasetAccess, settings: Settings) -> None:
        self._catalog = catalog
        self._datasets = datasets
        self._settings = settings
        self._ledger = BatchLedger(catalog)
        self._writers: dict[str, TableWriter] = {}
        self._validators: dict[tuple[str, str], Validator] = {}
        self._targets: dict[str, _Target] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._commit_listeners: list[Callable[[str, int], None]] = []
        datasets.add_spec_listener(self._forget_target)

    def add_commit_listener(self, listener: Callable[[str, int], None]) -> None:
        """Call ``listener(dataset, version)`` after each commit that appended rows (on the writer's thread: keep
        it short; an exception it raises is logged, never passed to the ingesting caller)."""
        self._commit_listeners.append(listener)

    def ingest(
        self,
        name: str,
        data: Any,
        *,
        principal: Principal,
        batch_id: str | None = None,
        source: str = "sdk",
    ) -> IngestResult:
        """Validate ``data`` and append it to dataset ``name``; returns once the rows are committed."""
        return self.submit(name, data, principal=principal, batch_id=batch_id, source=source).result()

    async def ingest_async(
        self,
        name: str,
        data: Any,
        *,
        principal: Principal,
        batch_id: str | None = None,
        source: str = "http",
    ) -> IngestResult:
        """Like :meth:`ingest` for event loops: the commit is awaited; parsing runs on a worker thread unless the
        input is a small body for a dataset whose spec is at hand (then on the loop: the hop would cost more)."""
        if self._submits_inline(name, data):
            future = self.submit(name, data, principal=principal, batch_id=batch_id, source=source)
        else:
            future = await asyncio.to_thread(
                self.submit, name, data, principal=principal, batch_id=batch_id, source=source
            )
        return await asyncio.wrap_future(future)

    def _submits_inline(self, name: str, data: Any) -> bool:
        """Whether submitting ``data`` to ``name`` needs no I/O and little CPU (no catalog query, no new writer)."""
        if not isinstance(data, bytes) or len(data) > INLINE_BODY_BYTES:
            return False
        target = self._targets.get(name)
        return target is not None and time.monotonic() - target.checked_at < SPEC_CACHE_SECONDS

    def submit(
        self,
        name: str,
        data: Any,
        *,
        principal: Principal,
        batch_id: str | None = None,
        source: str = "sdk",
        transaction: Transaction | None = None,
    ) -> Future[IngestResult]:
        """Validate now and queue the commit; the future resolves after the commit (errors raise here).

        ``transaction`` (for stream consumers) records a stream position in the same Delta commit.
        """
        if isinstance(data, bytes | bytearray | memoryview) and len(data) > self._settings.max_request_bytes:
            raise PayloadTooLarge(
                f"The body is {len(data):,} bytes; the limit is {self._settings.max_request_bytes:,} "
                "(max_request_bytes). Split it into smaller batches."
            )
        if name.endswith(REJECTED_SUFFIX):
            raise InvalidInput(f"{name!r} is a dead-letter dataset, written only by recplane's validation.")
        target = self._target(name, principal)
        opened, writer, validator = target.opened, target.writer, target.validator
        key = self._batch_id(batch_id)
        # A repeated batch id is answered by the writer, which checks all ids of a group in one query.
        received = datetime.now(UTC)
        stream = read_input(data)
        head, rest = self._peek(stream)
        submission = _Submission(
            validator=validator,
            writer=writer,
            opened=opened,
            batch_id=key,
            source=source,
            received_at=received,
            author=principal.name,
            idempotent=batch_id is not None,
            mode=stream.mode,
        )
        future = submission.small(head, transaction) if rest is None else submission.bulk(itertools.chain(head, rest))
        result = _chain(future, lambda outcome: self._result(name, outcome, submission.rejections.samples))
        if self._commit_listeners:
            result.add_done_callback(lambda done: self._tell_listeners(name, done))
        return result

    def _tell_listeners(self, name: str, done: Future[IngestResult]) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        outcome = done.result()
        if outcome.accepted == 0 or outcome.duplicate or outcome.version is None:
            return
        for listener in self._commit_listeners:
            try:
                listener(name, outcome.version)
            except Exception:
                log.exception("A commit listener failed for dataset %s", name)

    def transaction_version(self, name: str, app_id: str, *, principal: Principal) -> int | None:
        """The newest Delta transaction version ``app_id`` committed to ``name`` (a stream position)."""
        opened = self._datasets.open(name, principal=principal)
        return DeltaDataset(opened.table.uri).table.transaction_version(app_id)

    def close(self) -> None:
        """Commit everything queued and stop every writer thread."""
        with self._lock:
            self._closed = True
            writers = list(self._writers.values())
            self._writers.clear()
            self._targets.clear()
        for writer in writers:
            writer.close()


    def writer(self, name: str, *, principal: Principal = ADMIN) -> TableWriter:
        """The writer of dataset ``name`` (started on first use)."""
        return self._writer(self._datasets.open(name, principal=principal))

    def _batch_id(self, batch_id: str | None) -> str:
        if batch_id is None:
            return f"auto-{uuid.uuid4().hex}"
        if not batch_id or len(batch_id) > _MAX_BATCH_ID:
            raise InvalidInput(f"A batch id must be 1 to {_MAX_BATCH_ID} characters, not {len(batch_id)}.")
        return batch_id

    def _peek(self, stream: IngestSource) -> tuple[list[Chunk], Iterator[Chunk] | None]:
        """Read up to ``group_commit_max_rows`` rows: the rest (None if there is none) streams as bulk."""
        limit = self._settings.group_commit_max_rows
        if stream.num_rows is not None and stream.num_rows < limit:
            return list(stream.chunks), None
        head: list[Chunk] = []
        rows = 0
        for chunk in stream.chunks:
            head.append(chunk)
            rows += len(chunk) if isinstance(chunk, RowChunk) else chunk.num_rows
            if rows >= limit:
                return head, stream.chunks
        return head, None

    def _target(self, name: str, principal: Principal) -> _Target:
        """The dataset's spec, writer and validator: cached for ``SPEC_CACHE_SECONDS``, the team checked each time."""
        target = self._targets.get(name)
        if target is not None and time.monotonic() - target.checked_at < SPEC_CACHE_SECONDS:
            principal.require(target.opened.info.team, f"Dataset {name!r}")  # as DatasetService.open words it
            return target
        checked_at = time.monotonic()
        opened = self._datasets.open(name, principal=principal)
        if target is not None and target.opened is opened and target.writer.uri == opened.table.uri:
            target = replace(target, checked_at=checked_at)
        else:
            target = _Target(opened, self._writer(opened), self._validator(opened), checked_at)
        with self._lock:
            if not self._closed:
                self._targets[name] = target
        return target

    def _forget_target(self, name: str) -> None:
        """The spec of ``name`` changed in this process: the next submit reads it again."""
        with self._lock:
            self._targets.pop(name, None)

    def _writer(self, opened: OpenDataset) -> TableWriter:
        name = opened.info.name
        with self._lock:
            if self._closed:
                raise BackendUnavailable("This ingestion service is closed; open a new client.")
            writer = self._writers.get(name)
            if writer is not None and writer.uri == opened.table.uri:
                return writer
            dead = self._datasets.open(rejected_name(name), principal=ADMIN)
            writer = TableWriter(
                name,
                DeltaDataset(opened.table.uri),
                DeltaDataset(dead.table.uri),
                target=self._datasets,
                ledger=self._ledger,
                settings=self._settings,
                rejected_name=dead.info.name,
            )
            stale = self._writers.get(name)
            self._writers[name] = writer
        if stale is not None:
            stale.close()
        return writer

    def _validator(self, opened: OpenDataset) -> Validator:
        spec = opened.spec
        key = (opened.info.name, spec.model_dump_json(include={"columns"}))
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = Validator(spec)
        return validator

    @staticmethod
    def _result(name: str, outcome: CommitOutcome, samples: list[RejectedRow]) -> IngestResult:
        return IngestResult(
            dataset=name,
            batch_id=outcome.batch_id,
            accepted=outcome.accepted,
            rejected=outcome.rejected,
            version=outcome.version,
            rejected_version=outcome.rejected_version,
            duplicate=outcome.duplicate,
            reasons=[] if outcome.duplicate else samples,
        )


@dataclass
class _Submission:
    """One ingestion call on its way to the writer."""

    validator: Validator
    writer: TableWriter
    opened: OpenDataset
    batch_id: str
    source: str
    received_at: datetime
    author: str
    idempotent: bool
    mode: Mode
    rejections: _Rejections = field(default_factory=_Rejections)
    _offset: int = 0

    def validate(self, chunk: Chunk) -> pa.Table:
        """Validate one chunk, keep its rejections, and return its accepted rows."""
        if isinstance(chunk, RowChunk):
            validated = self.validator.validate_rows(chunk)
            self._offset = chunk.offset + len(chunk)
        else:
            validated = self.validator.validate_batch(chunk, mode=self.mode, offset=self._offset)
            self._offset += chunk.num_rows
        self.rejections.add(validated)
        return validated.accepted

    def dead_letters(self) -> pa.Table:
        """The rejected rows in the dead-letter schema."""
        if not self.rejections.reasons:
            return _NO_DEAD_LETTERS  # most batches: tables are immutable, so one empty table serves them all
        return dead_letters(
            self.rejections.raw,
            self.rejections.reasons,
            batch_id=self.batch_id,
            source=self.source,
            received_at=self.received_at,
        )

    def small(self, chunks: list[Chunk], transaction: Transaction | None) -> Future[CommitOutcome]:
        """Validate everything now and queue it for a group commit."""
        accepted = [self.validate(chunk) for chunk in chunks]
        if len(accepted) == 1:
            table = accepted[0]
        else:
            table = pa.concat_tables(accepted) if accepted else self.validator.storage.empty_table()
        dead = self.dead_letters()
        if table.num_rows == 0 and dead.num_rows == 0 and transaction is None:
            return _resolved(CommitOutcome(self.batch_id, 0, 0, None))
        return self.writer.submit(
            self.batch_id,
            table,
            dead,
            schema_version=self.opened.info.schema_version,
            author=self.author,
            transaction=transaction,
            idempotent=self.idempotent,
            dedup_key=tuple(self.opened.spec.dedup_key),
        )

    def bulk(self, chunks: Iterator[Chunk]) -> Future[CommitOutcome]:
        """Stream the chunks through validation into one commit of their own."""
        batches = (batch for chunk in chunks for batch in self.validate(chunk).to_batches() if batch.num_rows)
        job = BulkWrite(
            batch_id=self.batch_id,
            schema=self.validator.storage,
            batches=batches,
            rejected=self.dead_letters,
            schema_version=self.opened.info.schema_version,
            author=self.author,
            idempotent=self.idempotent,
            dedup_key=tuple(self.opened.spec.dedup_key),
        )
        return self.writer.submit_bulk(job)
