"""Feature definitions: parsing from YAML, Python files and objects, and their own consistency rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from recplane.errors import InvalidSpec
from recplane.features.spec import (
    Entity,
    Feature,
    FeatureDefinitions,
    FeatureView,
    load_feature_definitions,
    parse_feature_ref,
)

YAML = """
entities:
  - {name: user, join_keys: [user_id]}
feature_views:
  - name: user_stats
    entities: [user]
    source: purchases
    ttl: 30d
    tags: {team: growth}
    features:
      - price
      - {name: spend, expr: "price * quantity"}
      - {name: buys_7d, agg: count, window: 7d}
      - {name: recent, agg: last_n, column: item_id, n: 5, window: 30d}
feature_services:
  - {name: ranker, features: ["user_stats:*"]}
"""


def test_yaml_sections_load_into_typed_definitions() -> None:
    loaded = load_feature_definitions(YAML)
    view = loaded.feature_views[0]
    assert [entity.name for entity in loaded.entities] == ["user"]
    assert [feature.kind for feature in view.features] == ["column", "expression", "aggregation", "aggregation"]
    assert view.feature("price") == Feature(name="price")
    assert view.ttl_period is not None and view.ttl_period.days == 30
    assert loaded.feature_services[0].features == ["user_stats:*"]


def test_documents_with_a_kind_and_a_folder_of_files_load_together(tmp_path: Path) -> None:
    (tmp_path / "entities.yaml").write_text(
        "kind: entity\nname: user\njoin_keys: [user_id]\n---\nkind: entity\nname: item\njoin_keys: [item_id]\n"
    )
    (tmp_path / "views.py").write_text(
        "from recplane.features import FeatureView\n"
        "clicks = FeatureView(name='clicks', entities=['user'], source='events', features=[{'name': 'n', "
        "'agg': 'count', 'window': '1d'}])\n"
    )
    loaded = load_feature_definitions(tmp_path)
    assert sorted(entity.name for entity in loaded.entities) == ["item", "user"]
    assert [view.name for view in loaded.feature_views] == ["clicks"]


def test_objects_load_as_they_are() -> None:
    user = Entity(name="user", join_keys=["user_id"])
    loaded = load_feature_definitions([user])
    assert loaded == FeatureDefinitions(entities=[user])


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "x", "agg": "sum", "window": "1d"}, "needs a column"),
        ({"name": "x", "agg": "count"}, "needs a window"),
        ({"name": "x", "agg": "last_n", "column": "a", "window": "1d"}, "n .how many values"),
        ({"name": "x", "column": "a", "window": "1d"}, "window and n belong to aggregations"),
        ({"name": "x", "expr": "a + 1", "column": "a"}, "either expr"),
        ({"name": "x", "agg": "median", "column": "a", "window": "1d"}, "agg"),
        ({"name": "x", "agg": "count", "window": "7 days"}, "Duration"),
    ],
)
def test_inconsistent_features_are_refused_naming_the_view_and_feature(feature: dict, message: str) -> None:
    body = {"feature_views": [{"name": "v", "entities": ["user"], "source": "s", "features": [feature]}]}
    with pytest.raises(InvalidSpec, match=message) as raised:
        load_feature_definitions(body)
    assert "feature view 'v'" in raised.value.message and "features.0" in raised.value.message


def test_repeated_names_are_refused() -> None:
    with pytest.raises(ValueError, match="appear more than once"):
        FeatureView.model_validate({"name": "v", "entities": ["u"], "source": "s", "features": ["a", "a"]})
    with pytest.raises(InvalidSpec, match="Two entities are named 'user'"):
        load_feature_definitions("entities: [{name: user, join_keys: [a]}, {name: user, join_keys: [b]}]")


def test_unknown_sections_kinds_and_bad_yaml_say_what_is_expected() -> None:
    with pytest.raises(InvalidSpec, match="unknown section"):
        load_feature_definitions("views: []")
    with pytest.raises(InvalidSpec, match="kind 'table'"):
        load_feature_definitions("kind: table\nname: x")
    with pytest.raises(InvalidSpec, match="not valid YAML"):
        load_feature_definitions("entities: [")


def test_feature_references_are_view_colon_feature() -> None:
    assert parse_feature_ref("user_stats:spend") == ("user_stats", "spend")
    assert parse_feature_ref("user_stats:*") == ("user_stats", "*")
    with pytest.raises(InvalidSpec, match="view:feature"):
        parse_feature_ref("user_stats.spend")
