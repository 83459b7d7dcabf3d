"""The training fast paths (fused MF/LightGCN steps, row gathers, cheap dropout, oneDNN linears, dense membership)
must give the same values and gradients as the plain autograd maths they replace."""

from __future__ import annotations

import pytest
import torch

import recplane.models.features as features
from recplane.models.features import MLP, FastDropout, gather_rows
from recplane.models.lightgcn import LightGCN
from recplane.models.mf import MF, bpr_loss, gather_pair_scores, l2_penalty
from recplane.models.negatives import InteractionSet

BATCH = {
    "user_id": torch.tensor([1, 2, 3, 1, 0]),
    "item_id": torch.tensor([4, 5, 6, 4, 0]),
    "neg_item_id": torch.tensor([[7, 8], [9, 4], [0, 12], [4, 5], [3, 3]]),
}


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters() if p.grad is not None]


def test_mf_fused_step_matches_autograd_including_the_padding_row() -> None:
    torch.manual_seed(0)
    model = MF(20, 30, 8, l2=0.1)
    fast = model.loss(BATCH, model(BATCH))
    fast.backward()
    fast_grads = _grads(model)
    model.zero_grad()
    user_vec, item_vec = (
        model.user_table(BATCH["user_id"]),
        model.item_table(torch.cat([BATCH["item_id"][:, None], BATCH["neg_item_id"]], 1)),
    )
    scores = (user_vec[:, None] * item_vec).sum(-1)
    reference = bpr_loss(scores[:, 0], scores[:, 1:]) + 0.1 * l2_penalty(user_vec, item_vec, batch_size=5)
    reference.backward()
    assert float(fast.detach()) == pytest.approx(float(reference.detach()), abs=1e-6)
    for got, want in zip(fast_grads, _grads(model), strict=True):
        torch.testing.assert_close(got, want)
    assert float(fast_grads[0][0].abs().sum()) == 0.0  # padding row


def test_lightgcn_fused_step_matches_autograd() -> None:
    torch.manual_seed(0)
    users, items = torch.randint(1, 20, (200,)), torch.randint(1, 30, (200,))
    model = LightGCN(20, 30, users, items, 8, num_layers=2, l2=0.1)
    batch = {**BATCH, "user_id": BATCH["user_id"] + 1, "item_id": BATCH["item_id"] + 1}
    fast = model.loss(batch, model(batch))
    fast.backward()
    fast_grads = _grads(model)
    model.zero_grad()
    # Reference propagation: plain autograd over the dense normalised adjacency.
    nodes = model.num_users + model.num_items
    adjacency = torch.zeros(nodes, nodes)
    adjacency[model.adjacency_indices[0], model.adjacency_indices[1]] = model.adjacency_values
    ego = torch.cat([model.user_table.weight, model.item_table.weight])
    first = adjacency @ ego
    propagated = (ego + first + adjacency @ first) / 3
    propagated_users, propagated_items = propagated[: model.num_users], propagated[model.num_users :]
    ids = torch.cat([batch["item_id"][:, None], batch["neg_item_id"]], 1)
    scores = (propagated_users[batch["user_id"]][:, None] * propagated_items[ids]).sum(-1)
    ego = (model.user_table(batch["user_id"]), model.item_table(ids))
    reference = bpr_loss(scores[:, 0], scores[:, 1:]) + 0.1 * l2_penalty(*ego, batch_size=5)
    reference.backward()
    assert float(fast.detach()) == pytest.approx(float(reference.detach()), abs=1e-6)
    for got, want in zip(fast_grads, _grads(model), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("negatives", [1, 3])
def test_gather_pair_scores_gradients_add_up_whichever_outputs_feed_the_loss(negatives: int) -> None:
    torch.manual_seed(negatives)
    users, items = torch.randint(0, 6, (32,)), torch.randint(0, 9, (32, 1 + negatives))
    tables = [(torch.randn(6, 4) * 2).requires_grad_(), (torch.randn(9, 4) * 2).requires_grad_()]
    weights = torch.randn(32, 1 + negatives)

    def objectives(scores: torch.Tensor, squares: torch.Tensor, bpr: torch.Tensor) -> list[torch.Tensor]:
        return [bpr, (scores * weights).sum() + 3 * bpr, 0.5 * squares + bpr]

    scores, squares, bpr = gather_pair_scores(*tables, users, items, padding=0)
    reference_scores = (tables[0][users][:, None] * tables[1][items]).sum(-1)
    reference = bpr_loss(reference_scores[:, 0], reference_scores[:, 1:])
    assert float(bpr.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
    for position, objective in enumerate(objectives(scores, squares, bpr)):
        fast = torch.autograd.grad(objective, tables, retain_graph=True)
        plain_tables = [table.detach().clone().requires_grad_() for table in tables]
        user_vec, item_vec = plain_tables[0][users], plain_tables[1][items]
        plain_scores = (user_vec[:, None] * item_vec).sum(-1)
        plain_squares = user_vec.pow(2).sum() + item_vec.pow(2).sum()
        plain_bpr = bpr_loss(plain_scores[:, 0], plain_scores[:, 1:])
        want = torch.autograd.grad(objectives(plain_scores, plain_squares, plain_bpr)[position], plain_tables)
        for got, expected in zip(fast, want, strict=True):
            expected = expected.clone()
            expected[0] = 0.0  # the padding row gets no gradient
            torch.testing.assert_close(got, expected)


def test_gather_rows_matches_embedding_with_padding() -> None:
    table = torch.nn.Embedding(10, 4, padding_idx=0)
    ids = torch.tensor([[0, 3, 3], [9, 0, 1]])
    weights = torch.randn(2, 3, 4)
    (gather_rows(table, ids) * weights).sum().backward()
    fast = table.weight.grad.clone()
    table.weight.grad = None
    (table(ids) * weights).sum().backward()
    torch.testing.assert_close(fast, table.weight.grad)


def test_fast_dropout_keeps_the_expected_share_unbiased_and_scales_gradients_by_its_mask() -> None:
    torch.manual_seed(0)
    dropout = FastDropout(0.2)
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x)
    assert float((y == 0).float().mean()) == pytest.approx(0.2, abs=0.005)
    assert float(y.detach().mean()) == pytest.approx(1.0, abs=0.01)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())
    assert torch.equal(dropout.eval()(x), x)


def test_mlp_onednn_path_matches_the_default_linear() -> None:
    torch.manual_seed(0)
    mlp = MLP(12, (16, 8))
    x = torch.randn(32, 12, requires_grad=True)
    mlp(x).square().sum().backward()
    fast = [*_grads(mlp), x.grad.clone()]
    mlp.zero_grad()
    x.grad = None
    with torch.autocast("cpu", enabled=False):
        saved, features._ONEDNN_LINEAR = features._ONEDNN_LINEAR, None
        try:
            mlp(x).square().sum().backward()
        finally:
            features._ONEDNN_LINEAR = saved
    for got, want in zip(fast, [*_grads(mlp), x.grad], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_dense_membership_agrees_with_binary_search() -> None:
    torch.manual_seed(0)
    users, items = torch.randint(0, 50, (500,)), torch.randint(0, 40, (500,))
    dense = InteractionSet(users, items, 40)
    searched = InteractionSet(users, items, 40)
    searched._dense = None
    assert dense._dense is not None
    query_users, query_items = torch.randint(0, 60, (300, 1)), torch.randint(0, 40, (300, 3))
    assert torch.equal(dense.contains(query_users, query_items), searched.contains(query_users, query_items))
    assert not bool(dense.contains(torch.tensor([-1, 70]), torch.tensor([0, 0])).any())  # outside the grid
