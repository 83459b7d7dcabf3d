"""Group commit: one writer thread per dataset turns many small ingestion batches into few Delta commits.

Delta appends cost about the same for 10 rows as for 100,000, and every commit adds a file that later reads
pay for, so the writer takes the first waiting batch, gathers whatever else arrives within
``group_commit_max_wait_ms`` (up to ``group_commit_max_rows``), and writes them as one commit. Large inputs
skip merging and stream straight into a commit of their own (the bulk path).

Durability rule: a batch is acknowledged (its future resolved) only after its rows are committed *and* its
idempotency key is recorded in the catalog. Each group writes, in order: its rejected rows to
``NAME__rejected``, its accepted rows to ``NAME`` (the commit carries ``recplane.batch_ids``), then the
catalog rows. If the process dies between the Delta commit and the catalog write, the commit's batch ids
are recovered from the Delta history (:meth:`TableWriter.reconcile`), so a retry is still a no-op.

Backpressure: rows and bytes waiting per dataset are bounded by ``ingest_queue_max_rows`` and
``ingest_queue_max_bytes``; beyond that, :meth:`TableWriter.submit` raises :class:`Overloaded`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import Transaction
from deltalake.exceptions import CommitFailedError, SchemaMismatchError

from recplane.config import Settings
from recplane.errors import BackendUnavailable, InvalidInput, Overloaded, RecplaneError
from recplane.ingest.dedup import ALREADY_COMMITTED, deduplicated, duplicate_letters, split_duplicates
from recplane.ingest.ledger import BatchLedger, CommitOutcome, LedgerEntry
from recplane.lake.table import META_PREFIX, DeltaDataset

__all__ = ["BulkWrite", "CommitTarget", "TableWriter"]

log = logging.getLogger(__name__)

_IDLE_POLL_S = 0.5
_COMPACT_EVERY_S = 60.0
# No new check for this long after a compaction that did something (or failed): a check reads the table's whole
# file list, tens of milliseconds on a table of a few hundred files.
_COMPACT_PAUSE_S = 2.0
# delta-rs gives a compaction 15 attempts to commit, one version each: when more than 15 commits land while it
# rewrites files, it fails and its work is lost (at ~100 group commits a second, nearly every one did). So this
# writer lets at most this many of its own commits land during a compaction of its table, then waits for it.
_COMMITS_DURING_COMPACTION = 8
_RECONCILE_EVERY_S = 1.0


class CommitTarget(Protocol):
    """What a writer needs from the dataset layer (the DatasetService satisfies it)."""

    def maybe_compact(self, name: str) -> object:
        """Compact ``name`` if it has many small files."""
        ...


@dataclass
class _Batch:
    batch_id: str
    accepted: pa.Table
    rejected: pa.Table
    schema_version: int
    author: str
    future: Future[CommitOutcome]
    transaction: Transaction | None = None
    idempotent: bool = True
    dedup_key: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return self.accepted.num_rows + self.rejected.num_rows

    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        # Counted once: the writer thread must not spend GIL time re-measuring batches it releases.
        self.nbytes = self.accepted.get_total_buffer_size() + self.rejected.get_total_buffer_size()


@dataclass
class BulkWrite:
    """A large input streamed into one commit: validated storage batches, and its rejects once exhausted."""

    batch_id: str
    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    rejected: Callable[[], pa.Table]
    schema_version: int
    author: str
    future: Future[CommitOutcome] = field(default_factory=Future)
    idempotent: bool = True
    dedup_key: tuple[str, ...] = ()
    error: Exception | None = None
    accepted_rows: int = 0

    def stream(self) -> Iterator[pa.RecordBatch]:
        """The batches, counted; an error is kept so the writer can raise it instead of Delta's wrapper."""
        try:
            for batch in self.batches:
                self.accepted_rows += batch.num_rows
                yield batch
        except Exception as exc:
            self.error = exc
            raise


_STOP = object()


class TableWriter:
    """The single committer of one dataset in this process: a thread, a bounded queue and group commit."""

    def __init__(
        self,
        name: str,
        main: DeltaDataset,
        rejected: DeltaDataset,
        *,
        target: CommitTarget,
        ledger: BatchLedger,
        settings: Settings,
        rejected_name: str,
    ) -> None:
        self.name = name
        self.uri = main.uri
        self._main = main
        self._rejected = rejected
        self._rejected_name = rejected_name
        self._target = target
        self._ledger = ledger
        self._max_wait = settings.group_commit_max_wait_ms / 1000
        self._max_rows = settings.group_commit_max_rows
        self._queue_rows = settings.ingest_queue_max_rows
        self._queue_bytes = settings.ingest_queue_max_bytes
        self._compact_every = settings.compact_check_every_commits
        self._compact_files = settings.compact_after_files
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[CommitOutcome]] = {}
        self._pending_rows = 0
        self._pending_bytes = 0
        self._rows_per_second = 200_000.0
        self._closed = False
        self._reconciled_through: int | None = None
        self._last_reconcile = 0.0
        self._commits_since_compact = 0
        self._last_compact = time.monotonic()
        self._compact_paused_until = 0.0
        self._compacting = threading.Lock()
        self._compaction = threading.Condition()
        self._compacting_main = False
        self._commits_during_compaction = 0
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name=f"recplane-writer-{name}", daemon=True)
        self._thread.start()


    def submit(
        self,
        batch_id: str,
        accepted: pa.Table,
        rejected: pa.Table,
        *,
        schema_version: int,
        author: str,
        transaction: Transaction | None = None,
        idempotent: bool = True,
        dedup_key: tuple[str, ...] = (),
    ) -> Future[CommitOutcome]:
        """Queue a validated batch; the future resolves once it is committed (raises Overloaded if full).

        ``idempotent=False`` marks a generated, never-repeated batch id, which skips the duplicate check.
        Rows whose ``dedup_key`` is already committed (or repeated in the commit) go to the dead letters.
        """
        item = _Batch(
            batch_id, accepted, rejected, schema_version, author, Future(), transaction, idempotent, dedup_key
        )
        with self._lock:
            shared = self._join_inflight(batch_id)
            if shared is not None:
                return shared
            self._admit(item.rows, item.nbytes)
            self._inflight[batch_id] = item.future
            self._pending_rows += item.rows
            self._pending_bytes += item.nbytes
        self._queue.put(item)
        return item.future

    def submit_bulk(self, job: BulkWrite) -> Future[CommitOutcome]:
        """Queue a large streamed input; it becomes one commit of its own."""
        with self._lock:
            shared = self._join_inflight(job.batch_id)
            if shared is not None:
                return shared
            self._admit(0, 0)
            self._inflight[job.batch_id] = job.future
        self._queue.put(job)
        return job.future

    def _join_inflight(self, batch_id: str) -> Future[CommitOutcome] | None:
        """The same key submitted while the first is in flight shares the first one's commit."""
        first = self._inflight.get(batch_id)
        if first is None:
            return None
        joined: Future[CommitOutcome] = Future()

        def copy(done: Future[CommitOutcome]) -> None:
            error = done.exception()
            if error is not None:
                joined.set_exception(error)
            else:
                joined.set_result(replace(done.result(), duplicate=True))

        first.add_done_callback(copy)
        return joined

    def _admit(self, rows: int, nbytes: int) -> None:
        if self._closed:
            raise BackendUnavailable(f"Ingestion into {self.name!r} is shutting down; retry on a running server.")
        if self._pending_rows == 0:
            return  # an empty queue takes any batch, however large
        if self._pending_rows + rows <= self._queue_rows and self._pending_bytes + nbytes <= self._queue_bytes:
            return
        wait = min(30.0, max(0.1, self._pending_rows / self._rows_per_second))
        raise Overloaded(
            f"Ingestion into {self.name!r} is at capacity ({self._pending_rows:,} rows waiting to commit); "
            f"retry after {wait:.1f}s with the same batch id.",
            retry_after=wait,
            details={"dataset": self.name, "pending_rows": self._pending_rows},
        )

    @property
    def pending_rows(self) -> int:
        """Rows submitted but not yet committed."""
        return self._pending_rows


    def close(self, timeout: float | None = None) -> None:
        """Commit everything queued, then stop the thread. Later submits are refused."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)


    def _run(self) -> None:
        try:
            self.reconcile()
        except Exception:
            log.exception("Reconciling ingestion batches of %s from the Delta history failed", self.name)
        carry: Any = None
        while True:
            item = carry if carry is not None else self._queue.get()
            carry = None
            if item is _STOP:
                return
            try:
                if isinstance(item, BulkWrite):
                    self._commit_bulk(item)
                    continue
                group, carry = self._gather(item)
                self._commit_group(group)
            except Exception:  # the thread must outlive any one commit; its futures are settled already
                log.exception("Ingestion writer of %s hit an unexpected error", self.name)

    def _gather(self, first: _Batch) -> tuple[list[_Batch], Any]:
        """Collect the batches that share the first one's commit, up to ``max_rows``.

        Whatever queued up while the previous commit ran joins at once (that is what makes group commit
        scale with concurrency); beyond that the writer lingers at most ``max_wait`` for latecomers.
        """
        group, rows = [first], first.rows
        deadline = time.monotonic() + self._max_wait
        while rows < self._max_rows:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            compatible = isinstance(item, _Batch) and item.accepted.schema.equals(first.accepted.schema)
            if not compatible or (item.schema_version, item.dedup_key) != (first.schema_version, first.dedup_key):
                return group, item
            group.append(item)
            rows += item.rows
        return group, None

    def _commit_group(self, group: list[_Batch]) -> None:
        self._make_room_for_compaction()
        started = time.monotonic()
        try:
            outcomes = self._write_group(group)
        except Exception as exc:
            self._fail([b.future for b in group], [b.batch_id for b in group], exc)
        else:
            for batch in group:
                batch.future.set_result(outcomes[batch.batch_id])
            self._after_commit(sum(b.rows for b in group), time.monotonic() - started)
        finally:
            self._release(group)

    def _write_group(self, group: list[_Batch]) -> dict[str, CommitOutcome]:
        keys = [b.batch_id for b in group if b.idempotent]
        done = self._recorded(keys) if keys else {}
        outcomes = {key: entry.outcome() for key, entry in done.items()}
        fresh = [b for b in group if b.batch_id not in done]
        if not fresh:
            return outcomes
        if fresh[0].dedup_key:
            fresh = self._without_duplicates(fresh)
        ids = [b.batch_id for b in fresh]
        counts = {b.batch_id: [b.accepted.num_rows, b.rejected.num_rows] for b in fresh}
        metadata = {
            "batch_ids": ids,
            "batch_rows": counts,
            "author": _authors(fresh),
            "schema_version": fresh[0].schema_version,
        }
        rejected = [b.rejected for b in fresh if b.rejected.num_rows]
        accepted = [b.accepted for b in fresh if b.accepted.num_rows]
        transactions = _transactions(fresh)
        rejected_version = None
        if rejected:
            # Dead letters first: a crash before the main commit makes a retry repeat them, never lose them.
            rejected_version = self._append(
                self._rejected,
                pa.concat_tables(rejected),
                {**metadata, "batch_rows": counts},
            )
        version = None
        if accepted or transactions:
            table = pa.concat_tables(accepted) if accepted else fresh[0].accepted
            version = self._append(self._main, table, metadata, transactions)
        recorded_version = version if version is not None else self._main.known_version()
        self._ledger.record(
            self.name,
            [LedgerEntry(b.batch_id, recorded_version, b.accepted.num_rows, b.rejected.num_rows) for b in fresh],
        )
        self._note_own_commit(version)
        for b in fresh:
            outcomes[b.batch_id] = CommitOutcome(
                b.batch_id,
                b.accepted.num_rows,
                b.rejected.num_rows,
                version if b.accepted.num_rows else None,
                rejected_version if b.rejected.num_rows else None,
            )
        return outcomes

    def _existing_rows(self) -> pads.Dataset:
        return self._main.refresh().to_pyarrow_dataset()

    def _without_duplicates(self, group: list[_Batch]) -> list[_Batch]:
        """The group with duplicate-key rows moved from accepted to rejected (earlier batches win)."""
        sizes = [b.accepted.num_rows for b in group]
        rows = pa.concat_tables([b.accepted for b in group])
        split = split_duplicates(rows, list(group[0].dedup_key), [(ALREADY_COMMITTED, self._existing_rows())])
        if not split.duplicate_rows:
            return group
        bounds = np.cumsum([0, *sizes])
        owner = np.searchsorted(bounds, split.duplicate_rows, side="right") - 1
        result = []
        for index, batch in enumerate(group):
            positions = np.flatnonzero(owner == index)
            if positions.size == 0:
                result.append(batch)
                continue
            mine = np.asarray(split.duplicate_rows)[positions]
            keep = np.ones(batch.accepted.num_rows, dtype=bool)
            keep[mine - bounds[index]] = False
            reasons = [split.reasons[p] for p in positions]
            dead = duplicate_letters(rows.take(mine), reasons, batch.batch_id)
            result.append(replace(batch, accepted=batch.accepted.filter(pa.array(keep)),
                                  rejected=pa.concat_tables([batch.rejected, dead])))
        return result

    def _commit_bulk(self, job: BulkWrite) -> None:
        self._make_room_for_compaction()
        started = time.monotonic()
        try:
            outcome = self._write_bulk(job)
        except Exception as exc:
            self._fail([job.future], [job.batch_id], _input_error(job.error) if job.error else exc)
        else:
            job.future.set_result(outcome)
            self._after_commit(outcome.accepted + outcome.rejected, time.monotonic() - started)
        finally:
            with self._lock:
                self._inflight.pop(job.batch_id, None)

    def _write_bulk(self, job: BulkWrite) -> CommitOutcome:
        done = self._recorded([job.batch_id]) if job.idempotent else {}
        if job.batch_id in done:
            return done[job.batch_id].outcome()
        metadata = {"batch_ids": [job.batch_id], "author": job.author, "schema_version": job.schema_version}
        duplicates: list[pa.Table] = []
        stream = job.stream()
        if job.dedup_key:
            stream = deduplicated(stream, list(job.dedup_key), self._existing_rows(), job.batch_id, duplicates)
        reader = pa.RecordBatchReader.from_batches(job.schema, stream)
        version = self._append(self._main, reader, metadata)
        if job.error is not None:
            raise job.error
        # Rejects are known only once the stream is read, so here they follow the main commit.
        dead = pa.concat_tables([job.rejected(), *duplicates])
        job.accepted_rows -= sum(t.num_rows for t in duplicates)
        rejected_version = None
        if dead.num_rows:
            rejected_version = self._append(
                self._rejected,
                dead,
                {**metadata, "batch_rows": {job.batch_id: [job.accepted_rows, dead.num_rows]}},
            )
        self._ledger.record(self.name, [LedgerEntry(job.batch_id, version, job.accepted_rows, dead.num_rows)])
        self._note_own_commit(version)
        return CommitOutcome(
            job.batch_id,
            job.accepted_rows,
            dead.num_rows,
            version if job.accepted_rows else None,
            rejected_version,
        )

    def _append(
        self,
        table: DeltaDataset,
        data: pa.Table | pa.RecordBatchReader,
        metadata: dict[str, Any],
        transactions: list[Transaction] | None = None,
    ) -> int:
        if isinstance(data, pa.RecordBatchReader):
            # A stream cannot be replayed after a conflict, so it starts from the newest snapshot.
            table.refresh()
            return table.append(data, metadata=metadata, schema_mode="merge", app_transactions=transactions)
        # Appends add files and remove none, so they need no lock against compaction or retention: they commit
        # on the handle's snapshot and delta-rs rebases them over whatever was committed since.
        try:
            return table.append(data, metadata=metadata, app_transactions=transactions)
        except (CommitFailedError, SchemaMismatchError):
            # The schema changed since the handle's snapshot (or a real conflict): retry once on a fresh one,
            # merging so a batch validated just before a column was added still fits.
            table.refresh()
            return table.append(data, metadata=metadata, schema_mode="merge", app_transactions=transactions)

    def _recorded(self, batch_ids: list[str]) -> dict[str, LedgerEntry]:
        """Batch ids already committed: the catalog, caught up from the Delta history at most a second ago.

        Catching up costs a Delta log listing, so it runs at start, after a gap in our own versions, and at
        most once per ``_RECONCILE_EVERY_S`` here: a batch another process committed just before dying
        unrecorded is recognised from then on.
        """
        if time.monotonic() - self._last_reconcile >= _RECONCILE_EVERY_S:
            self.reconcile()
        return self._ledger.lookup(self.name, batch_ids)

    def _fail(self, futures: list[Future[CommitOutcome]], batch_ids: list[str], exc: BaseException) -> None:
        if isinstance(exc, RecplaneError):
            error: BaseException = exc
        else:
            log.exception("Commit to %s failed", self.name, exc_info=exc)
            error = BackendUnavailable(
                f"Committing {len(batch_ids)} batch(es) to dataset {self.name!r} failed: {exc}. Nothing of "
                "them was acknowledged; retry with the same batch id.",
                details={"dataset": self.name, "batch_ids": batch_ids[:20]},
            )
        for future in futures:
            if not future.done():
                future.set_exception(error)

    def _release(self, group: list[_Batch]) -> None:
        with self._lock:
            for batch in group:
                self._pending_rows -= batch.rows
                self._pending_bytes -= batch.nbytes
                self._inflight.pop(batch.batch_id, None)

    def _after_commit(self, rows: int, seconds: float) -> None:
        self.commits += 1
        if rows and seconds > 0:
            self._rows_per_second = 0.8 * self._rows_per_second + 0.2 * max(rows / seconds, 1000.0)
        self._commits_since_compact += 1
        now = time.monotonic()
        # Not before this writer alone could have added enough small files: a check costs a file listing.
        enough = self._commits_since_compact >= max(self._compact_every, self._compact_files)
        due = enough and now >= self._compact_paused_until
        if self._compact_every and (due or now - self._last_compact > _COMPACT_EVERY_S):
            self._compact_in_background()

    def _make_room_for_compaction(self) -> None:
        """Before a commit: wait while a compaction of this table runs that our commits could make fail."""
        with self._compaction:
            while self._compacting_main and self._commits_during_compaction >= _COMMITS_DURING_COMPACTION:
                self._compaction.wait()
            if self._compacting_main:
                self._commits_during_compaction += 1

    def _compact_in_background(self) -> None:
        if not self._compacting.acquire(blocking=False):
            return
        self._commits_since_compact = 0
        self._last_compact = time.monotonic()

        def compact() -> None:
            try:
                results = [self._compact_main(), self._target.maybe_compact(self._rejected_name)]
                if any(result is not None for result in results):
                    self._compact_paused_until = time.monotonic() + _COMPACT_PAUSE_S
            except Exception:
                self._compact_paused_until = time.monotonic() + _COMPACT_PAUSE_S
                log.exception("Automatic compaction of %s failed; ingestion goes on", self.name)
            finally:
                self._compacting.release()

        threading.Thread(target=compact, name=f"recplane-compact-{self.name}", daemon=True).start()

    def _compact_main(self) -> object:
        with self._compaction:
            self._compacting_main, self._commits_during_compaction = True, 0
        try:
            return self._target.maybe_compact(self.name)
        finally:
            with self._compaction:
                self._compacting_main = False
                self._compaction.notify_all()


    def reconcile(self) -> int:
        """Record batch ids found in Delta commits newer than the catalog knows; returns how many were new."""
        self._last_reconcile = time.monotonic()
        current = self._main.latest_version()
        since = self._reconciled_through
        if since is None:
            newest = self._ledger.newest_version(self.name)
            since = -1 if newest is None else newest
        if current <= since:
            self._reconciled_through = current
            return 0
        table = self._main.refresh()  # foreign commits: load them (the check above only looked for files)
        current = table.version()
        found = []
        for commit in table.history(current - since):
            if commit.get("version", -1) > since:
                found.extend(_batches_of(commit))
        known = self._ledger.lookup(self.name, [e.batch_id for e in found])
        missing = [e for e in found if e.batch_id not in known]
        self._ledger.record(self.name, missing)
        self._reconciled_through = current
        if missing:
            log.warning("Recovered %d ingestion batch(es) of %s from the Delta history", len(missing), self.name)
        return len(missing)

    def _note_own_commit(self, version: int | None) -> None:
        """Advance the reconciled mark past our own commit; a gap means another writer committed: catch up."""
        if version is None:
            return
        if self._reconciled_through == version - 1:
            self._reconciled_through = version
            return
        try:
            self.reconcile()
        except Exception:
            log.exception("Reconciling ingestion batches of %s from the Delta history failed", self.name)


def _input_error(error: Exception) -> Exception:
    """An error raised while reading or validating a streamed input is the input's fault (422)."""
    if isinstance(error, RecplaneError):
        return error
    return InvalidInput(f"Reading the input failed after part of it was streamed: {error}. Nothing was written.")


def _batches_of(commit: dict[str, Any]) -> list[LedgerEntry]:
    ids = _decoded(commit.get(META_PREFIX + "batch_ids"), [])
    if not isinstance(ids, list) or not ids:
        return []
    rows = _decoded(commit.get(META_PREFIX + "batch_rows"), {})
    added = int((commit.get("operationMetrics") or {}).get("num_added_rows", 0))
    entries = []
    for key in ids:
        accepted, rejected = rows.get(key, [added if len(ids) == 1 else 0, 0])
        entries.append(LedgerEntry(str(key), int(commit["version"]), int(accepted), int(rejected)))
    return entries


def _decoded(value: Any, default: Any) -> Any:
    if isinstance(value, str):
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(value)
        return default
    return default if value is None else value


def _authors(batches: list[_Batch]) -> str:
    names = sorted({b.author for b in batches})
    return names[0] if len(names) == 1 else ", ".join(names)


def _transactions(batches: list[_Batch]) -> list[Transaction] | None:
    """One transaction identifier per app id: the newest stream position of the group."""
    newest: dict[str, Transaction] = {}
    for batch in batches:
        txn = batch.transaction
        if txn is not None and (txn.app_id not in newest or txn.version > newest[txn.app_id].version):
            newest[txn.app_id] = txn
    return list(newest.values()) or None
