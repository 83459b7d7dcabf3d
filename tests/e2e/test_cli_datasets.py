"""The CLI like a user drives it: init, create, ingest a file, history, time travel, check, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recplane.cli import app

pytestmark = pytest.mark.e2e

SPEC = """
name: ratings
team: recsys
event_time: ts
columns:
  user_id: {type: int64, nullable: false}
  item_id: int64
  rating: float32
  ts: timestamp
quality:
  - {rule: range, column: rating, min: 1, max: 5}
"""


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.output


def _parquet(path: Path, ratings: list[float]) -> Path:
    n = len(ratings)
    table = pa.table({
        "user_id": pa.array(range(n), pa.int64()),
        "item_id": pa.array([7] * n, pa.int64()),
        "rating": pa.array(ratings, pa.float32()),
        "ts": pa.array([1_700_000_000_000_000 + i for i in range(n)], pa.timestamp("us", tz="UTC")),
    })
    pq.write_table(table, path)
    return path


def test_dataset_lifecycle_from_the_command_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "ratings.yaml"
    spec.write_text(SPEC)
    assert _run(home, "init")[0] == 0
    code, out = _run(home, "datasets", "create", str(spec))
    assert code == 0 and "Created" in out

    code, out = _run(home, "ingest", "ratings", str(_parquet(tmp_path / "a.parquet", [4.0, 5.0, 3.0])),
                     "--batch-id", "a", "--json")
    assert code == 0 and json.loads(out)["accepted"] == 3
    code, out = _run(home, "ingest", "ratings", str(_parquet(tmp_path / "b.parquet", [9.0])), "--json")
    assert code == 0

    code, out = _run(home, "datasets", "history", "ratings", "--json")
    versions = json.loads(out)
    assert [v["version"] for v in versions][:3] == [2, 1, 0]

    code, out = _run(home, "datasets", "read", "ratings", "--version", "1", "--json")
    assert code == 0 and len(json.loads(out)) == 3

    code, out = _run(home, "datasets", "check", "ratings")
    assert code == 1, "a blocking rule (rating 9 out of range) must fail the check"
    code, out = _run(home, "datasets", "check", "ratings", "--version", "1")
    assert code == 0

    code, out = _run(home, "datasets", "list", "--json")
    assert {d["name"] for d in json.loads(out)} >= {"ratings", "ratings__rejected"}


def test_errors_print_one_line_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recplane", "--home", str(tmp_path / "h"), "datasets", "history", "nope"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "not_found" in result.stderr and "Traceback" not in result.stderr


def test_dev_server_refuses_a_public_bind_address(tmp_path: Path) -> None:
    code, out = _run(tmp_path / "h", "server", "--dev", "--host", "0.0.0.0")
    assert code == 2 and "refused" in out


def test_config_show_lists_sources(tmp_path: Path) -> None:
    code, out = _run(tmp_path / "h", "config", "show", "--json")
    rows = {row["setting"]: row for row in json.loads(out)}
    assert code == 0 and rows["port"]["source"] == "default"
