"""`recplane bench scheduler --quick --json` runs end to end and every case's invariants hold.

It never asserts how fast anything is: speed is a benchmark result, not a test outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[3]
CASES = ["planner_drain", "scheduler_catalog", "local_job_overhead"]


def test_quick_scheduler_bench_emits_correct_rows() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECPLANE_") or k.startswith("RECPLANE_TEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "recplane", "bench", "scheduler", "--quick", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["case"] for row in rows] == CASES
    for row in rows:
        assert row["correct"] is True and not row.get("violations"), row
        assert isinstance(row["value"], int | float) and row["value"] > 0, row
        assert row["baseline"].startswith("unavailable: no peer") and row["ratio"] is None, row
    planner, catalog, _ = rows
    assert planner["admissions"] >= planner["jobs"] and catalog["admissions"] >= catalog["jobs"]
    assert catalog["drained"] is True
