"""`recplane bench features --quick --json` runs end to end, and recplane's values match the reference.

It builds real training sets, materializes into the real embedded store and a real Redis, and serves lookups in
process and through a real `recplane server`, so it keeps the suite from rotting. The Feast side runs when its
venv (`benchmarks/peers/feast/.venv`) exists and must otherwise say `unavailable: ...`. It never asserts how
fast anything is: speed is a benchmark result, not a test outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
FEAST_AVAILABLE = (REPO / "benchmarks" / "peers" / "feast" / ".venv" / "bin" / "python").exists()
TRAINING = {f"training_set_{size}_vs_feast_{store}" for size in ("10k", "100k") for store in ("duckdb", "file")}
ONLINE = {
    f"{kind}_{ours}_vs_feast_{theirs}"
    for kind in ("materialize", "online_single", "online_batch100")
    for ours, theirs in (("embedded", "sqlite"), ("redis", "redis"))
}
CASES = TRAINING | ONLINE | {"online_single_http", "online_batch100_http"}
REQUIRED = {"bench", "machine", "case", "value", "unit", "baseline", "baseline_value", "ratio", "runs"}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECPLANE_") or k.startswith("RECPLANE_TEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "recplane", "bench", "features", "--quick", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _measured(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [row for row in rows if "skipped" not in row]


def test_quick_features_bench_emits_one_row_per_case(rows: list[dict[str, object]]) -> None:
    assert [row["case"] for row in rows if row["case"] in CASES] == [row["case"] for row in rows]
    assert {row["case"] for row in rows} == CASES and len(rows) == len(CASES)


def test_every_row_has_the_documented_fields_and_no_error(rows: list[dict[str, object]]) -> None:
    for row in rows:
        assert row.keys() >= REQUIRED, row
        assert "error" not in row, row
        assert row["bench"] == "features" and row["runs"] == 1


def test_redis_cases_run_whenever_a_redis_is_configured(rows: list[dict[str, object]]) -> None:
    skipped = [row for row in rows if "skipped" in row]
    if os.environ.get("RECPLANE_TEST_REDIS_URL"):
        assert skipped == []
    for row in skipped:
        assert "redis" in str(row["case"]) and str(row["skipped"]).startswith("unavailable: no Redis")


def test_recplane_training_sets_keep_every_label_and_match_the_reference(rows: list[dict[str, object]]) -> None:
    for row in rows:
        if row["case"] in TRAINING:
            assert row["rows_returned"] == row["label_rows"], row
            assert (row["rows_missing"], row["value_mismatches"], row["correct"]) == (0, 0, True), row


def test_online_values_match_the_reference_for_every_entity(rows: list[dict[str, object]]) -> None:
    for row in _measured(rows):
        assert row["correct"] is True, row
        if str(row["case"]).startswith("materialize_"):
            assert row["value_mismatches"] == 0 and int(str(row["entities_checked"])) > 15_000, row


def test_values_are_measurements_and_the_peer_is_compared_or_said_unavailable(rows: list[dict[str, object]]) -> None:
    for row in _measured(rows):
        assert isinstance(row["value"], int | float) and row["value"] > 0, row
        if FEAST_AVAILABLE:
            assert isinstance(row["baseline_value"], int | float) and row["baseline_value"] > 0, row
            assert isinstance(row["ratio"], int | float) and row["ratio"] > 0, row
            assert str(row["baseline"]).startswith("feast "), row
        else:
            assert str(row["baseline"]).startswith("unavailable: Feast venv missing"), row
            assert row["baseline_value"] is None and row["ratio"] is None, row


def test_the_peer_training_sets_are_value_checked_too(rows: list[dict[str, object]]) -> None:
    if not FEAST_AVAILABLE:
        pytest.skip("the Feast peer's venv is not set up (bash benchmarks/peers/feast/setup.sh)")
    for row in rows:
        if row["case"] in TRAINING:
            returned, missing = row["baseline_rows_returned"], row["baseline_rows_missing"]
            assert isinstance(returned, int) and isinstance(missing, int), row
            assert returned + missing >= int(str(row["label_rows"])), row
            assert isinstance(row["baseline_value_mismatches"], int), row
