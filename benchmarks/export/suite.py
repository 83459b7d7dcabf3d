"""Export benchmark: CPU latency of each inference form of every zoo model, the table behind the export's choice.

Cases (``recplane bench export [--quick] [--json] [--runs N]``, or ``python benchmarks/export/suite.py``):

* ``{model}_{form}_b{batch}`` — median (p50) and p99 wall time of one ``ExportedModel.predict`` call (input
  checks included, as serving pays them) for TorchScript, ``torch.export`` and ONNX Runtime, at batch 1 and 256.
  Baseline: the eager model (``predict`` / ``user_representation`` under ``no_grad``) on the same rows;
  ratio > 1 means the exported form is faster. ``correct`` says the form matched eager (rtol 1e-4, atol 1e-5).
  ``chosen`` marks the form ``export_model`` picked. A form that failed to export shows as an ``error`` row.

Models have ml-100k-like id spaces (944 users, 1,683 items, 19 genres, histories of 50) and each model's
default hyperparameters. One thread (``torch.set_num_threads(1)``, onnxruntime likewise): a serving replica
per core is the usual layout, and one thread is steadier on a shared machine. Quick mode times fewer calls.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch

from recplane.models.base import RankingModel, RecModel, RetrievalModel
from recplane.models.dcn import DCNv2, DCNv2Config
from recplane.models.deepfm import DeepFM, DeepFMConfig
from recplane.models.din import DIN, DINConfig
from recplane.models.features import DenseField, SparseField
from recplane.models.lightgcn import LightGCN
from recplane.models.mf import MF
from recplane.models.mmoe import MMoE, MMoEConfig
from recplane.models.moe import SparseMoEConfig, SparseMoERanker
from recplane.models.sasrec import SASRec, SASRecConfig
from recplane.models.two_tower import TwoTower, TwoTowerConfig
from recplane.training.export import FORMS, export_model, load_exported

Emit = Callable[[dict[str, Any]], None]
USERS, ITEMS, GENRES, LENGTH = 944, 1683, 19, 50
BATCHES = (1, 256)
FIELDS = (
    SparseField("user_id", USERS),
    SparseField("item_id", ITEMS),
    SparseField("genres", GENRES, multi_valued=True),
)
DENSE = (DenseField("age"),)


class Plan(NamedTuple):
    """Sizes of one run (a NamedTuple: the CLI loads this file without registering it in sys.modules)."""

    runs: int

    @classmethod
    def of(cls, quick: bool, runs: int | None) -> Plan:
        return cls(runs or (30 if quick else 300))


def _lightgcn() -> RecModel:
    gen = torch.Generator().manual_seed(3)
    users = torch.randint(1, USERS, (80_000,), generator=gen)
    items = torch.randint(1, ITEMS, (80_000,), generator=gen)
    return LightGCN(USERS, ITEMS, users, items)


MODELS: dict[str, Callable[[], RecModel]] = {
    "mf": lambda: MF(USERS, ITEMS),
    "lightgcn": _lightgcn,
    "sasrec": lambda: SASRec(SASRecConfig(num_items=ITEMS, max_seq_length=LENGTH)),
    "two_tower": lambda: TwoTower(TwoTowerConfig(USERS, ITEMS, user_dense={"age": 1})),
    "deepfm": lambda: DeepFM(DeepFMConfig(sparse_fields=FIELDS, dense_fields=DENSE)),
    "dcn_v2": lambda: DCNv2(DCNv2Config(sparse_fields=FIELDS, dense_fields=DENSE)),
    "din": lambda: DIN(DINConfig(num_items=ITEMS, sparse_fields=FIELDS[:1], dense_fields=DENSE)),
    "mmoe": lambda: MMoE(MMoEConfig(sparse_fields=FIELDS, dense_fields=DENSE)),
    "sparse_moe": lambda: SparseMoERanker(SparseMoEConfig(sparse_fields=FIELDS, dense_fields=DENSE)),
}


def rows(count: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` random requests: ids, right-padded histories and genre bags, a dense age."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "user_id": torch.randint(1, USERS, (count,), generator=gen),
        "item_id": torch.randint(1, ITEMS, (count,), generator=gen),
        "history": torch.randint(1, ITEMS, (count, LENGTH), generator=gen),
        "history_len": torch.randint(1, LENGTH + 1, (count,), generator=gen),
        "genres": torch.randint(0, GENRES, (count, 3), generator=gen),
        "genres_len": torch.randint(1, 4, (count,), generator=gen),
        "age": torch.rand(count, generator=gen),
    }


def run(emit: Emit, quick: bool = False, runs: int | None = None, only: str = "") -> None:
    """Export every model (or those whose name contains ``only``) and emit one row per model, form and batch."""
    plan = Plan.of(quick, runs)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, build in MODELS.items():
            if only not in name:
                continue
            try:
                model_case(emit, plan, name, build)
            except Exception as exc:  # a broken case must show up as a row, not end the suite
                emit(error_row(name, plan, exc))
    finally:
        torch.set_num_threads(previous)


def error_row(case: str, plan: Plan, exc: BaseException | str) -> dict[str, Any]:
    message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return {
        "case": case,
        "value": None,
        "unit": "",
        "baseline": "",
        "baseline_value": None,
        "ratio": None,
        "runs": plan.runs,
        "correct": False,
        "error": message,
    }


def percentiles_ms(work: Callable[[], object], runs: int) -> tuple[float, float]:
    """(p50, p99) wall time of ``work`` in ms over ``runs`` calls, after 3 warm-up calls."""
    for _ in range(3):
        work()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), float(np.percentile(times, 99))


def eager(model: RecModel, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
    with torch.no_grad():
        if isinstance(model, RetrievalModel):
            return [model.user_representation(batch).numpy()]
        assert isinstance(model, RankingModel)
        return [value.numpy() for value in model.predict(batch).values()]


def model_case(emit: Emit, plan: Plan, name: str, build: Callable[[], RecModel]) -> None:
    torch.manual_seed(0)
    model = build().eval()
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        manifest = export_model(model, directory, example_batch=rows(256, seed=1), repeats=max(plan.runs // 3, 5))
        export_s = time.perf_counter() - start
        for form in FORMS:
            if form not in manifest.artifacts:
                reasons = "; ".join(f"{k}: {v}" for k, v in manifest.failures.items() if k.startswith(form))
                emit(error_row(f"{name}_{form}", plan, reasons or "not exported"))
                continue
            loaded = load_exported(directory, form=form)
            for size in BATCHES:
                batch = rows(size, seed=2)
                p50, p99 = percentiles_ms(partial(loaded.predict, batch), plan.runs)
                base50, base99 = percentiles_ms(partial(eager, model, batch), plan.runs)
                correct = all(
                    np.allclose(got, want, rtol=1e-4, atol=1e-5)
                    for got, want in zip(loaded.predict(batch).values(), eager(model, batch), strict=True)
                )
                emit({"case": f"{name}_{form}_b{size}", "value": round(p50, 4), "unit": "ms p50",
                      "baseline": "eager PyTorch", "baseline_value": round(base50, 4),
                      "ratio": round(base50 / p50, 2), "runs": plan.runs, "correct": correct,
                      "p99_ms": round(p99, 4), "baseline_p99_ms": round(base99, 4),
                      "chosen": form == manifest.form, "graph": manifest.graph, "export_s": round(export_s, 1),
                      "threads": torch.get_num_threads()})  # fmt: skip


if __name__ == "__main__":
    import json
    import sys

    only = sys.argv[sys.argv.index("--case") + 1] if "--case" in sys.argv else ""
    run(lambda row: print(json.dumps(row), flush=True), quick="--quick" in sys.argv, only=only)
