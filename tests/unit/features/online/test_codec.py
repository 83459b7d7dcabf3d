"""Bytes of online keys and values: batch encoders and decoders agree with the one-at-a-time ones."""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack
import numpy as np
import pytest

from recplane.errors import InvalidInput
from recplane.features.online.batches import WriteBatch
from recplane.features.online.codec import decode_many, decode_value, encode_key, encode_keys, encode_value


def _values() -> list[object]:
    vector = np.arange(4, dtype=np.float32)
    moment = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    return [1, -7, 2.5, "text", b"raw", None, True, [1, "a"], vector, moment] * 5


def test_decoding_many_values_at_once_equals_decoding_each() -> None:
    blobs = [encode_value(value) for value in _values()]
    at_once, each = decode_many(blobs), [decode_value(blob) for blob in blobs]
    assert len(at_once) == len(each) == len(blobs)
    for got, expected in zip(at_once, each, strict=True):
        if isinstance(expected, np.ndarray):
            assert got.dtype == expected.dtype and got.tolist() == expected.tolist()
        else:
            assert got == expected and type(got) is type(expected)


def test_a_truncated_value_in_a_batch_fails_like_decoding_it_alone() -> None:
    blobs = [encode_value(value) for value in _values()]
    blobs[3] = blobs[3][:-1]
    with pytest.raises(ValueError):
        decode_value(blobs[3])
    with pytest.raises(ValueError):
        decode_many(blobs)


def test_encoding_many_keys_equals_encoding_each_and_refuses_the_same_keys() -> None:
    keys = [1, -5, 2**40, "user", b"\x00id", (1, "a"), np.int64(9), np.str_("s")]
    assert encode_keys(keys) == [encode_key(key) for key in keys]
    assert encode_keys([7]) == encode_keys([(7,)])
    for bad in (True, 1.5, None):
        with pytest.raises(InvalidInput):
            encode_keys([1, bad])


def test_a_write_batch_in_key_order_keeps_each_row_together() -> None:
    keys = [msgpack.packb([k]) for k in (5, 1, 300, 2, 70_000)]
    batch = WriteBatch(("a", "b"), keys, [50, 10, 3000, 20, 7], [5, 1, 30, 2, 0], [[5, 1, 300, 2, 7], list("ebdcf")])
    ordered = batch.in_key_order()
    assert ordered.keys == sorted(keys)
    rows = list(zip(ordered.keys, ordered.event_micros, ordered.created_micros, *ordered.columns, strict=True))
    assert sorted(rows) == sorted(zip(keys, batch.event_micros, batch.created_micros, *batch.columns, strict=True))
    assert ordered.in_key_order() is ordered
