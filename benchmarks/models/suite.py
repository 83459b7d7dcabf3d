"""Model benchmark: the ml-100k leaderboard of recplane's zoo, with RecBole 1.2.1 side by side in the same run.

Cases (``recplane bench models [--quick] [--json] [--runs N]``, or ``python benchmarks/models/suite.py``):

* ``{model}`` for mf, lightgcn, two_tower, sasrec, deepfm, dcn, din, mmoe, moe — trained with the tuned
  defaults of ``configs.py`` under RecBole's default protocol for the model's kind, ``runs`` seeds (default 3):
  test metric mean ± std (``ndcg@10`` for retrieval and sequential models, ``auc`` for ranking ones, with
  recall@10, mrr@10, gauc, logloss ... as extras), train seconds, median epoch seconds (training only), samples/s,
  peak RSS of the run's process, epochs run and best epoch. Every run is a fresh child process with one torch
  thread (the peer uses one too).
* ``vs_recbole_{model}`` for mf (BPR), lightgcn, sasrec and deepfm: recplane's median training seconds per
  epoch against RecBole's (``ratio`` = RecBole / recplane, > 1 means recplane is faster; target 5) and the test
  metric of both (``quality_ok``: recplane's mean is at least RecBole's minus one seed-std). RecBole runs one seed
  (2020) with the same max epochs and patience, except SASRec (capped, see the row's note).
* ``text_lift_{two_tower,deepfm}`` and ``..._cold``: the same model with MiniLM vectors of each movie's text
  (title, genres, release year) as an item feature, against the leaderboard run without them (same seeds),
  overall and on cold items (fewer than 5 training interactions). ``ratio`` = with / without.

Processes run two at a time on this 2-core machine (``RECPLANE_BENCH_JOBS`` changes it): the RecBole peer starts
first and holds one of the two slots until it is done, so every timed process, recplane's and RecBole's alike,
shares the cores with exactly one other benchmark process. ``--quick``: one seed, one epoch per model, the runs
batched into two processes, the peer beside them without SASRec (and only if its venv exists; quick mode never
builds it); its timings say nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
Emit = Callable[[dict[str, Any]], None]


def _load(name: str) -> ModuleType:
    """A helper module next to this file, loaded by path (the CLI does not import suites as packages)."""
    key = f"recplane_bench_models_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses and NamedTuples look their module up while the body runs
    spec.loader.exec_module(module)
    return module


configs = _load("configs")
data = _load("data")
peer = _load("peer")


class Plan(NamedTuple):
    """Sizes of one run (a NamedTuple: the CLI loads this file without registering it in sys.modules)."""

    quick: bool
    seeds: tuple[int, ...]
    jobs: int

    @classmethod
    def of(cls, quick: bool, runs: int | None) -> Plan:
        count = runs or (1 if quick else len(configs.SEEDS))
        seeds = tuple(configs.SEEDS[0] + offset for offset in range(count))
        jobs = int(os.environ.get("RECPLANE_BENCH_JOBS", "0")) or max(1, min(2, os.cpu_count() or 1))
        return cls(quick, seeds, jobs)

    def epochs(self, config: Any) -> int:
        return configs.QUICK_EPOCHS if self.quick else int(config.max_epochs)

    def peer_epochs(self) -> dict[str, int]:
        """RecBole model -> max epochs: the recplane twin's, SASRec capped (and left out of quick runs)."""
        wanted = {}
        for config in configs.MODELS.values():
            if config.peer is None or (self.quick and config.peer == "SASRec"):
                continue
            capped = configs.PEER_SASREC_EPOCHS if config.peer == "SASRec" else self.epochs(config)
            wanted[config.peer] = min(capped, self.epochs(config))
        return wanted


class Job(NamedTuple):
    """One training run: a model (with or without text), a seed."""

    name: str  # leaderboard name, e.g. "deepfm" or "deepfm+text"
    model: str
    seed: int
    text: bool


def run(emit: Emit, quick: bool = False, runs: int | None = None, only: str = "") -> None:
    """Run every model (or those whose name contains ``only``) and the peer; emit the rows in the docstring."""
    plan = Plan.of(quick, runs)
    root = data.bench_root()
    paths, text_stats, source = data.prepare(root, configs.TEXT_COLUMNS, configs.TEXT_FEATURE)
    selected = [name for name in configs.MODELS if only in name]
    jobs = [Job(name, name, seed, False) for name in selected for seed in plan.seeds]
    if text_stats.error is None:
        jobs += [Job(f"{name}+text", name, seed, True) for name in configs.TEXT_MODELS if name in selected
                 for seed in plan.seeds]  # fmt: skip
    peer_epochs = {model: count for model, count in plan.peer_epochs().items()
                   if any(configs.MODELS[name].peer == model for name in selected)}  # fmt: skip
    peer_task = PeerTask(plan, peer_epochs) if peer_epochs else None
    # Full runs: the peer takes one of the plan's slots, so every process shares the cores with exactly one other
    # benchmark process, RecBole's and recplane's alike. Quick runs overlap everything (timings mean nothing).
    results = run_jobs(jobs, paths.as_dict(), plan, peer_task)
    context = {"dataset": "ml-100k", "source": source, "seeds": list(plan.seeds), "parallel_runs": plan.jobs}
    for name in selected:
        emit(leaderboard_row(configs.MODELS[name], results.get(name, []), plan, context))
    for name in configs.TEXT_MODELS:
        if name in selected:
            for row in text_lift_rows(configs.MODELS[name], results.get(name, []), results.get(f"{name}+text", []),
                                      plan, text_stats):  # fmt: skip
                emit(row)
    if peer_task is None:
        return
    peer_run = peer_task.result()
    for name in selected:
        config = configs.MODELS[name]
        if config.peer is not None:
            emit(comparison_row(config, results.get(name, []), peer_run, peer_epochs, plan))


class PeerTask:
    """The RecBole peer, running in a thread (its work happens in its own processes)."""

    def __init__(self, plan: Plan, epochs: dict[str, int]) -> None:
        self.plan, self.epochs = plan, epochs
        self.outcome: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        _progress(f"RecBole peer: {', '.join(f'{m} (max {n} epochs)' for m, n in self.epochs.items())}")
        self.thread.start()

    def running(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        try:
            self.outcome = peer.run_peer(self.epochs, allow_setup=not self.plan.quick, threads=configs.THREADS,
                                         seed=configs.SEEDS[0])  # fmt: skip
        except Exception as exc:  # the peer must never take the leaderboard down with it
            self.outcome = peer.PeerRun({}, {}, f"{type(exc).__name__}: {exc}", 0.0)
        why = f": {self.outcome.unavailable}" if self.outcome.unavailable else ""
        _progress(f"RecBole peer done in {self.outcome.wall_seconds:.0f} s{why}")

    def result(self) -> Any:
        if not self.thread.is_alive() and self.outcome is None:
            self.start()
        self.thread.join()
        return self.outcome


# ------------------------------------------------------------------------------------------------------------
# Runs: one child process each, ``plan.jobs`` at a time.
# ------------------------------------------------------------------------------------------------------------


def job_payload(job: Job, paths: dict[str, str], plan: Plan) -> dict[str, Any]:
    config = configs.MODELS[job.model]
    return {
        "name": job.name,
        "train": config.train_settings(epochs=plan.epochs(config), seed=job.seed),
        "features": config.features,
        "text": job.text,
        "text_feature": configs.TEXT_FEATURE,
        "user_fields": list(configs.USER_FIELDS),
        "item_fields": list(configs.ITEM_FIELDS),
        "data": paths,
        "threads": configs.THREADS,
    }


def batches_of(jobs: list[Job], plan: Plan) -> list[list[Job]]:
    """One job per process in a full run (peak RSS and timings per run); quick runs share ``plan.jobs`` processes."""
    if not plan.quick:
        return [[job] for job in jobs]
    return [jobs[start :: plan.jobs] for start in range(min(plan.jobs, len(jobs)))]


def run_jobs(
    jobs: list[Job], paths: dict[str, str], plan: Plan, peer_task: PeerTask | None
) -> dict[str, list[dict[str, Any]]]:
    """Every job's result (``status`` ok or error), grouped by job name in seed order. In a full run the peer
    (started first) holds one of the ``plan.jobs`` slots while it runs; in a quick run it runs beside them."""
    results: dict[str, list[dict[str, Any]]] = {}
    pending = list(reversed(batches_of(jobs, plan)))
    running: list[tuple[list[Job], subprocess.Popen[bytes], Path, float]] = []
    if peer_task is not None:
        peer_task.start()
    with tempfile.TemporaryDirectory(prefix="recplane-bench-models-") as folder:
        while pending or running:
            peer_slot = 1 if peer_task is not None and not plan.quick and peer_task.running() else 0
            while pending and len(running) < max(1, plan.jobs - peer_slot):
                batch = pending.pop()
                source, target = Path(folder) / f"{len(pending)}.jobs.json", Path(folder) / f"{len(pending)}.out.json"
                source.write_text(json.dumps([job_payload(job, paths, plan) for job in batch]), encoding="utf-8")
                command = [sys.executable, str(HERE / "worker.py"), "train", str(source), str(target)]
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                running.append((batch, process, target, time.perf_counter()))
            time.sleep(0.2)
            for entry in [entry for entry in running if entry[1].poll() is not None]:
                running.remove(entry)
                for job, result in zip(entry[0], _collect(*entry), strict=True):
                    results.setdefault(job.name, []).append(result)
                    done = sum(len(values) for values in results.values())
                    _progress(f"{job.name} seed {job.seed}: {result['status']} "
                              f"({done}/{len(jobs)}, {time.perf_counter() - entry[3]:.0f} s)")  # fmt: skip
    for values in results.values():
        values.sort(key=lambda result: result.get("seed", 0))
    return results


def _collect(batch: list[Job], process: subprocess.Popen[bytes], target: Path, started: float) -> list[dict[str, Any]]:
    """One result per job of the batch; jobs the process did not report on (it died) become errors."""
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    reported: list[dict[str, Any]] = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else []
    missing = {"status": "error", "error": f"run exited {process.returncode} with no result: {stderr[-1500:]}"}
    return [{**(reported[i] if i < len(reported) else missing), "seed": job.seed} for i, job in enumerate(batch)]


def _progress(message: str) -> None:
    print(f"[bench models] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------
# Rows.
# ------------------------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (0 for one value); None when there are no values."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def metric_values(results: list[dict[str, Any]], metric: str) -> list[float]:
    return [float(r["test_metrics"][metric]) for r in results if metric in r.get("test_metrics", {})]


def summary(results: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Means over the seeds that ran: the metric (± std), timings and sizes."""
    ok = [r for r in results if r.get("status") == "ok"]
    mean, std = mean_std(metric_values(ok, metric))
    epochs = [seconds for r in ok for seconds in r["epoch_seconds"]]
    return {
        "mean": mean,
        "std": std,
        "per_seed": [_round(v) for v in metric_values(ok, metric)],
        "train_seconds": _round(mean_std([r["train_seconds"] for r in ok])[0], 2),
        "train_only_seconds": _round(mean_std([sum(r["epoch_seconds"]) for r in ok])[0], 2),
        "median_epoch_seconds": _round(statistics.median(epochs), 4) if epochs else None,
        "samples_per_second": _round(mean_std([r["samples_per_second"] for r in ok])[0], 0),
        "peak_rss_mb": _round(max((r["peak_rss_mb"] for r in ok), default=None), 0),
        "epochs_run": [r["epochs_run"] for r in ok],
        "best_epoch": [r["best_epoch"] for r in ok],
        "errors": [r.get("error") for r in results if r.get("status") != "ok"],
    }


def error_row(case: str, plan: Plan, message: str) -> dict[str, Any]:
    return {"case": case, "value": None, "unit": "", "baseline": "", "baseline_value": None, "ratio": None,
            "runs": len(plan.seeds), "correct": False, "error": message}  # fmt: skip


def leaderboard_row(config: Any, results: list[dict[str, Any]], plan: Plan, context: dict[str, Any]) -> dict[str, Any]:
    stats = summary(results, config.metric)
    if stats["mean"] is None:
        return error_row(config.model, plan, "; ".join(str(e) for e in stats["errors"]) or "no run finished")
    ok = [r for r in results if r.get("status") == "ok"]
    extras = configs.RETRIEVAL_EXTRAS if config.metric.startswith("ndcg") else configs.RANKING_EXTRAS
    extra_means = {name: _round(mean_std(metric_values(ok, name))[0]) for name in extras if metric_values(ok, name)}
    sane = all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in metric_values(ok, config.metric))
    row = {
        "case": config.model, "value": _round(stats["mean"]), "unit": config.metric, "baseline": "",
        "baseline_value": None, "ratio": None, "runs": len(ok), "correct": sane and not stats["errors"],
        "metric": config.metric, "metric_std": _round(stats["std"]), "per_seed": stats["per_seed"],
        "seeds": [r["seed"] for r in ok], **extra_means,
        "train_seconds": stats["train_seconds"], "train_only_seconds": stats["train_only_seconds"],
        "median_epoch_seconds": stats["median_epoch_seconds"],
        "samples_per_second": stats["samples_per_second"], "peak_rss_mb": stats["peak_rss_mb"],
        "epochs_run": stats["epochs_run"], "best_epoch": stats["best_epoch"], "max_epochs": plan.epochs(config),
        "patience": configs.PATIENCE, "num_parameters": ok[0]["num_parameters"],
        "lr": config.lr, "batch_size": config.batch_size, "params": config.params, "features": config.features,
        "threads": configs.THREADS, **context,
    }  # fmt: skip
    if config.note:
        row["note"] = config.note
    if stats["errors"]:
        row["error"] = "; ".join(str(e) for e in stats["errors"])
    return row


def text_lift_rows(
    config: Any, plain: list[dict[str, Any]], text: list[dict[str, Any]], plan: Plan, stats: Any
) -> list[dict[str, Any]]:
    """Overall and cold-item rows: the model with text vectors against itself without them (same seeds)."""
    rows = []
    for suffix, metric in (("", config.metric), ("_cold", f"cold_items/{config.metric}")):
        case = f"text_lift_{config.model}{suffix}"
        if stats.error is not None:
            rows.append({**error_row(case, plan, stats.error), "correct": True, "skipped": stats.error,
                         "baseline": f"{config.model} without text features: text vectors unavailable"})  # fmt: skip
            rows[-1].pop("error")
            continue
        with_text, without = summary(text, metric), summary(plain, metric)
        if with_text["mean"] is None or without["mean"] is None:
            errors = with_text["errors"] + without["errors"]
            rows.append(error_row(case, plan, "; ".join(map(str, errors)) or f"no {metric} in the results"))
            continue
        lift = with_text["mean"] - without["mean"]
        rows.append({
            "case": case, "value": _round(with_text["mean"]), "unit": metric,
            "baseline": f"{config.model} without text features (same seeds)", "baseline_value": _round(without["mean"]),
            "ratio": _round(with_text["mean"] / without["mean"], 3) if without["mean"] else None,
            "runs": len(with_text["per_seed"]), "correct": not (with_text["errors"] or without["errors"]),
            "lift": _round(lift), "std_with_text": _round(with_text["std"]), "std_without": _round(without["std"]),
            "per_seed_with_text": with_text["per_seed"], "per_seed_without": without["per_seed"],
            "median_epoch_seconds_with_text": with_text["median_epoch_seconds"],
            "median_epoch_seconds_without": without["median_epoch_seconds"],
            "peak_rss_mb_with_text": with_text["peak_rss_mb"], "epochs_run_with_text": with_text["epochs_run"],
            "text_feature": f"MiniLM all-MiniLM-L6-v2 (384-d) of {' + '.join(configs.TEXT_COLUMNS)}",
            "text_example": stats.example, "texts_encoded": stats.encoded, "texts_reused": stats.reused,
            "encode_seconds": stats.encode_seconds,
            "cold_items": "items with fewer than 5 training interactions",
        })  # fmt: skip
    return rows


SPLIT_NOTE = (
    "RecBole draws its own split (same protocol, seed 2020) and recplane its protocol's split, so the metric gap "
    "also holds split-to-split variance, which the seed std does not"
)


SASREC_NOTE = (
    "RecBole SASRec capped at {epochs} epochs (~3.5 min each here): its metric is far from converged, so "
    "quality_ok is not a like-for-like verdict. A RecBole epoch trains every prefix of every user's sequence (~97k "
    "sequences of up to 50 items); a recplane epoch trains each user's sequence once with every position as a "
    "target (the last 50 of each user: ~39k targets)"
)


def comparison_row(
    config: Any, results: list[dict[str, Any]], peer_run: Any, peer_epochs: dict[str, int], plan: Plan
) -> dict[str, Any]:
    """recplane against RecBole on the same model: epoch time ratio and test metric."""
    case = f"vs_recbole_{config.model}"
    ours = summary(results, config.metric)
    base = {"case": case, "unit": "s/epoch (training only)", "runs": len(ours["per_seed"]), "metric": config.metric,
            "target": 5.0}  # fmt: skip
    if peer_run.unavailable is not None or config.peer not in peer_epochs:
        why = peer_run.unavailable or "not run in quick mode (one RecBole SASRec epoch takes ~3.5 minutes)"
        unavailable = f"RecBole 1.2.1 {config.peer}: unavailable: {why}"
        return {**base, "value": ours["median_epoch_seconds"], "baseline": unavailable, "baseline_value": None,
                "ratio": None, "correct": True, "skipped": why}  # fmt: skip
    theirs = peer_run.results.get(config.peer, {})
    if theirs.get("status") != "ok":
        return {**error_row(case, plan, f"RecBole {config.peer} failed: {theirs.get('error', 'no result')}"),
                "baseline": f"RecBole 1.2.1 {config.peer}"}  # fmt: skip
    if ours["mean"] is None:
        return error_row(case, plan, "; ".join(map(str, ours["errors"])) or "recplane runs failed")
    their_epoch = theirs["train_epoch_seconds"]["median"]
    their_metric = theirs["test_metrics"].get(config.metric)
    tolerance = max(ours["std"] or 0.0, configs.QUALITY_TOLERANCE_FLOOR)
    capped = config.peer == "SASRec" and peer_epochs[config.peer] < plan.epochs(config)
    row = {
        **base, "value": ours["median_epoch_seconds"],
        "baseline": f"RecBole 1.2.1 {config.peer} (seed {configs.SEEDS[0]}, max {peer_epochs[config.peer]} epochs, "
                    f"patience {configs.PATIENCE})",
        "baseline_value": _round(their_epoch, 4),
        "ratio": _round(their_epoch / ours["median_epoch_seconds"], 2) if ours["median_epoch_seconds"] else None,
        "correct": True,
        "recplane_metric": _round(ours["mean"]), "recplane_metric_std": _round(ours["std"]),
        "recbole_metric": _round(their_metric), "metric_delta": _round(ours["mean"] - their_metric)
        if their_metric is not None else None,
        "quality_ok": their_metric is not None and ours["mean"] >= their_metric - tolerance,
        "quality_tolerance": _round(tolerance), "quality_comparable": not capped,
        "recplane_epochs_run": ours["epochs_run"], "recplane_best_epoch": ours["best_epoch"],
        "recplane_max_epochs": plan.epochs(config), "recplane_peak_rss_mb": ours["peak_rss_mb"],
        "recplane_train_seconds": ours["train_seconds"],
        "recbole_epochs_run": theirs.get("epochs_run"), "recbole_best_epoch": theirs.get("best_epoch"),
        "recbole_max_epochs": peer_epochs[config.peer], "recbole_peak_rss_mb": _round(theirs.get("peak_rss_mb"), 0),
        "recbole_fit_seconds": _round(theirs.get("fit_seconds"), 2),
        "recbole_valid_epoch_seconds": _round(theirs.get("valid_epoch_seconds", {}).get("median"), 4),
        "recbole_test_metrics": {k: _round(v) for k, v in theirs.get("test_metrics", {}).items()},
        "recbole_num_parameters": theirs.get("num_parameters"), "recbole_version": peer_run.environment.get("version"),
        "meets_target": None, "note": SPLIT_NOTE,
    }  # fmt: skip
    row["meets_target"] = row["ratio"] is not None and row["ratio"] >= row["target"]
    if capped:
        row["note"] = f"{SPLIT_NOTE}; {SASREC_NOTE.format(epochs=peer_epochs[config.peer])}"
    return row


if __name__ == "__main__":
    only = sys.argv[sys.argv.index("--case") + 1] if "--case" in sys.argv else ""
    run(lambda row: print(json.dumps(row), flush=True), quick="--quick" in sys.argv, only=only)
