"""PUT /v1/datasets/{name}/rows against a real server: same result as embedded, team-checked, size-limited."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from tests.fixtures.server import ServerProcess, team_token

from recplane import Client
from recplane.errors import Forbidden, InvalidInput, PayloadTooLarge
from recplane.wire import ARROW_STREAM, table_to_ipc

pytestmark = pytest.mark.e2e

SPEC = {
    "name": "top_items",
    "team": "recsys",
    "dedup_key": ["item_id"],
    "columns": {
        "item_id": {"type": "int64", "nullable": False},
        "score": "float32",
        "emb": "vector<float32, 2>",
        "ts": "timestamp",
    },
}
FIRST = [{"item_id": n, "score": float(n), "emb": [0.0, 1.0], "ts": "2026-01-01T00:00:00Z"} for n in range(4)]
SECOND = pa.table(
    {
        "item_id": pa.array([7, 8], pa.int64()),
        "score": pa.array([0.5, 0.25], pa.float32()),
        "emb": pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0, 3.0, 4.0], pa.float32()), 2),
        "ts": pa.array([None, None], pa.timestamp("us", tz="UTC")),
    }
)


def _exercise(client: Client) -> dict[str, Any]:
    client.create_dataset(SPEC)
    client.ingest("top_items", FIRST)
    first = client.replace_dataset("top_items", FIRST[:3], metadata={"job": "nightly"})
    second = client.replace_dataset("top_items", SECOND)
    errors = []
    for bad in ([{"item_id": 1}, {"item_id": 1}], [{"item_id": None}], [{"item_id": 1, "emb": [1.0]}]):
        try:
            client.replace_dataset("top_items", bad)
        except InvalidInput as exc:
            errors.append(str(exc).split(":")[0])
    cleared = client.replace_dataset("top_items", [])
    return {
        "versions": [first, second, cleared],
        "after_first": client.read("top_items", version=first).sort_by("item_id").to_pylist(),
        "after_second": client.read("top_items", version=second).sort_by("item_id").to_pylist(),
        "schema": str(client.read("top_items", version=second).schema),
        "now": client.read("top_items").num_rows,
        "history": [
            (v.operation, v.rows_added, v.rows_removed, v.metadata.get("job")) for v in client.history("top_items")
        ],
        "errors": errors,
    }


def test_embedded_and_remote_replace_agree(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    with Client(home=tmp_path / "embedded") as embedded:
        local = _exercise(embedded)
    server = server_factory(tmp_path / "served")
    with Client(server.url, team_token(server.home, "recsys")) as remote:
        over_http = _exercise(remote)
    assert local == over_http
    assert local["versions"] == [2, 3, 4] and local["now"] == 0
    assert [row["item_id"] for row in local["after_first"]] == [0, 1, 2]
    assert [row["emb"] for row in local["after_second"]] == [[1.0, 2.0], [3.0, 4.0]]
    assert local["history"][:3] == [("replace", 0, 2, None), ("replace", 2, 3, None), ("replace", 3, 4, "nightly")]
    assert len(local["errors"]) == 3 and all("nothing was replaced" in e or "repeat" in e for e in local["errors"])


def test_another_team_gets_403_and_oversized_bodies_413(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "home", env={"RECPLANE_MAX_REQUEST_BYTES": "20000"})
    owner = Client(server.url, team_token(server.home, "recsys"))
    other = Client(server.url, team_token(server.home, "growth"))
    owner.create_dataset(SPEC)
    version = owner.replace_dataset("top_items", FIRST)
    with pytest.raises(Forbidden, match="belongs to team 'recsys'"):
        other.replace_dataset("top_items", FIRST[:1])
    response = httpx.put(
        f"{server.url}/v1/datasets/top_items/rows",
        content=table_to_ipc(SECOND),
        headers={"Authorization": f"Bearer {team_token(server.home, 'growth')}", "Content-Type": ARROW_STREAM},
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    big = [{"item_id": n, "score": 1.0, "emb": [0.5, 0.5]} for n in range(2000)]
    with pytest.raises(PayloadTooLarge, match="20000"):
        owner.replace_dataset("top_items", big)
    json_body = httpx.put(
        f"{server.url}/v1/datasets/top_items/rows",
        json=FIRST,
        headers={"Authorization": f"Bearer {team_token(server.home, 'recsys')}"},
    )
    assert json_body.status_code == 422 and ARROW_STREAM in json_body.json()["error"]["message"]
    assert owner.get_dataset("top_items").current_version == version
    assert owner.read("top_items").num_rows == 4
    owner.close()
    other.close()
