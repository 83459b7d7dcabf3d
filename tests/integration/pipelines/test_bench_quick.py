"""`recplane bench pipelines --quick --json` runs end to end: every recplane mode reports a per-step cost, and the
Prefect side is either measured (its venv exists) or says why not. It never asserts how fast anything is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[3]
PEER = REPO / "benchmarks" / "peers" / "prefect" / ".venv" / "bin" / "python"
CASES = {f"{dag}_{mode}_per_step_ms" for dag in ("chain", "fanout") for mode in ("inline", "inline_per_step_jobs")}
CASES.add("chain_process_per_step_ms")


def test_the_pipelines_benchmark_runs_and_reports_every_case() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECPLANE_")}
    done = subprocess.run([sys.executable, "-m", "recplane", "bench", "pipelines", "--quick", "--json"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1400, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {row["case"] for row in rows} == CASES
    for row in rows:
        assert row["unit"] == "ms/step" and row["value"] > 0 and row["steps"] > 0
        if PEER.exists():
            assert row["baseline_value"] > 0 and row["ratio"] > 0
        else:
            assert row["ratio"] is None and row["peer"].startswith("unavailable")
