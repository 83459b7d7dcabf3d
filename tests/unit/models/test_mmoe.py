"""MMoE: per-task outputs, that each task's loss reaches its own gate, unlabelled rows, and two planted tasks."""

from __future__ import annotations

import math

import pytest
import torch
from tests.fixtures.ranking import ITEMS, TASKS, USERS, fit, two_task_pairs
from torch import nn

from recplane.models.features import SparseField
from recplane.models.mmoe import MMoE, MMoEConfig
from recplane.training.metrics import auc


def _model(**overrides: object) -> MMoE:
    torch.manual_seed(0)
    settings: dict[str, object] = {
        "sparse_fields": (SparseField("user_id", USERS), SparseField("item_id", ITEMS)),
        "embedding_size": 8,
        "num_experts": 3,
        "expert_hidden_size": (32, 16),
        "tower_hidden_size": (8,),
    }
    settings.update(overrides)
    return MMoE(MMoEConfig(**settings))  # type: ignore[arg-type]


def test_forward_gives_one_logit_per_task_and_gates_sum_to_one() -> None:
    model = _model()
    batch = two_task_pairs()
    out = model(batch)
    assert out.keys() == set(TASKS) and all(v.shape == (USERS * ITEMS,) for v in out.values())
    assert model.predict(batch).keys() == set(TASKS)
    gates = model.gate_weights(batch)
    assert all(g.shape == (USERS * ITEMS, 3) for g in gates.values())
    torch.testing.assert_close(gates["click"].sum(dim=1), torch.ones(USERS * ITEMS))
    assert model.signature().tasks == TASKS


def _gradient_mass(module: nn.Module) -> float:
    """Sum of |grad| over a module's parameters (0 when no gradient reached it)."""
    return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)


def test_each_task_loss_reaches_its_own_gate_only() -> None:
    model = _model()
    batch = two_task_pairs()
    click_only = dict(batch, rating_ge_4=torch.full((USERS * ITEMS,), math.nan))
    model.loss(click_only, model(click_only)).backward()
    click_gate, rating_gate = model.gates
    assert _gradient_mass(click_gate) > 0
    assert _gradient_mass(rating_gate) == 0
    model.zero_grad()
    model.loss(batch, model(batch)).backward()
    assert all(_gradient_mass(gate) > 0 for gate in model.gates)


def test_task_weights_scale_each_task_loss() -> None:
    batch = two_task_pairs()
    model = _model()
    out = model(batch)
    click = model.loss(dict(batch, rating_ge_4=torch.full((USERS * ITEMS,), math.nan)), out)
    rating = model.loss(dict(batch, click=torch.full((USERS * ITEMS,), math.nan)), out)
    weighted = _model(task_weights=(2.0, 0.5))
    assert weighted.loss(batch, out).item() == pytest.approx(2.0 * click.item() + 0.5 * rating.item(), rel=1e-5)


def test_bad_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="must be distinct"):
        _model(tasks=("click", "click"))
    with pytest.raises(ValueError, match="one weight >= 0 per task"):
        _model(task_weights=(1.0,))


def test_learns_two_planted_tasks() -> None:
    model = _model()
    batch = two_task_pairs()
    losses = fit(model, batch, steps=100, lr=0.01)
    assert losses[-1] < 0.5 * losses[0]
    probs = model.predict(batch)
    for task in TASKS:
        assert auc(batch[task], probs[task]) >= 0.9, task
