"""`recplane demo` — the first command a newcomer runs — goes end to end and leaves two recorded runs behind."""

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
    for step in ("1. Load MovieLens-100K", "4. Real-time ingestion", "7. Train and evaluate", "Done in"):
        assert step in demo.stdout
    listed = subprocess.run([*cli, "runs", "list", "--json"], capture_output=True, text=True, timeout=120)
    runs = json.loads(listed.stdout)
    assert sorted((run["name"], run["status"]) for run in runs) == [
        ("demo-deepfm", "finished"),
        ("demo-mf", "finished"),
    ]
    assert all((Path(run["artifacts_uri"]) / "model" / "manifest.json").is_file() for run in runs)
    # The models learned something: far better than random ranking and coin-flip CTR.
    metrics = {run["name"]: run["metrics"]["test"] for run in runs}
    assert metrics["demo-mf"]["ndcg@10"] > 0.05 and metrics["demo-deepfm"]["auc"] > 0.65
