"""DIN: shapes, that padded history positions are ignored, and that it learns a planted history rule."""

from __future__ import annotations

import pytest
import torch
from tests.fixtures.ranking import fit
from torch import Tensor

from recplane.models.din import DIN, DINConfig
from recplane.models.features import DenseField, SparseField
from recplane.training.metrics import auc

ITEMS, GROUPS, MAX_LEN, ROWS = 30, 5, 6, 512


def _group_rows(seed: int = 3) -> dict[str, Tensor]:
    """Random histories and candidates; label 1 when the candidate's group (id % 5) appears in the history."""
    gen = torch.Generator().manual_seed(seed)
    history = torch.randint(0, ITEMS, (ROWS, MAX_LEN), generator=gen)
    lengths = torch.randint(1, 4, (ROWS,), generator=gen)
    real = torch.arange(MAX_LEN) < lengths.unsqueeze(1)
    history = history.masked_fill(~real, 0)
    candidate = torch.randint(0, ITEMS, (ROWS,), generator=gen)
    same_group = (history % GROUPS == (candidate % GROUPS).unsqueeze(1)) & real
    return {
        "item_id": candidate,
        "history": history,
        "history_len": lengths,
        "label": same_group.any(dim=1).float(),
    }


def _model(**overrides: object) -> DIN:
    torch.manual_seed(0)
    settings: dict[str, object] = {"num_items": ITEMS, "embedding_size": 8, "mlp_hidden_size": (32, 16)}
    settings.update(overrides)
    return DIN(DINConfig(**settings))  # type: ignore[arg-type]


def test_forward_gives_one_logit_per_row_with_other_fields() -> None:
    model = _model(sparse_fields=(SparseField("user_id", 7),), dense_fields=(DenseField("age"),))
    batch = {**_group_rows(), "user_id": torch.randint(0, 7, (ROWS,)), "age": torch.rand(ROWS)}
    out = model(batch)
    assert out.keys() == {"label"} and out["label"].shape == (ROWS,)
    assert model.interest(batch).shape == (ROWS, 8)
    signature = model.signature()
    assert {"item_id", "history", "history_len", "user_id", "age", "label"} == set(signature.inputs)
    assert signature.feature_names == ("item_id", "history", "user_id", "age")


def test_values_in_padded_history_positions_do_not_change_the_output() -> None:
    model = _model().eval()
    batch = _group_rows()
    padded = torch.arange(MAX_LEN) >= batch["history_len"].unsqueeze(1)
    noisy = dict(batch, history=batch["history"].clone())
    noisy["history"][padded] = torch.randint(0, ITEMS, (int(padded.sum()),))
    with torch.no_grad():
        torch.testing.assert_close(model(noisy)["label"], model(batch)["label"])
        changed = dict(batch, history=batch["history"].clone())
        changed["history"][:, 0] = (changed["history"][:, 0] + 1) % ITEMS  # a real position: must matter
        assert not torch.allclose(model(changed)["label"], model(batch)["label"])


def test_field_named_like_a_din_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Fields \['history'\] clash"):
        DINConfig(num_items=3, sparse_fields=(SparseField("history", 3),))


@pytest.mark.parametrize("activation", ["dice", "relu"])
def test_learns_a_planted_history_rule(activation: str) -> None:
    model = _model(activation=activation)
    batch = _group_rows()
    losses = fit(model, batch, steps=80, lr=0.01)
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    assert auc(batch["label"], model.predict(batch)["label"]) >= 0.9
