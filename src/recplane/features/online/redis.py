"""The Redis online store: one hash per (view, entity key), newer-wins enforced inside Redis by a Lua script.

Layout under a key prefix (default ``recplane:online:``):

- ``<prefix>e:<view>:<key bytes>`` — hash of the entity's row: one field per feature (MessagePack value)
  plus the reserved fields ``\\x00e`` / ``\\x00c`` (event and created time, µs since the epoch);
- ``<prefix>features:<view>`` — hash whose fields are the feature names the view was written with;
- ``<prefix>rows:<view>`` — number of entity hashes the view has created; ``<prefix>views`` — set of views.

A write sends chunks of rows to one Lua script, which compares each row's (event, created) time with the
stored one and replaces the hash only when the new row is newer — atomically, so concurrent writers and
re-materialised older windows cannot overwrite newer values. Chunks are pipelined. Reads fetch only the
asked-for fields: one ``HMGET`` for a single key, and for a batch one Lua call that runs an ``HMGET`` per key
(one round trip and one command, not one per key). TTL is enforced at read time from the event time, like the
embedded store; ``key_expiry`` additionally lets Redis drop a hash at ``event time + key_expiry`` to bound
memory (then ``row_counts`` counts hashes created, not live ones).

Needs a standalone Redis (the script touches many keys, which a cluster would spread over slots).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import msgpack
import pyarrow as pa

from recplane.errors import BackendUnavailable, InvalidInput
from recplane.features.online.batches import (
    Hit,
    WriteBatch,
    assemble_result,
    prepare_write,
    requested_features,
    unknown_features,
    unknown_view,
)
from recplane.features.online.codec import decode_many, encode_keys, validate_view_name, value_encoder
from recplane.features.online.protocol import EntityKey, OnlineResult, OnlineRow, WriteStats

__all__ = ["RedisOnlineStore"]

EVENT_FIELD = b"\x00e"
CREATED_FIELD = b"\x00c"

# KEYS[1] = row counter, KEYS[2..] = entity hashes.
# ARGV = n_features, expiry_ms, feature names..., rows: MessagePack [[event_us, created_us, value bytes...], ...]
# (times travel as decimal strings: Lua numbers are doubles and redis.call would print them with 14 digits).
_WRITE_NEWER_ROWS = """
local n_features = tonumber(ARGV[1])
local expiry_ms = tonumber(ARGV[2])
local rows = cmsgpack.unpack(ARGV[3 + n_features])
local applied, created = 0, 0
for i, row in ipairs(rows) do
  local key = KEYS[i + 1]
  local event, created_at = tonumber(row[1]), tonumber(row[2])
  local stored = redis.call('HMGET', key, '\\0e', '\\0c')
  local newer = true
  if stored[1] then
    local stored_event, stored_created = tonumber(stored[1]), tonumber(stored[2])
    newer = event > stored_event or (event == stored_event and created_at > stored_created)
    if newer then redis.call('DEL', key) end
  else
    created = created + 1
  end
  if newer then
    local fields = {'\\0e', row[1], '\\0c', row[2]}
    for j = 1, n_features do
      fields[#fields + 1] = ARGV[2 + j]
      fields[#fields + 1] = row[2 + j]
    end
    redis.call('HSET', key, unpack(fields))
    if expiry_ms > 0 then
      redis.call('PEXPIREAT', key, string.format('%.0f', math.floor(event / 1000) + expiry_ms))
    end
    applied = applied + 1
  end
end
if created > 0 then redis.call('INCRBY', KEYS[1], created) end
return applied
"""


# KEYS = entity hashes, ARGV = field names; one HMGET reply per key. A batch costs one command instead of one
# per key, which halves a 100-entity lookup (redis-py spends more per pipelined command than Redis does).
_READ_ROWS = """
local rows = {}
for i = 1, #KEYS do
  rows[i] = redis.call('HMGET', KEYS[i], unpack(ARGV))
end
return rows
"""
_READ_CHUNK_KEYS = 500
"""Keys per read script call: large batches are split so one call never holds Redis for long."""


def _redis_module() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - redis is installed wherever the tests run
        raise BackendUnavailable(
            "The Redis online store needs the redis package: pip install 'recplane[redis]'."
        ) from exc
    return redis


def _glob_escape(text: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in text)


class RedisOnlineStore:
    """Online store on a Redis server; ``url`` like ``redis://host:6379/0``."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "recplane:online:",
        key_expiry: timedelta | None = None,
        write_chunk_rows: int = 500,
        chunks_per_round_trip: int = 8,
    ) -> None:
        redis = _redis_module()
        self.url = url
        self._prefix = prefix.encode()
        self._expiry_ms = 0 if key_expiry is None else int(key_expiry / timedelta(milliseconds=1))
        self._write_chunk_rows = write_chunk_rows
        self._chunks_per_round_trip = chunks_per_round_trip
        self._client = redis.Redis.from_url(url)
        self._connection_errors = (redis.ConnectionError, redis.TimeoutError)
        try:
            self._client.ping()
        except self._connection_errors as exc:
            raise BackendUnavailable(f"Cannot reach Redis at {url}: {exc}. Is the server running?") from exc
        self._write_script = self._client.register_script(_WRITE_NEWER_ROWS)
        self._read_script = self._client.register_script(_READ_ROWS)
        self._features: dict[str, frozenset[str]] = {}

    def __enter__(self) -> RedisOnlineStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _key(self, *parts: bytes) -> bytes:
        return self._prefix + b"".join(parts)

    def _entity_prefix(self, view: str) -> bytes:
        return self._key(b"e:", view.encode(), b":")

    def write(
        self,
        view: str,
        rows: pa.Table | Sequence[OnlineRow],
        *,
        key_columns: Sequence[str],
        feature_columns: Sequence[str],
        event_time_column: str,
        created_time_column: str | None = None,
    ) -> WriteStats:
        """Upsert rows, newer (event time, created time) wins, in pipelined chunks of Lua calls."""
        validate_view_name(view)
        started = time.perf_counter()
        batch = prepare_write(
            rows,
            key_columns=key_columns,
            feature_columns=feature_columns,
            event_time_column=event_time_column,
            created_time_column=created_time_column,
        )
        try:
            self._record_schema(view, batch.features)
            applied = self._write_chunks(view, batch)
        except self._connection_errors as exc:
            raise BackendUnavailable(f"Redis at {self.url} failed during a write to {view!r}: {exc}") from exc
        return WriteStats(view, len(batch), applied, time.perf_counter() - started)

    def _record_schema(self, view: str, features: Sequence[str]) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.sadd(self._key(b"views"), view)
        pipe.hset(self._key(b"features:", view.encode()), mapping=dict.fromkeys(features, 1))
        pipe.execute()

    def _write_chunks(self, view: str, batch: WriteBatch) -> int:
        """Send the rows in rounds of pipelined script calls; returns how many the script applied.

        A big write sends each round from a helper thread while this one encodes the next, so Redis runs the
        script on one round while Python prepares the following one (the thread waits on the socket, so it
        holds the GIL only briefly)."""
        rounds = self._rounds(view, batch)
        if len(batch) <= self._write_chunk_rows * self._chunks_per_round_trip:
            return sum(sum(pipe.execute()) for pipe in rounds)
        applied = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="recplane-redis-write") as sender:
            pending: Future[list[Any]] | None = None
            for pipe in rounds:
                if pending is not None:
                    applied += sum(pending.result())
                pending = sender.submit(pipe.execute)
            if pending is not None:
                applied += sum(pending.result())
        return applied

    def _rounds(self, view: str, batch: WriteBatch) -> Iterator[Any]:
        """Pipelines of up to ``chunks_per_round_trip`` script calls, each on ``write_chunk_rows`` rows."""
        header = [len(batch.features), self._expiry_ms, *(name.encode() for name in batch.features)]
        counter = self._key(b"rows:", view.encode())
        entity_prefix = self._entity_prefix(view)
        pipe = self._client.pipeline(transaction=False)
        queued = 0
        for start in range(0, len(batch), self._write_chunk_rows):
            chunk = batch.slice(start, start + self._write_chunk_rows)
            keys = [counter, *[entity_prefix + key for key in chunk.keys]]
            self._write_script(keys=keys, args=[*header, _rows_payload(chunk)], client=pipe)
            queued += 1
            if queued == self._chunks_per_round_trip:
                yield pipe
                pipe, queued = self._client.pipeline(transaction=False), 0
        if queued:
            yield pipe

    def read(
        self,
        view: str,
        keys: Sequence[EntityKey],
        features: Sequence[str],
        *,
        ttl: timedelta | None,
        now: datetime | None = None,
    ) -> OnlineResult:
        """Values and status per key, in the order of ``keys`` (one round trip); see :class:`OnlineStore`."""
        wanted = requested_features(features)
        try:
            self._check_features(view, wanted)
            replies = self._fetch(view, encode_keys(keys), wanted)
        except self._connection_errors as exc:
            raise BackendUnavailable(f"Redis at {self.url} failed during a read of {view!r}: {exc}") from exc
        return assemble_result(view, keys, wanted, _hits(replies), ttl=ttl, now=now)

    def _fetch(self, view: str, keys: list[bytes], wanted: tuple[str, ...]) -> list[list[bytes | None]]:
        fields = [EVENT_FIELD, *(name.encode() for name in wanted)]
        entity_prefix = self._entity_prefix(view)
        hashes = [entity_prefix + key for key in keys]
        if not hashes:
            return []
        if len(hashes) == 1:
            return [self._client.hmget(hashes[0], fields)]
        if len(hashes) <= _READ_CHUNK_KEYS:
            replies: list[list[bytes | None]] = self._read_script(keys=hashes, args=fields)
            return replies
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(hashes), _READ_CHUNK_KEYS):
            self._read_script(keys=hashes[start : start + _READ_CHUNK_KEYS], args=fields, client=pipe)
        return [reply for replies in pipe.execute() for reply in replies]

    def _check_features(self, view: str, wanted: tuple[str, ...]) -> None:
        validate_view_name(view)
        known = self._features.get(view)
        if known is not None and known.issuperset(wanted):
            return
        names = self._client.hkeys(self._key(b"features:", view.encode()))
        if not names:
            self._features.pop(view, None)
            raise unknown_view(view)
        known = self._features[view] = frozenset(name.decode() for name in names)
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise unknown_features(view, unknown, sorted(known))

    def delete_view(self, view: str) -> None:
        """Remove the view's entity hashes (SCAN + UNLINK), schema record and counter."""
        validate_view_name(view)
        pattern = _glob_escape(self._entity_prefix(view)) + b"*"
        doomed: list[bytes] = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            doomed.append(key)
            if len(doomed) >= 1000:
                self._client.unlink(*doomed)
                doomed = []
        if doomed:
            self._client.unlink(*doomed)
        self._client.delete(self._key(b"features:", view.encode()), self._key(b"rows:", view.encode()))
        self._client.srem(self._key(b"views"), view)
        self._features.pop(view, None)

    def row_counts(self) -> dict[str, int]:
        """Entity hashes created per view (exact unless ``key_expiry`` dropped some)."""
        views = sorted(name.decode() for name in self._client.smembers(self._key(b"views")))
        counts = self._client.mget([self._key(b"rows:", view.encode()) for view in views]) if views else []
        return {view: int(count or 0) for view, count in zip(views, counts, strict=True)}

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _rows_payload(chunk: WriteBatch) -> bytes:
    """One MessagePack argument for the whole chunk: far cheaper to send than one argument per value."""
    encode = value_encoder()
    try:
        rows = [
            [str(event), str(created), *map(encode, values)]
            for event, created, *values in zip(chunk.event_micros, chunk.created_micros, *chunk.columns, strict=True)
        ]
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"A feature value of the rows to write cannot be stored online: {exc}.") from exc
    # Redis' Lua cmsgpack predates the bin type: bytes must travel as raw strings.
    payload: bytes = msgpack.packb(rows, use_bin_type=False)
    return payload


def _hits(replies: list[list[bytes | None]]) -> list[Hit]:
    """Each HMGET reply (event time, then the values) as a hit; every value of the batch decoded in one pass."""
    found = [reply for reply in replies if reply[0] is not None]
    decoded = iter(decode_many([value for reply in found for value in reply[1:] if value is not None]))
    return [
        None if reply[0] is None else (int(reply[0]), [None if value is None else next(decoded) for value in reply[1:]])
        for reply in replies
    ]
