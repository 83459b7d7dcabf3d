"""Pipelines benchmark: per-step overhead of recplane pipelines side by side with Prefect 3, same run.

``recplane bench pipelines [--quick] [--json] [--runs N]``. The same no-op DAGs on both sides (``chain``: N steps
in a line; ``fanout``: a root, N parallel steps, a join), N = 100 (``--quick``: 20):

* recplane — ``run_recplane.py`` in a fresh process on a fresh home: the real path (SQLite catalog, the
  scheduler's jobs, the pipeline loop), each step a ``noop`` with caching off. Three modes: ``inline`` (the fast
  path: ready inline steps fused into one job on the inline backend, every step committed to the catalog),
  ``inline_per_step_jobs`` (one scheduler job per step, no process start) and ``process`` (a subprocess per
  step, the default for steps; 10 steps, 3 with --quick);
* peer — Prefect 3.8.8, ``peers/prefect/run_prefect.py`` in its own venv (``peers/prefect/setup.sh``), a flow with
  the same tasks on its default thread task runner against its ephemeral local API. When the venv is missing the
  rows say ``unavailable: ...``.

Rows: ``{dag}_{mode}_per_step_ms`` — recplane's total time per step (``value``) against Prefect's for the same DAG
(``baseline_value``); ``ratio`` is Prefect's over recplane's (> 1: recplane has less overhead; the target is ≥ 5,
i.e. at most 1/5 of Prefect's per-step overhead). Each row also carries both sides' marginal per-step cost (the
N-step run minus a one-step run, or an empty flow for Prefect), totals and run counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEER = HERE.parent / "peers" / "prefect"
PEER_PYTHON = PEER / ".venv" / "bin" / "python"
TARGET_RATIO = 5.0

Emit = Callable[[dict[str, Any]], None]


def _json_from(command: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[1]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _recplane(steps: int, process_steps: int, runs: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECPLANE_")}
    return _json_from([sys.executable, str(HERE / "run_recplane.py"), "--steps", str(steps), "--process-steps",
                       str(process_steps), "--runs", str(runs)], env, timeout=3600)


def _prefect(steps: int, runs: int) -> dict[str, Any] | str:
    if not PEER_PYTHON.exists():
        return f"unavailable: no {PEER_PYTHON} (run bash {PEER / 'setup.sh'})"
    home = Path.cwd() / ".bench" / "pipelines" / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RECPLANE_", "PREFECT_"))},
           "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "DO_NOT_TRACK": "1"}
    try:
        return _json_from([str(PEER_PYTHON), str(PEER / "run_prefect.py"), "--steps", str(steps), "--runs",
                           str(runs)], env, timeout=3600)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        return f"unavailable: {exc}"


def run(emit: Emit, quick: bool = False, runs: int | None = None) -> None:
    """Measure both sides and emit one row per DAG and mode."""
    steps = 20 if quick else 100
    repetitions = runs or (1 if quick else 3)
    ours = _recplane(steps, 3 if quick else 10, repetitions)
    peer = _prefect(steps, repetitions)
    for key, measured in ours.items():
        if not isinstance(measured, dict):
            continue
        dag = key.split("_")[0]
        theirs = peer.get(dag) if isinstance(peer, dict) else None
        row: dict[str, Any] = {
            "case": f"{key}_per_step_ms", "value": round(measured["per_step_ms"], 3), "unit": "ms/step",
            "baseline": "prefect-3.8.8", "runs": measured["runs"], "steps": measured["step_count"],
            "total_seconds": round(measured["total_seconds"], 3),
            "marginal_per_step_ms": round(measured["marginal_per_step_ms"], 3), "target_ratio": TARGET_RATIO,
        }
        if theirs is None:
            row.update(baseline_value=None, ratio=None, peer=peer if isinstance(peer, str) else "no such DAG")
        else:
            ratio = theirs["per_step_ms"] / measured["per_step_ms"] if measured["per_step_ms"] else None
            row.update(baseline_value=round(theirs["per_step_ms"], 3),
                       ratio=None if ratio is None else round(ratio, 2),
                       baseline_marginal_per_step_ms=round(theirs["marginal_per_step_ms"], 3),
                       baseline_total_seconds=round(theirs["total_seconds"], 3),
                       meets_target=ratio is not None and ratio >= TARGET_RATIO)
        emit(row)
