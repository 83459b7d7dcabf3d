"""`recplane bench ingest --quick --json` runs end to end and every case's correctness check passes.

It starts real server and load-generator processes and writes real Delta tables, so it keeps the suite from
rotting. It never asserts how fast anything is: speed is a benchmark result, not a test outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CASES = {"bulk_parquet", "http_batches_100", "durable_single_row_1_client", "durable_single_row_8_clients"}
REQUIRED = {"bench", "machine", "case", "value", "unit", "baseline", "baseline_value", "ratio", "runs"}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECPLANE_")}
    done = subprocess.run(
        [sys.executable, "-m", "recplane", "bench", "ingest", "--quick", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=280, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_quick_ingest_bench_emits_one_row_per_case(rows: list[dict[str, object]]) -> None:
    assert {row["case"] for row in rows} == CASES
    assert len(rows) == len(CASES)


def test_every_row_has_the_documented_fields_and_no_error(rows: list[dict[str, object]]) -> None:
    for row in rows:
        assert row.keys() >= REQUIRED, row
        assert "error" not in row, row
        assert row["bench"] == "ingest"
        assert row["runs"] == 1


def test_every_case_wrote_exactly_what_it_acknowledged(rows: list[dict[str, object]]) -> None:
    for row in rows:
        assert row["correct"] is True, (row["case"], row.get("mismatch"))


def test_results_are_measurements_with_ratios_against_the_peer(rows: list[dict[str, object]]) -> None:
    for row in rows:
        for field in ("value", "baseline_value", "ratio"):
            value = row[field]
            assert isinstance(value, int | float) and value > 0, (row["case"], field, value)
