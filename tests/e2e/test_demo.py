"""`recplane demo` — the first command a newcomer runs — closes the whole loop: data, features, training as scheduler
jobs, registry, a real serving process answering requests, batch inference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_the_whole_tour_and_records_its_training_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cli = [sys.executable, "-m", "recplane", "--home", str(home)]
    demo = subprocess.run([*cli, "demo"], capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    steps = ("1. Load MovieLens-100K", "4. Real-time ingestion", "7. Features", "8. Train and evaluate", "9. Registry",
             "10. Online serving", "11. Batch inference", "Done in")
    for step in steps:
        assert step in demo.stdout
    assert "online lookup of user 1 (ok)" in demo.stdout
    assert "fallback: popularity: unknown user" in demo.stdout and "→ 422" in demo.stdout
    jobs = json.loads(subprocess.run([*cli, "jobs", "list", "--json"], capture_output=True, text=True).stdout)
    assert sorted((job["kind"], job["status"]) for job in jobs) == [("train", "succeeded")] * 2
    production = subprocess.run([*cli, "models", "show", "demo-ranker@production", "--json"], capture_output=True,
                                text=True)
    assert json.loads(production.stdout)["version"] == 1
    top10 = subprocess.run([*cli, "datasets", "stats", "demo_top10", "--json"], capture_output=True, text=True)
    assert json.loads(top10.stdout)["rows"] == 943 * 10
    listed = subprocess.run([*cli, "runs", "list", "--json"], capture_output=True, text=True, timeout=120)
    runs = json.loads(listed.stdout)
    assert sorted((run["name"], run["status"]) for run in runs) == [
        ("demo-deepfm", "finished"),
        ("demo-mf", "finished"),
    ]
    assert all((Path(run["artifacts_uri"]) / "model" / "manifest.json").is_file() for run in runs)
    ranker = next(run for run in runs if run["name"] == "demo-deepfm")
    assert ranker["tags"]["feature_service"] == "demo_ranker@1"  # trained on the feature service's training set
    assert (Path(ranker["artifacts_uri"]) / "model" / "row_features.json").is_file()
    # The models learned something: far better than random ranking and coin-flip CTR.
    metrics = {run["name"]: run["metrics"]["test"] for run in runs}
    assert metrics["demo-mf"]["ndcg@10"] > 0.05 and metrics["demo-deepfm"]["auc"] > 0.65
