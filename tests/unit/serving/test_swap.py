"""HotSwapper with real registry versions and real Recommenders: follow an alias, drain leases, survive failures."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.serve import register_versions

from recplane.config import Settings
from recplane.errors import InvalidInput
from recplane.runtime import Runtime
from recplane.serving.metrics import ServingMetrics
from recplane.serving.recommender import RecommendRequest
from recplane.serving.spec import load_deployment
from recplane.serving.swap import HotSwapper, NotReady, followed_refs, pinned_spec

SPEC = load_deployment({"name": "home", "retrieval": {"name": "mf"}, "serving": {"swap_poll_seconds": 0.05}})


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    with Runtime(settings) as opened:
        register_versions(opened.registry, "mf", 2)
        yield opened


@pytest.fixture
def swapper(runtime: Runtime) -> Iterator[HotSwapper]:
    made = HotSwapper.for_runtime(SPEC, runtime, ServingMetrics())
    yield made
    made.close()


def _counter(swapper: HotSwapper, result: str) -> float:
    metrics = swapper._metrics
    assert metrics is not None
    return float(metrics.swaps.labels(result)._value.get())


def test_only_alias_refs_are_followed_and_pinning_replaces_the_alias() -> None:
    spec = load_deployment({"name": "d", "retrieval": {"name": "mf"}, "ranking": {"name": "fm", "version": 2}})
    assert list(followed_refs(spec)) == ["retrieval"]
    pinned = pinned_spec(spec, {"retrieval": 7})
    assert (pinned.retrieval.alias, pinned.retrieval.version) == (None, 7)
    assert pinned.ranking == spec.ranking and spec.retrieval.alias == "production"


def test_nothing_serves_before_the_first_load(swapper: HotSwapper) -> None:
    assert not swapper.ready
    with pytest.raises(NotReady, match="still loading"), swapper.lease():
        pass


def test_moving_the_alias_swaps_and_closes_the_old_version(swapper: HotSwapper, runtime: Runtime) -> None:
    assert swapper.check() is True
    assert swapper.model_versions == {"retrieval": "mf:1"}
    with swapper.lease() as first:
        pass
    assert swapper.check() is False  # nothing moved
    runtime.registry.set_alias("mf", "production", 2)
    assert swapper.check() is True
    assert swapper.model_versions == {"retrieval": "mf:2"}
    with swapper.lease() as second:
        assert second.recommend_batch([RecommendRequest(user_id=1, k=3)])[0].model_versions == {"retrieval": "mf:2"}
    with pytest.raises(InvalidInput, match="closed"):
        first.recommend_batch([RecommendRequest(user_id=1, k=3)])
    assert _counter(swapper, "ok") == 2


def test_a_leased_recommender_stays_open_until_its_batch_ends(swapper: HotSwapper, runtime: Runtime) -> None:
    swapper.check()
    swapped = threading.Event()
    with swapper.lease() as old:
        runtime.registry.set_alias("mf", "production", 2)
        worker = threading.Thread(target=lambda: swapped.set() if swapper.check() else None)
        worker.start()
        deadline = time.monotonic() + 30
        while swapper.model_versions != {"retrieval": "mf:2"} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert swapper.model_versions == {"retrieval": "mf:2"}  # new requests already go to version 2
        time.sleep(0.1)
        answer = old.recommend_batch([RecommendRequest(user_id=1, k=3)])  # the running batch still works
        assert answer[0].model_versions == {"retrieval": "mf:1"}
        assert not swapped.is_set()  # the swap waits to close the old one
    worker.join(30)
    assert swapped.is_set()
    with pytest.raises(InvalidInput, match="closed"):
        old.recommend_batch([RecommendRequest(user_id=1, k=3)])


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(swapper: HotSwapper, runtime: Runtime) -> None:
    swapper.check()
    broken = runtime.registry.register("mf", artifact_uri=str(_broken_copy(runtime)))
    runtime.registry.set_alias("mf", "production", broken.version)
    assert swapper.check() is False
    assert swapper.model_versions == {"retrieval": "mf:1"}
    assert swapper.last_error and _counter(swapper, "failed") == 1
    with swapper.lease() as serving:
        assert serving.recommend_batch([RecommendRequest(user_id=1, k=3)])[0].items
    runtime.registry.set_alias("mf", "production", 2)  # the operator fixes it: the next poll recovers
    assert swapper.check() is True and swapper.last_error is None


def test_the_background_thread_follows_the_alias(swapper: HotSwapper, runtime: Runtime) -> None:
    swapper.start()
    assert swapper.wait_ready(30)
    runtime.registry.set_alias("mf", "production", 2)
    deadline = time.monotonic() + 30
    while swapper.model_versions != {"retrieval": "mf:2"} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert swapper.model_versions == {"retrieval": "mf:2"}
    assert [event.after for event in swapper.events] == [{"retrieval": "mf:1"}, {"retrieval": "mf:2"}]


def test_reload_loads_a_fresh_recommender_of_the_same_versions(swapper: HotSwapper) -> None:
    swapper.check()
    with swapper.lease() as before:
        pass
    assert swapper.reload() == {"retrieval": "mf:1"}
    with swapper.lease() as after:
        assert after is not before


def _broken_copy(runtime: Runtime) -> Path:
    """A registered bundle whose item vectors are gone: it registers, but cannot serve."""
    source = runtime.registry.local_path(runtime.registry.resolve("mf", 1))
    target = runtime.settings.home / "broken-bundle"
    shutil.copytree(source, target)
    (target / "item_vectors.npy").unlink()
    return target
