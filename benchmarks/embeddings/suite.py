"""Embedding-table benchmark: collision rates, memory and lookup cost of recplane's tables, and LightGCN speed.

Cases (``recplane bench embeddings [--quick] [--json] [--runs N]``, or ``python benchmarks/embeddings/suite.py``):

* ``ml100k_{users,items}_{scheme}`` — the ml-100k id counts (943 users, 1,682 items) hashed into a quarter of
  the rows a fixed table needs (64-d): share of ids that share their vector with another id. Baseline: the
  plain hashing trick (one hash) at the same memory.
* ``ids10m_rows1m_{scheme}`` — 10M distinct random int64 ids in a 1M-row table (quick: 200k ids, 20k rows).
* ``dynamic_zipf_admit2`` — a dynamic table fed a Zipf(1.2) stream of 4096x20 batches (quick: fewer): memory
  with admission after 2 sightings; baseline: admission on first sight.
* ``dynamic_lookup_4096x20`` — id -> row mapping of one training lookup on a warm table, against the same
  mapping done with a Python dict; the row also reports a SparseAdam step on a 1M x 64 table for scale.
* ``lightgcn_epoch_ml100k_shape`` — one BPR epoch (80k interactions, 943 x 1,682, 64-d, 3 layers, batch 2048);
  baseline: the same maths with autograd through ``torch.sparse.mm`` on a COO matrix.

Collision and memory numbers are exact (deterministic); timings are medians over ``runs`` after a warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from recplane.models.dynamic_embedding import DynamicEmbedding
from recplane.models.embeddings import HashedEmbedding, hash_ids
from recplane.models.lightgcn import LightGCN

Emit = Callable[[dict[str, Any]], None]
DIM = 64
SCHEMES: dict[str, dict[str, Any]] = {
    "hashing_trick": {"scheme": "multi_hash", "num_hashes": 1},
    "multi_hash_2": {"scheme": "multi_hash", "num_hashes": 2},
    "qr_hashed": {"scheme": "qr"},
    "qr_unhashed": {"scheme": "qr", "hash_ids": False},
}


class Plan(NamedTuple):
    """Sizes of one run (a NamedTuple: the CLI loads this file without registering it in sys.modules)."""

    big_ids: int
    big_rows: int
    zipf_batches: int
    runs: int

    @classmethod
    def of(cls, quick: bool, runs: int | None) -> Plan:
        if quick:
            return cls(200_000, 20_000, 10, runs or 1)
        return cls(10_000_000, 1_000_000, 100, runs or 3)


def run(emit: Emit, quick: bool = False, runs: int | None = None, only: str = "") -> None:
    """Run every case (or those whose group name contains ``only``) and emit one row per case (an ``error`` row
    when a case could not run)."""
    plan = Plan.of(quick, runs)
    torch.manual_seed(0)
    for name, case in (
        ("ml100k", ml100k_case),
        ("ids10m", big_ids_case),
        ("dynamic_zipf", dynamic_memory_case),
        ("dynamic_lookup", dynamic_lookup_case),
        ("lightgcn_epoch", lightgcn_case),
    ):
        if only not in name:
            continue
        try:
            case(emit, plan)
        except Exception as exc:  # a broken case must show up as a row, not end the suite
            emit({"case": name, "value": None, "unit": "", "baseline": "", "baseline_value": None,
                  "ratio": None, "runs": plan.runs, "correct": False, "error": f"{type(exc).__name__}: {exc}"})


def median_ms(work: Callable[[], object], runs: int) -> float:
    work()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def median_ms_over(work: Callable[[torch.Tensor], object], inputs: list[torch.Tensor]) -> float:
    """Median time of ``work`` over fresh inputs (the first one is the warm-up)."""
    times = []
    for number, value in enumerate(inputs):
        start = time.perf_counter()
        work(value)
        if number:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def count_label(count: int) -> str:
    return f"{count // 1_000_000}m" if count >= 1_000_000 else f"{count // 1000}k"


def collision_rows(emit: Emit, prefix: str, ids: torch.Tensor, rows: int, fixed_bytes: int, schemes: list[str]) -> None:
    """One row per scheme: collision rate at ``rows`` rows, against the hashing trick at the same rows."""
    rates: dict[str, float] = {}
    memory: dict[str, int] = {}
    for scheme in ["hashing_trick", *schemes]:
        table = HashedEmbedding(rows, DIM, **SCHEMES[scheme])
        rates[scheme], memory[scheme] = table.collision_rate(ids), table.memory_bytes()
        del table
    for scheme in schemes:
        value, baseline = 100 * rates[scheme], 100 * rates["hashing_trick"]
        emit({"case": f"{prefix}_{scheme}", "value": round(value, 4), "unit": "% ids sharing a vector",
              "baseline": f"hashing trick, {rows:,} rows", "baseline_value": round(baseline, 4),
              "ratio": round(baseline / value, 1) if value else None, "runs": 1, "correct": True,
              "ids": int(ids.numel()), "rows": rows, "memory_mb": round(memory[scheme] / 2**20, 2),
              "fixed_table_memory_mb": round(fixed_bytes / 2**20, 2)})


def ml100k_case(emit: Emit, plan: Plan) -> None:
    for name, count in (("users", 943), ("items", 1682)):
        ids = torch.arange(1, count + 1)
        rows = (count + 1 + 3) // 4
        collision_rows(emit, f"ml100k_{name}", ids, rows, (count + 1) * DIM * 4,
                       ["multi_hash_2", "qr_hashed", "qr_unhashed"])


def big_ids_case(emit: Emit, plan: Plan) -> None:
    generator = torch.Generator().manual_seed(1)
    ids = torch.unique(torch.randint(1, 2**62, (plan.big_ids,), generator=generator))
    # A collisionless table for these ids needs a row each (plus the id -> row mapping, not counted here).
    collision_rows(emit, f"ids{count_label(plan.big_ids)}_rows{count_label(plan.big_rows)}", ids, plan.big_rows,
                   ids.numel() * DIM * 4, ["multi_hash_2", "qr_hashed"])


def zipf_batches(count: int, seed: int) -> list[torch.Tensor]:
    """``count`` 4096x20 batches of raw ids: Zipf(1.2) ranks, hashed so that ids look like arbitrary int64."""
    rng = np.random.default_rng(seed)
    return [hash_ids(torch.from_numpy(rng.zipf(1.2, size=(4096, 20)).astype(np.int64))) for _ in range(count)]


def dynamic_memory_case(emit: Emit, plan: Plan) -> None:
    batches = zipf_batches(plan.zipf_batches, seed=2)
    stream = torch.cat([b.reshape(-1) for b in batches])
    results = {}
    for admit_after in (1, 2):
        table = DynamicEmbedding(DIM, admit_after=admit_after, chunk_rows=65536)
        with torch.no_grad():
            for batch in batches:
                table(batch)
        stats = table.stats()
        covered = float((table.rows_of(stream) > 0).double().mean())
        results[admit_after] = (stats, covered)
    (base, base_cov), (ours, ours_cov) = results[1], results[2]
    emit({"case": "dynamic_zipf_admit2", "value": round(ours.memory_bytes / 2**20, 1), "unit": "MB",
          "baseline": "admit on first sight", "baseline_value": round(base.memory_bytes / 2**20, 1),
          "ratio": round(base.memory_bytes / ours.memory_bytes, 2), "runs": 1, "correct": True,
          "events": int(stream.numel()), "distinct_ids": int(torch.unique(stream).numel()),
          "rows_admit1": base.admitted, "rows_admit2": ours.admitted, "pending_admit2": ours.pending,
          "capacity_rows_admit1": base.capacity_rows, "capacity_rows_admit2": ours.capacity_rows,
          "event_coverage_admit1": round(base_cov, 4), "event_coverage_admit2": round(ours_cov, 4)})


def dynamic_lookup_case(emit: Emit, plan: Plan) -> None:
    batches = zipf_batches(plan.zipf_batches, seed=3)
    probes = zipf_batches(2 * max(plan.runs, 5) + 2, seed=4)
    table = DynamicEmbedding(DIM, chunk_rows=65536)
    mapping: dict[int, int] = {}
    weight = torch.zeros(1, DIM)
    with torch.no_grad():
        for batch in batches:
            table(batch)
        for key in torch.unique(torch.cat([b.reshape(-1) for b in batches])).tolist():
            mapping[key] = len(mapping) + 1
        weight = torch.zeros(table.capacity + 10 * 4096 * 20, DIM)

        def dict_lookup(batch: torch.Tensor) -> torch.Tensor:
            distinct, inverse = torch.unique(batch, return_inverse=True)
            rows = torch.tensor([mapping.setdefault(key, len(mapping) + 1) for key in distinct.tolist()])
            return F.embedding(rows[inverse].view(batch.shape), weight)

        def dict_rows(batch: torch.Tensor) -> torch.Tensor:
            distinct, inverse = torch.unique(batch, return_inverse=True)
            rows = torch.tensor([mapping.setdefault(key, len(mapping) + 1) for key in distinct.tolist()])
            return rows[inverse].view(batch.shape)

        # Same fresh batches both ways: unique, map (admitting new ids), then gather the rows. The dict peer does
        # less (no counts, clocks or row initialisation), so it is a lower bound for a dict-based table.
        map_ms = median_ms_over(table.observe, probes[: len(probes) // 2 + 1])
        dict_map_ms = median_ms_over(dict_rows, probes[: len(probes) // 2 + 1])
        table_ms = median_ms_over(table, probes[len(probes) // 2 :])
        dict_ms = median_ms_over(dict_lookup, probes[len(probes) // 2 :])
    bag = torch.nn.EmbeddingBag(1_000_000, DIM, mode="sum", sparse=True)
    optimizer = torch.optim.SparseAdam(bag.parameters())
    rows = torch.randint(0, 1_000_000, (4096, 20))

    def model_step() -> None:
        optimizer.zero_grad()
        bag(rows).pow(2).sum().backward()
        optimizer.step()

    step_ms = median_ms(model_step, plan.runs)
    emit({"case": "dynamic_lookup_4096x20", "value": round(table_ms, 2), "unit": "ms",
          "baseline": "Python dict id -> row, same gather", "baseline_value": round(dict_ms, 2),
          "ratio": round(dict_ms / table_ms, 2), "runs": len(probes) // 2 - 1, "correct": True,
          "mapping_only_ms": round(map_ms, 2), "dict_mapping_only_ms": round(dict_map_ms, 2),
          "table_ids": table.stats().admitted, "sparse_adam_step_1m_x64_ms": round(step_ms, 1),
          "threads": torch.get_num_threads()})


def ml100k_shaped_interactions(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """80k (user, item) pairs over 943 x 1,682 ids with a long-tailed item popularity, like ml-100k."""
    generator = torch.Generator().manual_seed(seed)
    popularity = 1.0 / torch.arange(1, 1683, dtype=torch.float64) ** 0.8
    users = torch.randint(1, 944, (80_000,), generator=generator)
    items = torch.multinomial(popularity, 80_000, replacement=True, generator=generator) + 1
    return users, items


def lightgcn_epoch(model: LightGCN, users: torch.Tensor, items: torch.Tensor) -> None:
    """One epoch of BPR through the model's own forward and loss, batch 2048, one uniform negative, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(users.numel())
    for start in range(0, users.numel(), 2048):
        index = order[start : start + 2048]
        batch = {"user_id": users[index], "item_id": items[index],
                 "neg_item_id": torch.randint(1, model.num_items, (index.numel(),))}
        loss = model.loss(batch, model(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


class AutogradLightGCN(LightGCN):
    """The peer: the same model with autograd through ``torch.sparse.mm`` on a COO adjacency."""

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        nodes = self.num_users + self.num_items
        coo = torch.sparse_coo_tensor(
            self.adjacency_indices, self.adjacency_values, (nodes, nodes), check_invariants=False
        ).coalesce()
        layer = total = torch.cat([self.user_table.weight, self.item_table.weight])
        for _ in range(self.num_layers):
            layer = torch.sparse.mm(coo, layer)
            total = total + layer
        users, items = torch.split(total / (self.num_layers + 1), [self.num_users, self.num_items])
        return users, items


def lightgcn_case(emit: Emit, plan: Plan) -> None:
    users, items = ml100k_shaped_interactions(seed=4)
    model = LightGCN(944, 1683, users, items, dim=DIM, num_layers=3)
    peer = AutogradLightGCN(944, 1683, users, items, dim=DIM, num_layers=3)
    peer.load_state_dict(model.state_dict())
    # Same maths both ways (checked), then time each.
    correct = bool(torch.allclose(model.propagate()[0], peer.propagate()[0], atol=1e-5))
    ours_s = median_ms(lambda: lightgcn_epoch(model, users, items), plan.runs) / 1000
    peer_s = median_ms(lambda: lightgcn_epoch(peer, users, items), plan.runs) / 1000
    emit({"case": "lightgcn_epoch_ml100k_shape", "value": round(ours_s, 3), "unit": "s/epoch",
          "baseline": "autograd through torch.sparse.mm (COO)", "baseline_value": round(peer_s, 3),
          "ratio": round(peer_s / ours_s, 1), "runs": plan.runs, "correct": correct,
          "interactions": int(users.numel()), "batches": (users.numel() + 2047) // 2048,
          "threads": torch.get_num_threads()})


if __name__ == "__main__":
    import json
    import sys

    only = sys.argv[sys.argv.index("--case") + 1] if "--case" in sys.argv else ""
    run(lambda row: print(json.dumps(row), flush=True), quick="--quick" in sys.argv, only=only)
