"""One benchmark run in its own process: train one (model, seed), or encode item texts with MiniLM.

The suite starts this file with the interpreter it runs under, once per run, so that peak RSS, torch threads
and global RNG state belong to that run alone (and a crash costs one row, not the benchmark). It reads a JSON
job and writes a JSON result file; nothing else of the suite is imported.

    python worker.py train JOBS.json RESULTS.json
    python worker.py encode TEXTS.json VECTORS.npy

``JOBS.json`` holds a list of jobs, run one after the other: the full benchmark gives each process one job, the
quick one several (a process costs ~4 s of imports, and quick results say nothing about memory or speed).
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tupled(params: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples the model configs take."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in params.items()}


def feature_tables(job: dict[str, Any]) -> dict[str, Any]:
    """The side-feature tables of the job: RecBole's context fields and/or the item text vectors (the suite
    stores the text vectors as a column of the items table, so no join is needed here)."""
    import pyarrow.parquet as pq

    data, tables = job["data"], {}
    item_columns = list(job["item_fields"]) if job["features"] == "context" else []
    if job["features"] == "context":
        tables["user_features"] = pq.read_table(data["users"], columns=["user_id", *job["user_fields"]])
    if job["text"]:
        item_columns.append(job["text_feature"])
    if item_columns:
        tables["item_features"] = pq.read_table(data["items"], columns=["item_id", *item_columns])
    return tables


def train_job(job: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq
    import torch

    torch.set_num_threads(job["threads"])
    from recplane.training import TrainConfig, train

    started = time.perf_counter()
    ratings = pq.read_table(job["data"]["ratings"])
    settings = dict(job["train"], params=tupled(job["train"]["params"]))
    result = train(ratings, TrainConfig(**settings), **feature_tables(job))
    wall = time.perf_counter() - started
    metric = result.valid_metric
    return {
        "status": "ok",
        "model": job["name"],
        "seed": settings["seed"],
        "test_metrics": result.test_metrics,
        "valid_metric": metric,
        "valid_curve": [record.valid.get(metric) for record in result.epochs],
        "epoch_seconds": [record.seconds for record in result.epochs],
        "epochs_run": len(result.epochs),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "train_seconds": result.train_seconds,
        "samples_per_second": result.samples_per_second,
        "num_parameters": result.num_parameters,
        "peak_rss_mb": peak_rss_mb(),
        "wall_seconds": wall,
        "torch_threads": torch.get_num_threads(),
    }


def encode_job(texts: list[str], out: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from recplane.features.text import MiniLMEncoder

    started = time.perf_counter()
    encoder = MiniLMEncoder()
    vectors = encoder.encode(texts)
    np.save(out, vectors)
    return {"status": "ok", "model": encoder.name, "seconds": time.perf_counter() - started, "texts": len(texts)}


def run_train_jobs(jobs: list[dict[str, Any]], report: Path) -> bool:
    """Run the jobs in order, rewriting ``report`` (a JSON list) after each one; True when all succeeded."""
    results: list[dict[str, Any]] = []
    for job in jobs:
        try:
            result = train_job(job)
        except Exception as exc:  # reported as data: one broken run must not hide the others
            result = {"status": "error", "model": job["name"], "seed": job["train"]["seed"],
                      "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}  # fmt: skip
        results.append(result)
        report.write_text(json.dumps(results), encoding="utf-8")
    return all(result["status"] == "ok" for result in results)


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in ("train", "encode"):
        print(__doc__, file=sys.stderr)
        return 2
    command, source, target = argv[1], Path(argv[2]), Path(argv[3])
    payload = json.loads(source.read_text(encoding="utf-8"))
    if command == "train":
        return 0 if run_train_jobs(payload, target) else 1
    report = target.with_suffix(".json")
    try:
        result = encode_job(payload, target)
    except Exception as exc:  # reported as data, with the traceback, for the suite's error message
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    report.write_text(json.dumps(result), encoding="utf-8")
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
