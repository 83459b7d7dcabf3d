"""The ``training_set:`` section of a training spec: its labels are the spec's dataset, with clear refusals."""

from __future__ import annotations

import pytest

from recplane.errors import InvalidInput, InvalidSpec
from recplane.training.spec import load_train_spec

SPEC = """
name: ranker
training_set:
  labels: ratings
  labels_version: 4
  features: demo_ranker
  feature_lag: 1s
train: {model: deepfm, epochs: 2}
"""


def test_the_labels_become_the_specs_dataset_and_version() -> None:
    spec = load_train_spec(SPEC)
    assert (spec.dataset, spec.version) == ("ratings", 4)
    assert spec.training_set is not None
    assert spec.training_set.features == "demo_ranker" and spec.training_set.lag_seconds == 1.0
    assert spec.training_set.label_time_col == "ts" and not spec.training_set.exclude_created_after_label
    again = load_train_spec(spec.to_yaml())
    assert again == spec
    assert spec.with_overrides({"version": 5}).version == 5


def test_feature_references_are_accepted_as_a_list() -> None:
    spec = load_train_spec(
        {"training_set": {"labels": "ratings", "features": ["user_stats:*"]}, "train": {"model": "dcn"}}
    )
    assert spec.training_set is not None and spec.training_set.features == ["user_stats:*"]
    assert spec.training_set.lag_seconds == 0.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"training_set": {"features": "svc"}}, "needs its labels"),
        ({"dataset": "other", "training_set": {"labels": "ratings", "features": "svc"}}, "differ; give it once"),
        ({"training_set": {"labels": "ratings", "features": []}}, "at least one 'view:feature'"),
        ({"training_set": {"labels": "ratings", "features": "svc", "feature_lag": "soon"}}, "Duration 'soon'"),
        ({"training_set": {"labels": "ratings", "features": "svc", "window": "1d"}}, "Extra inputs"),
    ],
)
def test_bad_sections_are_refused_with_the_reason(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        load_train_spec({**body, "train": {"model": "deepfm"}})


@pytest.mark.parametrize("model", ["mf", "lightgcn", "sasrec", "two_tower"])
def test_a_retrieval_model_cannot_train_on_a_training_set(model: str) -> None:
    with pytest.raises(InvalidInput, match="row features need a ranking model"):
        load_train_spec({"training_set": {"labels": "ratings", "features": "svc"}, "train": {"model": model}})
