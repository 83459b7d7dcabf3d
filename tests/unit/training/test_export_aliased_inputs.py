"""An example batch that passes one tensor under two keys still exports a graph reading each key from its own
input (torch.export and the ONNX export turn one example tensor object into one graph input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recplane.models.deepfm import DeepFM, DeepFMConfig
from recplane.models.features import SparseField
from recplane.training.export import export_model, load_exported


@pytest.mark.parametrize("form", ["torchscript", "torch_export", "onnx"])
def test_an_example_passing_one_tensor_under_two_keys_exports_a_graph_reading_both_keys(
    form: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    fields = (SparseField("user_id", 20), SparseField("item_id", 20))
    model = DeepFM(DeepFMConfig(sparse_fields=fields, embedding_size=4, mlp_hidden_size=(8,))).eval()
    ids = torch.arange(1, 9)
    export_model(model, tmp_path, example_batch={"user_id": ids, "item_id": ids}, forms=(form,), repeats=1)
    exported = load_exported(tmp_path)

    batch = {"user_id": torch.tensor([1, 2, 3, 4]), "item_id": torch.tensor([9, 5, 17, 11])}
    with torch.no_grad():
        wanted = model.predict(batch)["label"].numpy()
    got = exported.predict(batch)["label"]

    assert exported.form == form
    np.testing.assert_allclose(got, wanted, rtol=1e-4, atol=1e-5)
