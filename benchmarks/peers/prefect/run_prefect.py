"""Prefect 3 peer for `recplane bench pipelines`: the same no-op DAGs as Prefect flows, run locally.

Runs in its own venv (benchmarks/peers/prefect/.venv; never imports recplane) against Prefect's ephemeral local
API (no PREFECT_API_URL: Prefect starts a temporary server and a SQLite database under PREFECT_HOME, as a user's
first `python flow.py` does) with the default task runner (threads). Two DAGs, as in recplane's suite:

* chain: N no-op tasks, each taking the previous one's result (strictly sequential);
* fanout: one root task, N no-op tasks that each take the root's result, and one task joining all of them.

Each case is timed end to end (flow call to return) and the per-step overhead is reported two ways: the total
over the number of steps, and the marginal cost (the N-step flow minus an empty flow, over N), which leaves out
the fixed cost of a flow run. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from prefect import flow, task


@task
def noop(index: int, previous: Any = None) -> int:
    """A step that does nothing but take an input and return an output."""
    return index


@task
def join(values: list[int]) -> int:
    """The fan-out's last step."""
    return len(values)


@flow(log_prints=False)
def chain(steps: int) -> Any:
    """N no-op tasks in a line."""
    previous = None
    for index in range(steps):
        previous = noop(index, previous)
    return previous


@flow(log_prints=False)
def fanout(steps: int) -> Any:
    """A root, N parallel no-op tasks on the default (thread) task runner, and a join."""
    root = noop(-1)
    futures = [noop.submit(index, root) for index in range(steps)]
    return join([future.result() for future in futures])


@flow(log_prints=False)
def empty(steps: int) -> int:
    """A flow run with no tasks: the fixed cost of a run."""
    return steps


def _time(function: Any, steps: int) -> float:
    started = time.perf_counter()
    function(steps)
    return time.perf_counter() - started


def main() -> int:
    """Measure and print JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import prefect

    _time(empty, 0)  # the first flow starts the ephemeral API server: not part of any case
    _time(chain, 3)
    results: dict[str, Any] = {"peer": "prefect", "version": prefect.__version__, "steps": args.steps}
    for name, function, count in (("chain", chain, args.steps), ("fanout", fanout, args.steps + 2)):
        totals = [_time(function, args.steps) for _ in range(args.runs)]
        baselines = [_time(empty, 0) for _ in range(args.runs)]
        total, base = statistics.median(totals), statistics.median(baselines)
        results[name] = {
            "step_count": count,
            "total_seconds": total,
            "empty_flow_seconds": base,
            "per_step_ms": 1000 * total / count,
            "marginal_per_step_ms": 1000 * max(total - base, 0.0) / count,
            "runs": args.runs,
        }
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
