"""Wire formats shared by the server and the remote client: Arrow IPC streams for tables."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["ARROW_STREAM", "NDJSON", "table_from_ipc", "table_to_ipc"]

ARROW_STREAM = "application/vnd.apache.arrow.stream"
NDJSON = "application/x-ndjson"


def table_to_ipc(table: pa.Table) -> bytes:
    """Serialise a table as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_ipc(payload: bytes) -> pa.Table:
    """Read a table from an Arrow IPC stream."""
    with pa.ipc.open_stream(pa.py_buffer(payload)) as reader:
        return reader.read_all()
