"""Served-feature logging and skew reports end to end, on the embedded store and on a real Redis.

Lookups logged with ``log=True`` land in the ``feature_log`` dataset; a skew report recomputes each logged value
with the training-set engine as of its serving time. Unchanged, online equals offline (materialization runs
the same engine), so the report finds nothing; a value written into the online store by hand, or a store that
missed newer rows, shows up as skew of exactly that feature, with the example that proves it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recplane import Client
from recplane.auth import Principal
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidInput, NotFound
from recplane.features.spec import FeatureDefinitions, load_feature_definitions
from recplane.runtime import Runtime

T0 = datetime(2026, 1, 1, tzinfo=UTC)
END = T0 + timedelta(days=6)
USERS = 40
DEFINITIONS = """
entities: [{name: user, join_keys: [user_id]}]
feature_views:
  - name: user_stats
    entities: [user]
    source: purchases
    created_time: created
    ttl: 2d
    features:
      - price
      - emb
      - {name: spend, expr: "price * quantity"}
      - {name: buys_3d, agg: count, window: 3d}
      - {name: spend_3d, agg: sum, column: price, window: 3d}
      - {name: recent, agg: last_n, column: quantity, n: 3, window: 5d}
feature_services: [{name: ranker, features: ["user_stats:*"]}]
"""
FEATURES = [
    "user_stats:price",
    "user_stats:emb",
    "user_stats:spend",
    "user_stats:buys_3d",
    "user_stats:spend_3d",
    "user_stats:recent",
]
SPEC = {
    "name": "purchases",
    "team": "shop",
    "event_time": "ts",
    "columns": {
        "user_id": "int64",
        "price": "float64",
        "quantity": "int32",
        "emb": "vector<float32, 3>",
        "ts": "timestamp",
        "created": "timestamp",
    },
}


def _rows(seed: int = 11) -> list[dict[str, object]]:
    """Seeded purchases before END on a 6-hour grid (event-time ties broken by created time), some too old."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for user in range(1, USERS + 1):
        for _ in range(rng.randint(1, 6)):
            event = T0 + timedelta(hours=6 * rng.randint(0, 23))
            rows.append(
                {
                    "user_id": user,
                    "price": round(rng.uniform(1, 9), 2),
                    "quantity": rng.randint(1, 4),
                    "emb": [rng.random() for _ in range(3)],
                    "ts": event,
                    "created": event + timedelta(minutes=rng.choice([0, 5, 30])),
                }
            )
    return rows


@pytest.fixture(params=["embedded", "redis"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    location = request.getfixturevalue("redis_url") if request.param == "redis" else "embedded"
    # Streaming updates would materialize as of now; these tests pin times in the past.
    settings = Settings(home=tmp_path / "home", online_store=location, stream_features=False)
    with Client(settings=settings) as opened:
        runtime = _runtime(opened)
        if request.param == "redis":
            from recplane.features.online import RedisOnlineStore

            runtime.__dict__["online_store"] = RedisOnlineStore(
                location, prefix=f"recplane:test:{uuid.uuid4().hex[:8]}:"
            )
        opened.create_dataset(SPEC)
        opened.ingest("purchases", _rows())
        opened.apply_features(DEFINITIONS)
        opened.materialize(end=END)
        yield opened
        if request.param == "redis":
            for view in runtime.online_store.row_counts():
                runtime.online_store.delete_view(view)


def _runtime(client: Client) -> Runtime:
    runtime: Runtime = client._impl.runtime  # type: ignore[union-attr]
    return runtime


USER_IDS = list(range(1, USERS + 3))  # the last two never bought anything: missing online, empty offline


def test_unchanged_store_has_no_skew_for_any_feature(client: Client) -> None:
    first = client.online_features({"user_id": USER_IDS}, "ranker", now=END, log=True)
    later = END + timedelta(hours=1)  # no rows after END: online still equals offline an hour later
    second = client.online_features([{"user_id": user} for user in USER_IDS[:5]], FEATURES[:3], now=later, log=True)
    assert first.request_id and second.request_id and first.request_id != second.request_id
    assert "expired" in first.statuses and "missing" in first.statuses  # the interesting cases are covered

    report = client.feature_skew(T0)
    assert report.requests == 2
    assert report.mismatches == 0 and report.mismatch_rate == 0.0, [r for r in report.features if r.mismatches]
    assert report.rows_compared == len(USER_IDS) * len(FEATURES) + 5 * 3
    assert {row.feature for row in report.features} == set(FEATURES)
    assert report.feature("user_stats:price").rows_compared == len(USER_IDS) + 5
    assert report.feature("user_stats:spend_3d").numeric_rows == len(USER_IDS)
    assert report.feature("user_stats:spend_3d").max_abs_diff == 0.0
    assert report.skipped == {}
    logged = client.read("feature_log")
    assert set(logged["request_id"].to_pylist()) == {first.request_id, second.request_id}


def test_a_corrupted_online_value_is_skew_of_that_feature_with_its_example(client: Client) -> None:
    point = ["user_stats:price", "user_stats:emb", "user_stats:spend"]
    before = client.online_features({"user_id": [1]}, point, now=END)
    assert before.statuses == ["ok"]
    served = before.row(0)
    event_time = before.event_times["user_stats"][0]
    assert event_time is not None
    # A newer created time wins in the store; a write replaces the whole point row, so it carries every point
    # feature unchanged except the price.
    _runtime(client).online_store.write(
        "user_stats",
        [{"user_id": 1, **served, "price": served["price"] + 100.0, "ts": event_time, "created": END}],
        key_columns=["user_id"],
        feature_columns=["price", "emb", "spend"],
        event_time_column="ts",
        created_time_column="created",
    )
    answer = client.online_features({"user_id": [1, 2, 3]}, "ranker", now=END, log=True)
    assert answer.values["price"][0] == served["price"] + 100.0

    whole = client.feature_skew(T0)
    assert {row.feature: row.mismatches for row in whole.features if row.mismatches} == {"user_stats:price": 1}
    assert whole.features[0].feature == "user_stats:price"  # worst first
    assert whole.mismatches == 1 and whole.rows_compared == 3 * len(FEATURES)

    report = client.feature_skew(timedelta(days=400), features=["user_stats:price", "user_stats:buys_3d"])
    assert {row.feature for row in report.features} == {"user_stats:price", "user_stats:buys_3d"}
    price = report.feature("user_stats:price")
    assert (price.rows_compared, price.mismatches, price.missing_online) == (3, 1, 0)
    assert price.mismatch_rate == pytest.approx(1 / 3)
    assert price.max_abs_diff == pytest.approx(100.0)
    assert price.mean_abs_diff == pytest.approx(100.0 / price.numeric_rows)
    assert price.max_rel_diff == pytest.approx(100.0 / (served["price"] + 100.0))
    [example] = price.examples
    assert example.entity == {"user_id": 1}
    assert example.request_id == answer.request_id
    assert example.served_at == END and example.status == "ok"
    assert example.online == pytest.approx(served["price"] + 100.0)
    assert example.offline == pytest.approx(served["price"])
    assert report.feature("user_stats:buys_3d").mismatches == 0


def test_rows_the_store_never_received_show_as_skew(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", stream_features=False)
    with Client(settings=settings) as client:
        client.create_dataset(SPEC)
        client.ingest("purchases", _rows())
        client.apply_features(DEFINITIONS)
        client.materialize(end=END)
        newer = END + timedelta(hours=1)
        late = {"price": 42.0, "quantity": 1, "emb": [0.0, 0.0, 0.0], "ts": newer, "created": newer}
        client.ingest("purchases", [{"user_id": 3, **late}, {"user_id": 999, **late}])
        served_at = newer + timedelta(minutes=5)
        client.online_features({"user_id": [3, 4, 999]}, ["user_stats:price"], now=served_at, log=True)
        report = client.feature_skew(T0)
    price = report.feature("user_stats:price")
    assert (price.rows_compared, price.mismatches, price.missing_online) == (3, 2, 1)
    stale, unseen = price.examples
    assert stale.entity == {"user_id": 3} and stale.offline == 42.0 and stale.online != 42.0
    assert unseen.entity == {"user_id": 999} and (unseen.online, unseen.offline, unseen.status) == (
        None,
        42.0,
        "missing",
    )


def test_logged_rows_survive_close_and_the_setting_logs_every_lookup(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", stream_features=False, log_served_features=True)
    with Client(settings=settings) as client:
        client.create_dataset(SPEC)
        client.ingest("purchases", _rows())
        client.apply_features(DEFINITIONS)
        client.materialize(end=END)
        logged = client.online_features({"user_id": [1, 2]}, "ranker", now=END)
        unlogged = client.online_features({"user_id": [1, 2]}, "ranker", now=END, log=False)
        assert logged.request_id is not None and unlogged.request_id is None
        # closing commits what the background thread has not yet
    with Client(settings=settings) as reopened:
        table = reopened.read("feature_log")
        assert table.num_rows == 2 * len(FEATURES)
        assert set(table["request_id"].to_pylist()) == {logged.request_id}
        assert reopened.get_dataset("feature_log").team == "default"
        assert reopened.feature_skew(T0).mismatches == 0


def test_the_log_is_team_checked_and_must_have_the_log_schema(tmp_path: Path) -> None:
    with Runtime(Settings(home=tmp_path / "home", stream_features=False)) as runtime:
        shop, growth = Principal("shop"), Principal("growth")
        runtime.datasets.create(SPEC, principal=shop)
        runtime.ingestion.ingest("purchases", _rows(), principal=shop)
        runtime.features.apply(_definitions(), principal=shop)
        runtime.materializer.materialize(principal=shop, end=END)
        service = runtime.online_features
        answer = service.online_features({"user_id": [1]}, "ranker", principal=shop, now=END, log=True)
        assert answer.request_id is not None
        assert runtime.datasets.get("feature_log", principal=shop).team == "shop"
        with pytest.raises(Forbidden, match="feature_log"):
            runtime.feature_skew.report(T0, principal=growth)
        runtime.datasets.create({"name": "not_a_log", "team": "shop", "columns": {"x": "int64"}}, principal=shop)
        with pytest.raises(InvalidInput, match="not a served-feature log"):
            service.online_features(
                {"user_id": [1]}, "ranker", principal=shop, now=END, log=True, log_dataset="not_a_log"
            )
        with pytest.raises(InvalidInput, match="ghost"):
            runtime.feature_skew.report(T0, principal=shop, features="ghost")
        with pytest.raises(NotFound, match="log=True"):
            runtime.feature_skew.report(T0, principal=shop, dataset="never_logged")
        with pytest.raises(InvalidInput, match="after"):
            runtime.feature_skew.report(datetime.now(UTC) + timedelta(days=1), principal=shop)


def _definitions() -> FeatureDefinitions:
    return load_feature_definitions(DEFINITIONS)
