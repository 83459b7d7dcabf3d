"""Embedded and remote clients: same methods, same results, same errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from tests.fixtures.server import ServerProcess

from recplane import Client
from recplane.errors import InvalidInput, NotFound, SchemaChangeRefused

pytestmark = pytest.mark.e2e

SPEC = {
    "name": "views",
    "event_time": "ts",
    "columns": {
        "user_id": {"type": "int64", "nullable": False},
        "item_id": "int64",
        "tags": "list<string>",
        "emb": "vector<float32, 3>",
        "ts": "timestamp",
    },
    "quality": [{"rule": "not_null", "columns": ["item_id"]}],
}
ROWS = [
    {"user_id": 1, "item_id": 10, "tags": ["a"], "emb": [0.1, 0.2, 0.3], "ts": "2026-11-23T10:00:00Z"},
    {"user_id": 2, "item_id": 11, "tags": [], "emb": [1.0, 2.0, 3.0], "ts": "2026-11-23T10:01:00Z"},
    {"user_id": 3, "item_id": 12, "tags": ["b"], "emb": [1.0], "ts": "2026-11-23T10:02:00Z"},
]


def _exercise(client: Client) -> dict[str, object]:
    client.create_dataset(SPEC)
    first = client.ingest("views", ROWS, batch_id="b1")
    again = client.ingest("views", ROWS, batch_id="b1")
    table = client.read("views")
    evolved = client.apply_dataset({**SPEC, "columns": {**SPEC["columns"], "device": "string"}})
    errors = []
    for call in (lambda: client.read("missing"),
                 lambda: client.apply_dataset({**SPEC, "columns": {**SPEC["columns"], "user_id": "string"}}),
                 lambda: client.read("views", columns=["nope"])):
        try:
            call()
        except (NotFound, SchemaChangeRefused, InvalidInput) as exc:
            errors.append(type(exc).__name__)
    return {
        "accepted": first.accepted, "rejected": first.rejected, "version": first.version,
        "duplicate": again.duplicate,
        "rows": table.sort_by("user_id").to_pylist(),
        "schema": str(table.schema),
        "old_version_columns": client.read("views", version=first.version).column_names,
        "new_columns": client.read("views").column_names,
        "evolved": evolved.action,
        "history_ops": [v.operation for v in client.history("views")],
        "rejected_reasons": client.read("views__rejected")["reason"].to_pylist(),
        "quality_passed": client.check("views").passed,
        "errors": errors,
        "stats_rows": client.stats("views").rows,
        "as_of_rows": client.read("views", as_of=datetime.now(UTC)).num_rows,
    }


def test_embedded_and_remote_clients_agree(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    with Client(home=tmp_path / "embedded") as embedded:
        local = _exercise(embedded)
    server = server_factory(tmp_path / "served", dev=True)
    with Client(server.url) as remote:
        assert remote.mode == "remote"
        over_http = _exercise(remote)
    assert local == over_http
    assert local["accepted"] == 2 and local["rejected"] == 1 and local["duplicate"] is True
    assert local["errors"] == ["NotFound", "SchemaChangeRefused", "InvalidInput"]
    assert "fixed_size_list" in str(local["schema"])
    assert "device" not in local["old_version_columns"] and "device" in local["new_columns"]


def test_remote_ingest_of_an_arrow_table_is_chunked_and_idempotent(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "served", dev=True)
    client = Client(server.url)
    client.create_dataset({"name": "big", "columns": {"x": "int64"}})
    table = pa.table({"x": pa.array(range(450_000), pa.int64())})
    result = client.ingest("big", table, batch_id="bulk-1")
    assert result.accepted == 450_000
    assert client.ingest("big", table, batch_id="bulk-1").duplicate
    assert client.stats("big").rows == 450_000
