"""Deployment specs: YAML in, typed spec out, every bad field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from recplane.errors import InvalidSpec
from recplane.serving.spec import DeploymentSpec, ModelRef, load_deployment

YAML = """
name: home-feed
retrieval: {name: mf-shop}
ranking: {name: deepfm-shop, version: 3}
features: ranker_features
candidates: 100
rules:
  items: shop_items
  max_per_category: 2
  boosts: [{category: sale, multiply: 1.5}, {items: [1, "a"], add: 0.1}]
  block_items: [13]
fallback: {kind: content, min_interactions: 3}
logging: {impressions: home_feed_impressions, log_features: true}
serving: {max_batch: 64, threads: 2}
"""


def test_a_yaml_deployment_loads_with_defaults_filled(tmp_path: Path) -> None:
    path = tmp_path / "home.yaml"
    path.write_text(YAML)
    spec = load_deployment(path)
    assert spec.retrieval == ModelRef(name="mf-shop", alias="production")
    assert spec.retrieval.ref == "production" and spec.ranking is not None and spec.ranking.ref == 3
    assert spec.k == 10 and spec.index == "auto" and spec.candidates == 100
    assert spec.rules.exclude_seen and spec.rules.category_column == "category"
    assert spec.rules.boosts[1].items == [1, "a"]
    assert spec.fallback.kind == "content" and spec.serving.max_batch == 64 and spec.serving.max_wait_ms == 2.0
    assert load_deployment(spec.to_yaml()) == spec == load_deployment(spec.model_dump())


def test_latest_when_neither_alias_nor_version_is_given() -> None:
    assert ModelRef(name="mf", alias=None).ref == "latest"
    assert ModelRef(name="mf", alias="staging", version=2).ref == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"candidates": 0}, "candidates: Input should be greater than or equal to 1"),
        ({"index": "annoy"}, "index: Input should be 'auto', 'exact', 'hnsw' or 'ivf'"),
        ({"rules": {"max_per_category": 2}}, "category rules .* need 'items'"),
        ({"rules": {"boosts": [{"multiply": 2}]}}, "a boost needs 'items' or a 'category'"),
        ({"fallback": {"kind": "random"}}, "fallback.kind"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"name": "Home Feed"}, "name: String should match pattern"),
    ],
)
def test_bad_fields_are_named(change: dict[str, object], message: str) -> None:
    data = {"name": "home", "retrieval": {"name": "mf"}, **change}
    with pytest.raises(InvalidSpec, match=message):
        load_deployment(data)


def test_a_spec_must_be_a_mapping() -> None:
    with pytest.raises(InvalidSpec, match="must be a mapping"):
        load_deployment("- just\n- a list\n")
    assert isinstance(load_deployment("name: x\nretrieval: {name: mf}\n"), DeploymentSpec)
