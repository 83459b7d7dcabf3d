"""recplane side of `recplane bench pipelines`: no-op DAGs through the real path (catalog + scheduler jobs).

Runs in a fresh process on a fresh home (SQLite catalog, the default), with the scheduler and pipeline loops
started in-process as an embedded client's ``wait`` does. Every step is a ``noop`` step with caching off (each
run executes every step, like the peer). Cases, mirroring ``peers/prefect/run_prefect.py``:

* ``chain``: N steps, each taking the previous one's output;
* ``fanout``: a root, N steps each taking the root's output, and a join step taking all N outputs;

in three modes:

* ``inline`` (the fast path): inline steps, fused — the run's ready inline steps and the inline steps after
  them go to one scheduler job on the ``inline`` backend (worker threads of the control plane), which commits
  each step's status, inputs and outputs to the catalog as it ends;
* ``inline_per_step_jobs``: the same inline steps with fusing off (``pipelines_fuse_inline=false``): one
  scheduler job per step (submit, admit, start, finish, ledger row each), still no process start;
* ``process``: the default for steps, one supervised subprocess per step on the ``local`` backend (a shorter
  chain, since each costs a Python start).

Timed from the run call to the run's end (the wait polls every 20 ms). Per-step overhead is reported as total /
steps and as the marginal cost over a one-step run. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def chain(name: str, steps: int, inline: bool) -> dict[str, Any]:
    """N noop steps in a line."""
    items: list[dict[str, Any]] = []
    for index in range(steps):
        value: Any = index if index == 0 else f"${{steps.s{index - 1}}}"
        items.append({"name": f"s{index}", "uses": "noop", "with": {"value": value}, "inline": inline,
                      "cache": False})
    return {"name": name, "steps": items}


def fanout(name: str, steps: int, inline: bool) -> dict[str, Any]:
    """A root, N noop steps on its output, a join over all of theirs."""
    items: list[dict[str, Any]] = [{"name": "root", "uses": "noop", "with": {"value": 0}, "inline": inline,
                                    "cache": False}]
    items += [{"name": f"s{index}", "uses": "noop", "with": {"value": "${steps.root}"}, "inline": inline,
               "cache": False} for index in range(steps)]
    items.append({"name": "join", "uses": "noop", "inline": inline, "cache": False,
                  "with": {"value": [f"${{steps.s{index}}}" for index in range(steps)]}})
    return {"name": name, "steps": items}


def _timed(client: Any, spec: dict[str, Any]) -> float:
    started = time.perf_counter()
    run = client.run_pipeline(spec["name"], wait=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if run.status != "succeeded":
        raise RuntimeError(f"{spec['name']} run {run.id} ended {run.status}: {run.error}")
    return elapsed


def measure(client: Any, build: Any, label: str, steps: int, inline: bool, runs: int) -> dict[str, Any]:
    """Median wall time of ``runs`` runs of the N-step DAG and of its one-step version."""
    big, small = build(f"{label}-{steps}", steps, inline), build(f"{label}-1", 1, inline)
    client.apply_pipeline(big)
    client.apply_pipeline(small)
    _timed(client, small)  # warm-up: imports, inline queue, first jobs
    totals = [_timed(client, big) for _ in range(runs)]
    singles = [_timed(client, small) for _ in range(runs)]
    count = len(big["steps"])
    total, single = statistics.median(totals), statistics.median(singles)
    marginal = max(total - single, 0.0) / max(count - len(small["steps"]), 1)
    return {"step_count": count, "total_seconds": total, "one_step_run_seconds": single,
            "per_step_ms": 1000 * total / count, "marginal_per_step_ms": 1000 * marginal, "runs": runs}


def main() -> int:
    """Measure and print JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--process-steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from recplane import Client
    from recplane.config import Settings

    root = Path(tempfile.mkdtemp(prefix="recplane-bench-pipelines-"))
    fast: dict[str, Any] = {}  # default loop intervals: what a user gets (inline steps wake the loop at once)
    results: dict[str, Any] = {"steps": args.steps}
    with Client(settings=Settings(home=root / "fused", **fast)) as client:
        results["chain_inline"] = measure(client, chain, "chain-inline", args.steps, True, args.runs)
        results["fanout_inline"] = measure(client, fanout, "fanout-inline", args.steps, True, args.runs)
        results["chain_process"] = measure(client, chain, "chain-process", args.process_steps, False,
                                           max(1, args.runs // 2))
    unfused = Settings(home=root / "unfused", pipelines_fuse_inline=False, **fast)
    with Client(settings=unfused) as client:
        results["chain_inline_per_step_jobs"] = measure(client, chain, "chain-jobs", args.steps, True, args.runs)
        results["fanout_inline_per_step_jobs"] = measure(client, fanout, "fanout-jobs", args.steps, True,
                                                         args.runs)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
