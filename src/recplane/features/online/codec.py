"""Bytes for entity keys and feature values, shared by every online backend.

Values are MessagePack: compact, fast in C, and it keeps int, float, bool, str, bytes, null and lists apart,
so what is written reads back with the same Python type. Two things MessagePack lacks get extension types:
1-D NumPy vectors (raw little-endian bytes plus a dtype code, so a 384-d float32 embedding costs 1.5 KiB
and decodes with one ``frombuffer``) and tz-aware datetimes (MessagePack's timestamp extension).

Keys are the MessagePack array of the key's parts, so ``42`` and ``(42,)`` name the same entity, and an
``int`` key never matches the string ``"42"``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import numpy as np

from recplane.errors import InvalidInput

__all__ = [
    "EPOCH",
    "decode_many",
    "decode_value",
    "decode_values",
    "encode_key",
    "encode_keys",
    "encode_scalar_keys",
    "encode_value",
    "encode_values",
    "encode_vector_rows",
    "from_micros",
    "to_micros",
    "validate_view_name",
    "value_encoder",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VIEW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")

_VECTOR_EXT_CODE = 1
_VECTOR_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i8"),
    4: np.dtype("<i4"),
}
_DTYPE_CODES = {dtype: code for code, dtype in _VECTOR_DTYPES.items()}


def validate_view_name(view: str) -> str:
    """Return ``view`` if it can name a table and a key prefix safely, else raise InvalidInput."""
    if not isinstance(view, str) or not _VIEW_NAME.match(view):
        raise InvalidInput(
            f"Online view name {view!r} is not valid: use letters, digits, '_', '.' or '-' (1-128 characters, "
            "starting with a letter or '_')."
        )
    return view


def _encode_extra(value: Any) -> Any:
    """msgpack ``default`` hook: NumPy vectors and scalars; anything else is refused."""
    if isinstance(value, np.ndarray):
        return _encode_vector(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(
        f"cannot store a {type(value).__name__} value online: use int, float, bool, str, bytes, "
        "tz-aware datetime, lists of those, or a 1-D NumPy vector"
    )


def _encode_vector(vector: np.ndarray) -> msgpack.ExtType:
    if vector.ndim != 1:
        raise TypeError(f"only 1-D vectors can be stored online, got shape {vector.shape}")
    code = _DTYPE_CODES.get(vector.dtype.newbyteorder("<"))
    if code is None:
        raise TypeError(f"vectors of dtype {vector.dtype} cannot be stored online: use float32/64 or int32/64")
    little = vector.astype(_VECTOR_DTYPES[code], copy=False)
    return msgpack.ExtType(_VECTOR_EXT_CODE, bytes([code]) + little.tobytes())


def encode_vector_rows(matrix: np.ndarray) -> list[Any]:
    """Ready-to-pack extension values for each row of a 2-D array (one ``tobytes`` for the whole matrix)."""
    code = _DTYPE_CODES.get(matrix.dtype.newbyteorder("<"))
    if code is None:
        raise InvalidInput(f"Vectors of dtype {matrix.dtype} cannot be stored online: use float32/64 or int32/64.")
    data = np.ascontiguousarray(matrix, dtype=_VECTOR_DTYPES[code]).tobytes()
    prefix = bytes([code])
    width = matrix.shape[1] * _VECTOR_DTYPES[code].itemsize
    # tuple.__new__ skips ExtType's per-instance argument checks, a third of the cost of a write.
    return (
        [
            tuple.__new__(msgpack.ExtType, (_VECTOR_EXT_CODE, prefix + data[start : start + width]))
            for start in range(0, len(data), width)
        ]
        if width
        else [tuple.__new__(msgpack.ExtType, (_VECTOR_EXT_CODE, prefix))] * matrix.shape[0]
    )


def _decode_extra(code: int, data: bytes) -> Any:
    if code != _VECTOR_EXT_CODE:
        return msgpack.ExtType(code, data)
    return np.frombuffer(data, dtype=_VECTOR_DTYPES[data[0]], offset=1).copy()


_packers = threading.local()


def _packer() -> msgpack.Packer:
    # A Packer reuses its buffer (twice as fast as packb) but is not thread-safe: one per thread.
    packer: msgpack.Packer | None = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(default=_encode_extra, datetime=True, autoreset=True)
    return packer


def encode_value(value: Any) -> bytes:
    """MessagePack bytes of one feature value (a TypeError names what cannot be stored)."""
    return _packer().pack(value)


def value_encoder() -> Callable[[Any], bytes]:
    """This thread's value encoder, for loops that encode many values (saves a lookup per value)."""
    return _packer().pack


def encode_values(values: Any) -> bytes:
    """MessagePack bytes of a sequence of feature values (one stored row)."""
    return _packer().pack(values)


def decode_value(data: bytes) -> Any:
    """The feature value (or list of values) encoded by :func:`encode_value` / :func:`encode_values`."""
    return msgpack.unpackb(data, ext_hook=_decode_extra, timestamp=3, strict_map_key=False)


decode_values = decode_value


_DECODE_IN_ONE_PASS = 24  # below this, setting up an Unpacker costs more than it saves


def decode_many(blobs: Sequence[bytes]) -> list[Any]:
    """:func:`decode_value` of each blob (as written by the encoders here), in one pass of the C unpacker: a
    batch lookup decodes hundreds of values."""
    if len(blobs) < _DECODE_IN_ONE_PASS:
        return [decode_value(blob) for blob in blobs]
    data = b"".join(blobs)
    unpacker = msgpack.Unpacker(ext_hook=_decode_extra, timestamp=3, strict_map_key=False, max_buffer_size=0)
    unpacker.feed(data)
    decoded = list(unpacker)
    if len(decoded) != len(blobs) or unpacker.tell() != len(data):  # malformed: decoding each raises on it
        return [decode_value(blob) for blob in blobs]
    return decoded


_PLAIN_KEY_TYPES = (int, str, bytes)  # exact types: bool is an int but no valid key


def _key_part(part: Any) -> int | str | bytes:
    if type(part) in _PLAIN_KEY_TYPES:
        return part
    if isinstance(part, np.integer | np.str_ | np.bytes_):
        return part.item()
    raise InvalidInput(
        f"Entity key part {part!r} of type {type(part).__name__} is not supported: keys are ints, strings or bytes."
    )


def encode_key(key: Any) -> bytes:
    """Canonical bytes of an entity key: a scalar and its 1-tuple give the same bytes."""
    parts = key if isinstance(key, tuple) else (key,)
    if not parts:
        raise InvalidInput("An entity key cannot be an empty tuple.")
    return _packer().pack([_key_part(part) for part in parts])


def encode_keys(keys: Sequence[Any]) -> list[bytes]:
    """:func:`encode_key` of each key; plain int, str and bytes keys skip the per-part checks."""
    pack = _packer().pack
    return [pack((key,)) if type(key) in _PLAIN_KEY_TYPES else encode_key(key) for key in keys]


def encode_scalar_keys(values: list[Any]) -> list[bytes]:
    """Fast :func:`encode_key` for one key column already known to hold only ints or only strings."""
    pack = _packer().pack
    return [pack((value,)) for value in values]


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the Unix epoch (exact, no float rounding)."""
    return EPOCH + timedelta(microseconds=micros)
