"""Sparse MoE: top-k routing, balance losses, index dispatch (only k experts run, and faster), and two tasks."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
from tests.fixtures.ranking import ITEMS, TASKS, USERS, fit, two_task_pairs
from torch import Tensor

from recplane.models.features import SparseField, weighted_bce
from recplane.models.moe import (
    SparseMoE,
    SparseMoEConfig,
    SparseMoERanker,
    importance_load_loss,
    switch_balance_loss,
)
from recplane.training.metrics import auc


def _layer(num_experts: int = 8, top_k: int = 2, **kwargs: object) -> SparseMoE:
    torch.manual_seed(0)
    layer = SparseMoE(12, num_experts=num_experts, top_k=top_k, hidden_size=16, output_size=6, **kwargs)  # type: ignore[arg-type]
    torch.nn.init.normal_(layer.gate.weight)  # a decisive gate, so routing differs between rows
    return layer


def _ranker(**overrides: object) -> SparseMoERanker:
    torch.manual_seed(0)
    settings: dict[str, object] = {
        "sparse_fields": (SparseField("user_id", USERS), SparseField("item_id", ITEMS)),
        "embedding_size": 8,
        "num_experts": 4,
        "top_k": 2,
        "expert_hidden_size": 32,
        "expert_output_size": 16,
        "tower_hidden_size": (8,),
    }
    settings.update(overrides)
    return SparseMoERanker(SparseMoEConfig(**settings))  # type: ignore[arg-type]


@pytest.mark.parametrize("training", [True, False], ids=["noisy-train", "eval"])
def test_gate_picks_exactly_k_distinct_experts_with_weights_summing_to_one(training: bool) -> None:
    layer = _layer(num_experts=8, top_k=3).train(training)
    routing = layer.route(torch.randn(50, 12))
    assert routing.expert_index.shape == (50, 3)
    assert all(len(set(row.tolist())) == 3 for row in routing.expert_index)
    gates = routing.dense_gates(8)
    assert ((gates > 0).sum(dim=1) == 3).all()
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(50))


def test_balance_losses_are_larger_for_an_imbalanced_gate_than_a_balanced_one() -> None:
    experts, rows = 8, 64
    # Imbalanced: every row sends everything to experts 0 and 1. Balanced: rows take experts in turn.
    skewed_index = torch.tensor([[0, 1]] * rows)
    even_index = torch.stack([torch.arange(rows) % experts, (torch.arange(rows) + 1) % experts], dim=1)
    half = torch.full((rows, 2), 0.5)

    def dense(index: Tensor) -> Tensor:
        return torch.zeros(rows, experts).scatter(1, index, half)

    skewed_probs, even_probs = dense(skewed_index), dense(even_index)
    skewed_load = torch.bincount(skewed_index.reshape(-1), minlength=experts).float()
    even_load = torch.bincount(even_index.reshape(-1), minlength=experts).float()
    assert importance_load_loss(skewed_probs, skewed_load) > importance_load_loss(even_probs, even_load)
    assert importance_load_loss(even_probs, even_load).item() == pytest.approx(0.0, abs=1e-6)
    assert switch_balance_loss(skewed_probs, skewed_index).item() == pytest.approx(experts / 2)
    assert switch_balance_loss(even_probs, even_index).item() == pytest.approx(1.0)


def test_only_the_routed_experts_run() -> None:
    layer = _layer(num_experts=16, top_k=2).eval()
    x = torch.randn(5, 12)  # 5 rows * 2 slots reach at most 10 of the 16 experts
    out = layer(x)
    assert out.rows_evaluated == 5 * 2
    counts = torch.bincount(out.routing.expert_index.reshape(-1), minlength=16)
    torch.testing.assert_close(out.expert_load, counts / 10)
    unused = (counts == 0).nonzero().reshape(-1)
    with torch.no_grad():
        layer.w1[unused] = float("nan")  # an expert that ran, even masked to weight 0, would poison its rows
    again = layer(x)
    assert torch.equal(again.routing.expert_index, out.routing.expert_index)
    assert torch.isfinite(again.output).all()


def test_index_dispatch_equals_running_every_expert() -> None:
    layer = _layer(num_experts=8, top_k=2).eval()
    x = torch.randn(64, 12)
    out = layer(x)
    torch.testing.assert_close(out.output, layer.forward_dense(x, out.routing))


def _best_of(runs: int, step: Callable[[], None]) -> float:
    step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def test_index_dispatch_is_faster_than_running_every_expert_at_16_experts_top_2() -> None:
    torch.manual_seed(0)
    layer = SparseMoE(64, num_experts=16, top_k=2, hidden_size=128, output_size=64)
    x = torch.randn(4096, 64)

    def sparse() -> None:
        layer(x).output.sum().backward()

    def dense() -> None:
        layer.forward_dense(x, layer.route(x)).sum().backward()

    # Measured here: about 8x (one thread, forward + backward); the assertion leaves room for a busy machine.
    assert _best_of(3, sparse) < 0.7 * _best_of(3, dense)


def test_ranker_returns_task_logits_and_routing_statistics() -> None:
    model = _ranker()
    batch = two_task_pairs()
    out = model(batch)
    assert set(out) == {*TASKS, "balance_loss", "expert_load"}
    assert out["click"].shape == (USERS * ITEMS,) and out["balance_loss"].dim() == 0
    assert out["expert_load"].shape == (4,) and out["expert_load"].sum().item() == pytest.approx(1.0)
    assert model.predict(batch).keys() == set(TASKS)
    assert set(model.signature().outputs) == set(out) and model.signature().tasks == TASKS
    task_loss = weighted_bce(out, batch, TASKS)
    assert model.loss(batch, out).item() == pytest.approx(task_loss.item() + 0.01 * out["balance_loss"].item())


@pytest.mark.parametrize("balance", ["cv2", "switch"])
def test_learns_two_planted_tasks_and_keeps_every_expert_in_use(balance: str) -> None:
    model = _ranker(balance_loss=balance)
    batch = two_task_pairs()
    losses = fit(model, batch, steps=100, lr=0.01)
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    probs = model.predict(batch)
    for task in TASKS:
        assert auc(batch[task], probs[task]) >= 0.9, task
    assert (model(batch)["expert_load"] > 0.05).all()


def test_top_k_must_fit_the_experts() -> None:
    with pytest.raises(ValueError, match=r"top_k 5 must be in \[1, num_experts=4\]"):
        _ranker(top_k=5)
