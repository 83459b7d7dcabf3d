"""Training specs: YAML in, TrainConfig out, overrides by dotted keys, and errors that name the bad key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recplane.errors import InvalidSpec
from recplane.training.spec import TrainSpec, load_train_spec

SPEC = """
name: mf-small
dataset: ratings
version: 3
train:
  model: mf
  epochs: 4
  lr: 0.01
  params: {embedding_size: 16}
search:
  lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
  params.embedding_size: {type: categorical, choices: [8, 16]}
"""


def test_yaml_file_becomes_a_spec_and_a_train_config(tmp_path: Path) -> None:
    path = tmp_path / "mf.yaml"
    path.write_text(SPEC)
    spec = load_train_spec(path)
    config = spec.train_config()
    assert (spec.dataset, spec.version, spec.workers) == ("ratings", 3, 1)
    assert (config.model, config.epochs, config.lr, config.params) == ("mf", 4, 0.01, {"embedding_size": 16})
    assert set(spec.search) == {"lr", "params.embedding_size"}


def test_dotted_overrides_reach_nested_train_settings_and_top_level_keys() -> None:
    spec = load_train_spec(SPEC).with_overrides({"params.embedding_size": 8, "epochs": 2, "workers": 2})
    assert spec.train["params"] == {"embedding_size": 8}
    assert spec.train_config().epochs == 2
    assert spec.workers == 2
    assert load_train_spec(SPEC).train["params"] == {"embedding_size": 16}  # the original is untouched


def test_round_trips_through_yaml() -> None:
    spec = load_train_spec(SPEC)
    assert load_train_spec(spec.to_yaml()) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dataset: d\ntrain: {modle: mf}\n", "Unknown train setting(s) ['modle']"),
        ("dataset: d\ntrain: {model: nope}\n", "Unknown model 'nope'"),
        ("dataset: d\nworkers: 0\n", "workers"),
        ("train: {model: mf}\n", "dataset"),
        ("dataset: d\nsearch: {lr: {type: float, low: 1, high: 0}}\n", "'low' < 'high'"),
        ("dataset: d\nsearch: {x: {type: categorical}}\n", "choices"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        load_train_spec(text)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="does not exist"):
        load_train_spec(tmp_path / "missing.yaml")


def test_run_name_defaults_to_model_and_dataset() -> None:
    assert TrainSpec(dataset="ratings", train={"model": "lightgcn"}).run_name == "lightgcn-ratings"
