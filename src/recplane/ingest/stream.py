"""NATS JetStream into a dataset, exactly once: the stream position is committed with the rows.

Each fetched batch of messages (each message one JSON object, or a JSON array of objects) becomes one
ingestion call. Its Delta commit carries a transaction identifier (``app_id = nats:<stream>:<durable>``,
``version`` = the batch's last stream sequence), so the dataset itself records how far the stream has been
committed. Messages are acknowledged only after that commit; invalid ones are dead-lettered with a reason
and acknowledged too, because they are durably recorded.

On start the durable pull consumer is (re)positioned just after the committed high-water mark, so nothing
committed is read twice and nothing uncommitted is skipped, whether the last run stopped cleanly, was
killed between commit and ack, or crashed mid-commit. Redeliveries at or below the mark are skipped and
acknowledged. Run one consumer process per durable name.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from dataclasses import dataclass
from typing import Any

import orjson
from deltalake import Transaction

from recplane.auth import Principal
from recplane.errors import BackendUnavailable, Overloaded
from recplane.ingest.service import IngestService
from recplane.ingest.sources import RowChunk, UnparsedRow, row_json

__all__ = ["StreamStats", "consume_stream", "consume_stream_async", "stream_app_id"]

_OVERLOAD_RETRIES = 50


@dataclass
class StreamStats:
    """What one consumer run did."""

    messages: int = 0
    accepted: int = 0
    rejected: int = 0
    skipped: int = 0
    commits: int = 0
    last_sequence: int | None = None

    def __str__(self) -> str:
        return (
            f"{self.messages:,} messages, {self.accepted:,} rows accepted, {self.rejected:,} rejected, "
            f"{self.skipped:,} already committed, {self.commits:,} commits"
        )


def stream_app_id(stream: str, durable: str) -> str:
    """The Delta transaction application id under which a consumer records its stream position."""
    return f"nats:{stream}:{durable}"


def consume_stream(
    service: IngestService,
    dataset: str,
    *,
    nats_url: str,
    subject: str,
    principal: Principal,
    stream: str | None = None,
    durable: str | None = None,
    batch_size: int = 1000,
    max_wait: float = 1.0,
    stop: threading.Event | asyncio.Event | None = None,
    max_messages: int | None = None,
    ack_wait: float = 30.0,
) -> StreamStats:
    """Consume ``subject`` into ``dataset`` until ``stop`` is set or ``max_messages`` were handled.

    Blocking; from async code use :func:`consume_stream_async`. This is what
    ``recplane ingest-stream NAME --nats URL --subject S`` runs.
    """
    return asyncio.run(
        consume_stream_async(
            service,
            dataset,
            nats_url=nats_url,
            subject=subject,
            principal=principal,
            stream=stream,
            durable=durable,
            batch_size=batch_size,
            max_wait=max_wait,
            stop=stop,
            max_messages=max_messages,
            ack_wait=ack_wait,
        )
    )


async def consume_stream_async(
    service: IngestService,
    dataset: str,
    *,
    nats_url: str,
    subject: str,
    principal: Principal,
    stream: str | None = None,
    durable: str | None = None,
    batch_size: int = 1000,
    max_wait: float = 1.0,
    stop: threading.Event | asyncio.Event | None = None,
    max_messages: int | None = None,
    ack_wait: float = 30.0,
) -> StreamStats:
    """The asynchronous form of :func:`consume_stream`."""
    import nats
    from nats.errors import TimeoutError as FetchTimeout

    durable = durable or f"recplane-{dataset}"
    try:
        connection = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=3)
    except Exception as exc:
        raise BackendUnavailable(f"Cannot connect to NATS at {nats_url}: {exc}") from exc
    stats = StreamStats()
    try:
        js = connection.jetstream()
        stream_name = await _ensure_stream(js, subject, stream)
        consumer = _Consumer(service, dataset, principal, stream_app_id(stream_name, durable), subject, stats)
        await consumer.load_position()
        await _position_consumer(js, stream_name, durable, subject, consumer.committed + 1, ack_wait)
        subscription = await js.pull_subscribe_bind(durable=durable, stream=stream_name)
        while not (stop is not None and stop.is_set()):
            want = batch_size if max_messages is None else min(batch_size, max_messages - stats.messages)
            if want <= 0:
                break
            try:
                messages = await subscription.fetch(want, timeout=max_wait)
            except FetchTimeout:
                continue
            await consumer.handle(messages)
    finally:
        await connection.close()
    return stats


async def _ensure_stream(js: Any, subject: str, stream: str | None) -> str:
    """The stream holding ``subject``, created (bound to the subject) when there is none."""
    from nats.js.errors import NotFoundError

    if stream is not None:
        try:
            await js.stream_info(stream)
            return stream
        except NotFoundError:
            await js.add_stream(name=stream, subjects=[subject])
            return stream
    try:
        return str(await js.find_stream_name_by_subject(subject))
    except NotFoundError:
        name = "RECPLANE_" + re.sub(r"[^A-Za-z0-9_-]", "_", subject)
        await js.add_stream(name=name, subjects=[subject])
        return name


async def _position_consumer(js: Any, stream: str, durable: str, subject: str, start: int, ack_wait: float) -> None:
    """Recreate the durable consumer so that delivery starts right after the committed position."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(stream, durable)
    config = ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        filter_subject=subject,
    )
    await js.add_consumer(stream, config)


class _Consumer:
    """Turns fetched messages into ingestion calls and keeps the committed stream position."""

    def __init__(
        self,
        service: IngestService,
        dataset: str,
        principal: Principal,
        app_id: str,
        subject: str,
        stats: StreamStats,
    ) -> None:
        self._service = service
        self._dataset = dataset
        self._principal = principal
        self._app_id = app_id
        self._source = f"nats:{subject}"
        self.stats = stats
        self.committed = 0

    async def load_position(self) -> None:
        """Read the committed high-water mark from the dataset's Delta log."""
        version = await asyncio.to_thread(
            self._service.transaction_version, self._dataset, self._app_id, principal=self._principal
        )
        self.committed = version or 0

    async def handle(self, messages: list[Any]) -> None:
        """Commit the new messages of one fetch, then acknowledge all of them."""
        fresh, seen = [], set()
        for message in messages:
            sequence = message.metadata.sequence.stream
            if sequence > self.committed and sequence not in seen:
                seen.add(sequence)
                fresh.append(message)
        self.stats.messages += len(messages)
        self.stats.skipped += len(messages) - len(fresh)
        if fresh:
            await self._commit(fresh)
        await asyncio.gather(*(message.ack() for message in messages))

    async def _commit(self, messages: list[Any]) -> None:
        sequences = [m.metadata.sequence.stream for m in messages]
        first, last = min(sequences), max(sequences)
        chunk = _rows_of(messages)
        for _attempt in range(_OVERLOAD_RETRIES):
            try:
                future = await asyncio.to_thread(
                    self._service.submit,
                    self._dataset,
                    chunk,
                    principal=self._principal,
                    batch_id=f"{self._app_id}:{first}-{last}",
                    source=self._source,
                    transaction=Transaction(self._app_id, last),
                )
                result = await asyncio.wrap_future(future)
                break
            except Overloaded as exc:
                await asyncio.sleep(exc.retry_after)
        else:
            raise Overloaded(f"Dataset {self._dataset!r} stayed overloaded; stopping the consumer.")
        self.committed = last
        self.stats.accepted += result.accepted
        self.stats.rejected += result.rejected
        self.stats.commits += 1
        self.stats.last_sequence = last


def _rows_of(messages: list[Any]) -> RowChunk:
    """One row per JSON object: a message holds an object or an array of them."""
    rows: list[Any] = []
    lines: list[bytes] = []
    for message in messages:
        data = message.data
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            rows.append(UnparsedRow(f"message {message.metadata.sequence.stream}: invalid JSON: {exc}"))
            lines.append(data)
            continue
        if isinstance(value, list):
            rows.extend(value)
            lines.extend(row_json(item).encode() for item in value)
        else:
            rows.append(value)
            lines.append(data)
    return RowChunk(rows, 0, lines)
