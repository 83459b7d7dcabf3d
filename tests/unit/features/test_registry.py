"""The feature registry: validation at registration, terraform-like plans, versions only for changed objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recplane import Client
from recplane.config import Settings
from recplane.errors import InvalidSpec, NotFound
from recplane.features.registry import diff_specs

PURCHASES = {
    "name": "purchases",
    "event_time": "ts",
    "columns": {
        "user_id": "int64",
        "item_id": "int64",
        "price": "float64",
        "quantity": "int32",
        "title": "string",
        "ts": "timestamp",
        "created": "timestamp",
    },
}
DEFINITIONS = """
entities:
  - {name: user, join_keys: [user_id]}
feature_views:
  - name: user_stats
    entities: [user]
    source: purchases
    created_time: created
    ttl: 30d
    features:
      - price
      - {name: spend, expr: "price * quantity"}
      - {name: buys_7d, agg: count, window: 7d}
feature_services:
  - {name: ranker, features: ["user_stats:price", "user_stats:buys_7d"]}
"""


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as opened:
        opened.create_dataset(PURCHASES)
        yield opened


def _view_yaml(features: str, **fields: str) -> str:
    extra = "".join(f"\n    {key}: {value}" for key, value in fields.items())
    return (
        "entities:\n  - {name: user, join_keys: [user_id]}\n"
        f"feature_views:\n  - name: v\n    entities: [user]\n    source: purchases{extra}\n"
        f"    features:\n{features}"
    )


def test_first_apply_creates_every_definition_at_version_one(client: Client) -> None:
    plan = client.apply_features(DEFINITIONS)
    assert plan.applied
    assert [(c.kind, c.name, c.action, c.new_version) for c in plan.changes] == [
        ("entity", "user", "create", 1),
        ("feature_view", "user_stats", "create", 1),
        ("feature_service", "ranker", "create", 1),
    ]
    assert [info.name for info in client.list_features(kind="feature_view")] == ["user_stats"]


def test_reapplying_the_same_definitions_changes_nothing(client: Client) -> None:
    client.apply_features(DEFINITIONS)
    plan = client.apply_features(DEFINITIONS)
    assert not plan.has_changes
    assert client.get_feature_definition("feature_view", "user_stats").version == 1


def test_a_changed_view_gets_a_new_version_with_field_level_changes(client: Client) -> None:
    client.apply_features(DEFINITIONS)
    changed = DEFINITIONS.replace("ttl: 30d", "ttl: 7d").replace('"price * quantity"', '"price * quantity * 2"')
    plan = client.plan_features(changed)
    assert not plan.applied
    update = next(c for c in plan.changes if c.action == "update")
    assert (update.name, update.current_version, update.new_version) == ("user_stats", 1, 2)
    assert {(c.path, c.old, c.new) for c in update.changes} == {
        ("ttl", "30d", "7d"),
        ("features.spend.expr", "price * quantity", "price * quantity * 2"),
    }
    assert "~ feature_view user_stats (v1 -> v2)" in plan.render()
    assert client.get_feature_definition("feature_view", "user_stats").version == 1  # a plan writes nothing
    client.apply_features(changed)
    assert client.get_feature_definition("feature_view", "user_stats").spec["ttl"] == "7d"
    assert client.get_feature_definition("feature_view", "user_stats", version=1).spec["ttl"] == "30d"
    assert [i.version for i in client.feature_history("feature_view", "user_stats")] == [2, 1]


def test_applying_part_of_the_definitions_keeps_the_rest_and_prune_deletes_them(client: Client) -> None:
    client.apply_features(DEFINITIONS)
    only_entity = "entities:\n  - {name: user, join_keys: [user_id]}\n"
    assert [c.action for c in client.apply_features(only_entity).changes] == ["unchanged"]
    assert len(client.list_features()) == 3
    plan = client.plan_features(only_entity, prune=True)
    assert sorted((c.name, c.action) for c in plan.changes) == [
        ("ranker", "delete"),
        ("user", "unchanged"),
        ("user_stats", "delete"),
    ]
    client.apply_features(only_entity, prune=True)
    assert [info.name for info in client.list_features()] == ["user"]
    with pytest.raises(NotFound, match="No feature view named 'user_stats'"):
        client.get_feature_definition("feature_view", "user_stats")


def test_pruning_an_entity_a_remaining_view_uses_is_refused(client: Client) -> None:
    client.apply_features(DEFINITIONS)
    views_only = DEFINITIONS.split("feature_views:")[1]
    with pytest.raises(InvalidSpec, match="unknown entity"):
        client.apply_features("feature_views:" + views_only, prune=True)


@pytest.mark.parametrize(
    ("features", "fields", "message"),
    [
        ("      - nope\n", {}, r"features.nope: column 'nope' is not in the source"),
        ("      - {name: s, agg: sum, column: title, window: 1d}\n", {}, "sum needs a numeric column; 'title'"),
        ('      - {name: s, expr: "title + 1"}\n', {}, "does not work on the source row"),
        ('      - {name: s, expr: "sum(price)"}\n', {}, "aggregates rows"),
        ("      - {name: s, expr: \"read_csv('/etc/passwd')\"}\n", {}, "does not work on the source row"),
        ('      - {name: user_id, expr: "1"}\n', {}, "is a join key of the view"),
        ("      - price\n", {"created_time": "title"}, "created_time: column 'title' is string, not a timestamp"),
        ("      - price\n", {"source": "clicks"}, "no dataset named 'clicks'"),
        ("      - price\n", {"event_time": "missing"}, "event_time: 'missing' is not a column"),
    ],
)
def test_invalid_views_are_refused_naming_the_object_and_field(
    client: Client, features: str, fields: dict[str, str], message: str
) -> None:
    text = (
        _view_yaml(features, **fields)
        if "source" not in fields
        else _view_yaml(features).replace("source: purchases", f"source: {fields['source']}")
    )
    with pytest.raises(InvalidSpec, match=message) as raised:
        client.apply_features(text)
    assert "feature view 'v'" in raised.value.message
    assert client.list_features() == []


def test_unknown_entities_and_join_keys_are_refused(client: Client) -> None:
    with pytest.raises(InvalidSpec, match=r"unknown entity \['item'\]"):
        client.apply_features(_view_yaml("      - price\n").replace("entities: [user]", "entities: [item]"))
    with pytest.raises(InvalidSpec, match=r"join key\(s\) \['account_id'\] are not columns of dataset 'purchases'"):
        client.apply_features(_view_yaml("      - price\n").replace("join_keys: [user_id]", "join_keys: [account_id]"))


def test_views_over_views_are_refused(client: Client) -> None:
    client.apply_features(DEFINITIONS)
    derived = "feature_views:\n  - {name: derived, entities: [user], source: user_stats, features: [price]}\n"
    with pytest.raises(InvalidSpec, match="'user_stats' is a feature view; views read datasets, not other views"):
        client.apply_features(derived)


def test_services_must_name_known_views_and_features(client: Client) -> None:
    text = DEFINITIONS.replace('"user_stats:buys_7d"', '"user_stats:buys_30d", "other:x"')
    with pytest.raises(InvalidSpec, match="2 problem") as raised:
        client.apply_features(text)
    assert "view 'user_stats' has no feature 'buys_30d'" in raised.value.message
    assert "unknown feature view 'other'" in raised.value.message


def test_diff_matches_named_list_items_by_name() -> None:
    old = {"features": [{"name": "a", "expr": "1"}, {"name": "b", "expr": "2"}]}
    new = {"features": [{"name": "b", "expr": "3"}, {"name": "c", "expr": "4"}]}
    assert [(c.path, c.old, c.new) for c in diff_specs(old, new)] == [
        ("features.a", {"name": "a", "expr": "1"}, None),
        ("features.b.expr", "2", "3"),
        ("features.c", None, {"name": "c", "expr": "4"}),
    ]


def test_cli_apply_dry_run_prints_the_plan_and_registers_nothing(settings: Settings, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recplane.cli.app import app

    with Client(settings=settings) as setup:
        setup.create_dataset(PURCHASES)
    path = tmp_path / "features.yaml"
    path.write_text(DEFINITIONS)
    home = ["--home", str(settings.home)]
    dry = CliRunner().invoke(app, [*home, "features", "apply", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "+ feature_view user_stats (v1)" in dry.output and "Dry run" in dry.output
    listed = CliRunner().invoke(app, [*home, "features", "list", "--json"])
    assert listed.exit_code == 0 and listed.output.strip() == "[]"
    applied = CliRunner().invoke(app, [*home, "features", "apply", str(path)])
    assert "Applied: 3 to create" in applied.output
    shown = CliRunner().invoke(app, [*home, "features", "show", "view", "user_stats"])
    assert "version 1" in shown.output and "price * quantity" in shown.output
