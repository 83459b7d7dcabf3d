"""Export for serving: every zoo model round-trips through its chosen form, at batch sizes it was not exported at.

ONNX export takes seconds per model, so the zoo models choose between the two torch forms and every form (ONNX
included) is tried on DeepFM; the sparse MoE ranker's top-k dispatch cannot be captured and must fall back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from recplane.errors import InvalidInput
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
from recplane.training.export import ExportManifest, export_model, load_exported

USERS, ITEMS, LENGTH = 12, 20, 5
TORCH_FORMS = ("torchscript", "torch_export")
Example = tuple[RecModel, dict[str, Tensor]]




def _rows(rows: int, seed: int) -> dict[str, Tensor]:
    """Random ids, right-padded histories (padding holds junk: it must be ignored), a bag field and a dense one."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "user_id": torch.randint(1, USERS, (rows,), generator=gen),
        "item_id": torch.randint(1, ITEMS, (rows,), generator=gen),
        "history": torch.randint(1, ITEMS, (rows, LENGTH), generator=gen),
        "history_len": torch.randint(0, LENGTH + 1, (rows,), generator=gen),
        "genres": torch.randint(0, 6, (rows, 3), generator=gen),
        "genres_len": torch.randint(0, 4, (rows,), generator=gen),
        "age": torch.rand(rows, generator=gen),
        "label": torch.randint(0, 2, (rows,), generator=gen).float(),
    }


FIELDS = (SparseField("user_id", USERS), SparseField("item_id", ITEMS), SparseField("genres", 6, multi_valued=True))
DENSE = (DenseField("age"),)


def _deepfm() -> RecModel:
    return DeepFM(DeepFMConfig(sparse_fields=FIELDS, dense_fields=DENSE, embedding_size=4, mlp_hidden_size=(8,)))


def _dcn() -> RecModel:
    return DCNv2(DCNv2Config(sparse_fields=FIELDS, dense_fields=DENSE, embedding_size=4, mlp_hidden_size=(8,)))


def _din() -> RecModel:
    config = DINConfig(
        num_items=ITEMS, sparse_fields=FIELDS[:1], dense_fields=DENSE, embedding_size=4,
        attention_hidden_size=(8,), mlp_hidden_size=(8,),
    )  # fmt: skip
    return DIN(config)


def _mmoe() -> RecModel:
    return MMoE(MMoEConfig(sparse_fields=FIELDS, dense_fields=DENSE, embedding_size=4, expert_hidden_size=(8,)))


def _moe() -> RecModel:
    config = SparseMoEConfig(
        sparse_fields=FIELDS, embedding_size=4, num_experts=4, top_k=2, expert_hidden_size=8, expert_output_size=8
    )
    model = SparseMoERanker(config)
    torch.nn.init.normal_(model.moe.gate.weight)  # a decisive gate: rows of one batch go to different experts
    return model


def _mf() -> RecModel:
    return MF(USERS, ITEMS, dim=4)


def _lightgcn() -> RecModel:
    gen = torch.Generator().manual_seed(5)
    users, items = torch.randint(1, USERS, (40,), generator=gen), torch.randint(1, ITEMS, (40,), generator=gen)
    return LightGCN(USERS, ITEMS, users, items, dim=4, num_layers=2)


def _sasrec() -> RecModel:
    config = SASRecConfig(num_items=ITEMS, max_seq_length=LENGTH, hidden_size=8, n_layers=1, n_heads=2, inner_size=16)
    return SASRec(config)


def _two_tower() -> RecModel:
    return TwoTower(TwoTowerConfig(USERS, ITEMS, embedding_dim=4, tower_dims=(8, 4), user_dense={"age": 1}))


BUILDERS: dict[str, Callable[[], RecModel]] = {
    "deepfm": _deepfm,
    "dcn_v2": _dcn,
    "din": _din,
    "mmoe": _mmoe,
    "sparse_moe": _moe,
    "mf": _mf,
    "lightgcn": _lightgcn,
    "sasrec": _sasrec,
    "two_tower": _two_tower,
}


def build(name: str) -> Example:
    """A small model (eval mode) and an example batch of 8 rows that holds more keys than it reads."""
    torch.manual_seed(0)
    return BUILDERS[name]().eval(), _rows(8, seed=1)


def _eager(model: RecModel, batch: dict[str, Tensor]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        if isinstance(model, RetrievalModel):
            return {"query_vector": model.user_representation(batch).numpy()}
        assert isinstance(model, RankingModel)
        return {task: value.numpy() for task, value in model.predict(batch).items()}


@pytest.mark.parametrize("name", [name for name in BUILDERS if name not in ("deepfm", "sparse_moe")])  # own tests
def test_every_model_round_trips_through_its_chosen_form_at_a_new_batch_size(name: str, tmp_path: Path) -> None:
    model, example = build(name)
    manifest = export_model(model, tmp_path, example_batch=example, forms=TORCH_FORMS, repeats=3)
    loaded = load_exported(tmp_path)
    fresh = _rows(5, seed=2)  # neither the example's size nor its rows
    got = loaded.predict(fresh)
    for output, wanted in _eager(model, fresh).items():
        np.testing.assert_allclose(got[output], wanted, rtol=1e-4, atol=1e-5)
    assert manifest.form in manifest.latency_ms and set(manifest.latency_ms) <= set(TORCH_FORMS)
    if isinstance(model, RetrievalModel):
        with torch.no_grad():
            np.testing.assert_allclose(loaded.item_vectors, model.item_representation().numpy(), rtol=1e-6)
        np.testing.assert_allclose(loaded.query_vectors(fresh), got["query_vector"])


def test_every_form_works_on_deepfm_and_the_manifest_says_which_was_fastest(tmp_path: Path) -> None:
    model, example = build("deepfm")
    manifest = export_model(model, tmp_path, example_batch=example, repeats=3)
    on_disk = ExportManifest.from_json((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    timed = manifest.latency_ms
    fastest = min(timed, key=lambda form: timed[form]["example_batch"] + timed[form]["batch_1"])
    assert manifest.form == fastest
    assert {"torchscript", "torch_export", "onnx"} <= set(timed), manifest.failures
    assert all(set(t) == {"example_batch", "batch_1"} and min(t.values()) > 0 for t in timed.values())
    # Labels and keys the model never reads are not inputs; the order is the signature's.
    assert [spec.name for spec in manifest.inputs] == ["user_id", "item_id", "genres", "genres_len", "age"]
    assert manifest.inputs[2].shape == ("B", 3) and manifest.inputs[2].dtype == "int64"
    assert manifest.outputs == ["label"] and manifest.example_batch_size == 8
    assert {"torch", "onnxruntime", "onnx"} <= set(manifest.versions)
    for form, artifact in manifest.artifacts.items():
        assert (tmp_path / artifact).is_file(), form
    fresh = _rows(3, seed=4)
    np.testing.assert_allclose(
        load_exported(tmp_path).predict(fresh)["label"], _eager(model, fresh)["label"], rtol=1e-4, atol=1e-5
    )


def test_a_form_that_specialises_on_its_example_is_recorded_as_failed_and_another_graph_is_used(
    tmp_path: Path,
) -> None:
    model, example = build("sparse_moe")
    manifest = export_model(model, tmp_path, example_batch=example, forms=TORCH_FORMS, repeats=3)
    # Index dispatch splits rows by data-dependent counts: the trace bakes them in, torch.export refuses them.
    assert {f"{form}/forward" for form in TORCH_FORMS} <= set(manifest.failures)
    assert manifest.graph == "dense_dispatch" and set(manifest.latency_ms) == set(TORCH_FORMS)
    fresh = _rows(13, seed=5)
    got = load_exported(tmp_path).predict(fresh)
    for task, wanted in _eager(model, fresh).items():
        np.testing.assert_allclose(got[task], wanted, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def exported_mmoe(tmp_path_factory: pytest.TempPathFactory) -> tuple[RecModel, dict[str, Tensor], Path]:
    model, example = build("mmoe")
    path = tmp_path_factory.mktemp("mmoe")
    export_model(model, path, example_batch=example, forms=TORCH_FORMS, choose="torchscript", repeats=1)
    return model, example, path


def test_forcing_a_form_exports_that_form(exported_mmoe: tuple[RecModel, dict[str, Tensor], Path]) -> None:
    _, _, path = exported_mmoe
    assert load_exported(path).form == "torchscript" and load_exported(path, form="torch_export").form == "torch_export"


@pytest.fixture(scope="module")
def exported_sasrec(tmp_path_factory: pytest.TempPathFactory) -> tuple[RecModel, Path]:
    model, example = build("sasrec")
    path = tmp_path_factory.mktemp("sasrec")
    export_model(model, path, example_batch=example, forms=("torch_export",), repeats=1)
    return model, path


def test_a_missing_key_raises_invalid_input_naming_it(exported_sasrec: tuple[RecModel, Path]) -> None:
    _, path = exported_sasrec
    with pytest.raises(InvalidInput, match=r"lacks \['history_len'\]"):
        load_exported(path).predict({"history": np.ones((2, LENGTH), dtype=np.int64)})


def test_wrong_dtypes_and_out_of_range_ids_raise_invalid_input(exported_sasrec: tuple[RecModel, Path]) -> None:
    _, path = exported_sasrec
    loaded = load_exported(path)
    lengths = np.array([2, 1])
    with pytest.raises(InvalidInput, match="'history' must hold int64"):
        loaded.predict({"history": np.ones((2, LENGTH)), "history_len": lengths})
    history = np.array([[3, ITEMS, 0, 0, 0], [4, 99, 0, 0, 0]])  # 99 sits in padding (ignored), ITEMS does not
    with pytest.raises(InvalidInput, match=f"holds id {ITEMS}, outside"):
        loaded.predict({"history": history, "history_len": lengths})


def test_shorter_histories_are_padded_to_the_exported_length(exported_sasrec: tuple[RecModel, Path]) -> None:
    model, path = exported_sasrec
    batch = {"history": torch.tensor([[3, 4], [5, 99]]), "history_len": torch.tensor([2, 1])}
    got = load_exported(path).query_vectors(batch)
    np.testing.assert_allclose(got, _eager(model, batch)["query_vector"], rtol=1e-4, atol=1e-5)


def test_weights_and_signature_rebuild_the_model(exported_mmoe: tuple[RecModel, dict[str, Tensor], Path]) -> None:
    model, example, tmp_path = exported_mmoe
    record = json.loads((tmp_path / "signature.json").read_text())
    assert record["model_class"] == "recplane.models.mmoe.MMoE"
    assert record["signature"]["tasks"] == ["click", "rating_ge_4"]
    assert record["config"]["expert_hidden_size"] == [8]
    torch.manual_seed(123)  # different initial weights: only the saved ones can make outputs agree
    rebuilt = _mmoe().eval()
    rebuilt.load_state_dict(torch.load(tmp_path / "weights.pt"))
    for task, value in _eager(rebuilt, example).items():
        np.testing.assert_allclose(value, _eager(model, example)[task], rtol=1e-6)


def test_an_example_of_one_row_is_refused(tmp_path: Path) -> None:
    model, example = build("mf")
    with pytest.raises(InvalidInput, match="at least 2 rows"):
        export_model(model, tmp_path, example_batch={k: v[:1] for k, v in example.items()})
