"""SASRec: shapes, padding and causality masks, and that it learns a planted next-item rule."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from recplane.models.sasrec import SASRec, SASRecConfig

NUM_ITEMS = 16  # ids 1..15 are items, 0 is padding
MAX_LEN = 8


def _model(**overrides: object) -> SASRec:
    torch.manual_seed(0)
    settings: dict[str, object] = {
        "num_items": NUM_ITEMS,
        "max_seq_length": MAX_LEN,
        "hidden_size": 32,
        "n_layers": 1,
        "n_heads": 2,
        "inner_size": 64,
        "hidden_dropout_prob": 0.1,
        "attn_dropout_prob": 0.1,
    }
    settings.update(overrides)
    return SASRec(SASRecConfig(**settings))  # type: ignore[arg-type]


def _next(item: Tensor) -> Tensor:
    """The planted rule: the item after i is i + 1, wrapping from 15 back to 1."""
    return item % (NUM_ITEMS - 1) + 1


def _sequences(rows: int, seed: int = 1) -> dict[str, Tensor]:
    """Right-padded runs of consecutive items, with every-position targets and the next item."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(1, NUM_ITEMS, (rows,), generator=gen)
    lengths = torch.randint(2, MAX_LEN + 1, (rows,), generator=gen)
    full = [start]
    for _ in range(MAX_LEN):
        full.append(_next(full[-1]))
    runs = torch.stack(full, dim=1)  # [rows, MAX_LEN + 1]
    real = torch.arange(MAX_LEN) < lengths.unsqueeze(1)
    history = runs[:, :MAX_LEN].masked_fill(~real, 0)
    targets = runs[:, 1:].masked_fill(~real, 0)
    return {
        "history": history,
        "history_len": lengths,
        "target_seq": targets,
        "item_id": runs.gather(1, lengths.unsqueeze(1)).squeeze(1),
    }


def test_outputs_have_documented_shapes_and_signature() -> None:
    model = _model()
    batch = _sequences(4)
    batch["neg_item_id"] = torch.tensor([1, 2, 3, 4])
    out = model(batch)
    assert out["hidden"].shape == (4, MAX_LEN, 32) and out["user"].shape == (4, 32)
    assert out["score"].shape == out["neg_score"].shape == (4,)
    assert model.user_representation(batch).shape == (4, 32)
    assert model.item_representation().shape == (NUM_ITEMS, 32)
    assert model.item_representation(torch.tensor([3, 5])).shape == (2, 32)
    assert set(model.signature().inputs) >= {"history", "history_len", "item_id", "target_seq"}
    assert model.signature().outputs.keys() == out.keys()


def test_padding_item_is_never_recommended() -> None:
    model = _model().eval()
    scores = model.score_all(_sequences(3))
    assert scores.shape == (3, NUM_ITEMS)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_values_in_padded_positions_do_not_change_outputs() -> None:
    model = _model().eval()
    batch = _sequences(6)
    noisy = dict(batch, history=batch["history"].clone())
    padded = torch.arange(MAX_LEN) >= batch["history_len"].unsqueeze(1)
    noisy["history"][padded] = torch.randint(1, NUM_ITEMS, (int(padded.sum()),))
    with torch.no_grad():
        clean_out, noisy_out = model(batch), model(noisy)
    torch.testing.assert_close(clean_out["user"], noisy_out["user"])
    real = ~padded
    torch.testing.assert_close(clean_out["hidden"][real], noisy_out["hidden"][real])


def test_a_later_item_does_not_change_earlier_hidden_states() -> None:
    model = _model().eval()
    history = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10]])
    lengths = torch.tensor([MAX_LEN])
    changed = history.clone()
    changed[0, 5] = 1
    with torch.no_grad():
        before = model.encode(history, lengths)
        after = model.encode(changed, lengths)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_empty_history_reads_the_first_position_instead_of_failing() -> None:
    model = _model().eval()
    batch = {"history": torch.zeros(2, MAX_LEN, dtype=torch.long), "history_len": torch.tensor([0, 0])}
    user = model.user_representation(batch)
    torch.testing.assert_close(user[0], user[1])


def test_history_longer_than_max_seq_length_is_refused() -> None:
    with pytest.raises(ValueError, match="length 9 > max_seq_length 8"):
        _model().encode(torch.ones(1, 9, dtype=torch.long), torch.tensor([9]))


def test_bpr_needs_a_negative() -> None:
    model = _model(loss_type="BPR")
    batch = _sequences(2)
    del batch["target_seq"]
    with pytest.raises(ValueError, match="'neg_item_id'"):
        model.loss(batch, model(batch))


def _hit_at_1(model: SASRec, batch: dict[str, Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        top = model.score_all(batch).argmax(dim=1)
    model.train()
    return float((top == batch["item_id"]).float().mean())


@pytest.mark.parametrize(
    ("loss_type", "every_position"), [("CE", True), ("CE", False), ("BPR", True)], ids=["ce-all", "ce-last", "bpr"]
)
def test_learns_planted_next_item_rule(loss_type: str, every_position: bool) -> None:
    model = _model(loss_type=loss_type)
    batch = _sequences(96)
    if not every_position:
        del batch["target_seq"]
    gen = torch.Generator().manual_seed(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    first = last = 0.0
    for step in range(120):
        if loss_type == "BPR":  # a fresh uniform negative per position and step, as a trainer samples them
            batch["neg_target_seq"] = torch.randint(1, NUM_ITEMS, (96, MAX_LEN), generator=gen)
        optimizer.zero_grad()
        loss = model.loss(batch, model(batch))
        loss.backward()
        optimizer.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
    assert last < 0.5 * first
    assert _hit_at_1(model, batch) >= 0.9
