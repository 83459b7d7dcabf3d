"""Models, registry entries and deployment specs of each ``recplane bench serving`` case, built once and cached.

``python prepare.py CASE_JSON OUT_FOLDER`` (run by the suite as a child process, so its memory is gone before
anything is timed) builds one case in ``OUT_FOLDER`` (its own recplane home, its deployments, ``users.json`` and
``meta.json``) and does nothing when ``meta.json`` already matches the case.

* ``ml100k`` — MovieLens-100K (``RECPLANE_MOVIELENS_PATH`` or ``.cache/recbole-*.whl``; synthetic data in its
  shape when absent, and ``meta.json`` says so) loaded into datasets, then a real MF (retrieval, dim 64) and a real
  DeepFM (ranker over user_id, item_id, the items' genres and release year and the users' age, gender and
  occupation) trained through ``Client.train``, registered from their runs (``Client.register_model``) and given
  the ``production`` alias.
* ``items100k`` / ``items1m`` — synthetic catalogs of 100k and 1M items and 10k users (Zipf-like popularity, 20
  interactions per user, MovieLens-shaped item and user feature tables). Training on them would only burn the
  benchmark's time, so the models get seeded weights instead and go through the same bundle writer the training
  service uses (:func:`recplane.training.bundle.write_bundle`), with the same feature encoders, then into the
  registry. The DeepFM's weights are random: ranking latency does not depend on their values. The MF's are not:
  an approximate index's recall, and the work it needs for it, depend on how the vectors are spread, and i.i.d.
  Gaussian vectors (what an untrained MF holds) have no cluster structure at all, the worst case for IVF (probing a
  fixed ``nlist / 64`` lists, the served top 10 held 24% of the exact one at 1M items) and not what any trained
  model produces. The MF gets latent-topic embeddings instead (:func:`topic_embeddings`): 256 topic centres in
  64-d, each item its topic's centre plus noise with a norm that grows with its popularity (as trained MF norms
  do), each user a mixture of 1-3 topics' centres plus noise. The interactions stay independent of the topics
  (they share only the popularity ranks), which changes nothing timed here. The DeepFM's item tables at 1M items
  are 1M x 10 embeddings plus a bag of genre ids per item (about 60 MB), which is practical, so every case serves
  retrieval + ranking.

Deployments (one per index kind): candidates 200, k 10, exclude-seen on, popularity fallback, the serving
defaults (micro-batches of up to 32 within 2 ms, one model thread); ``exact`` is the equal-work comparison with the
peers, the case's ``ann`` kind (default ``auto``: recplane's choice above 50k items) the approximate index a user
would run, calibrated to the default recall target (0.95 of the exact 200 candidates, measured on the users'
vectors; ``meta.json`` keeps each index's parameter and measured recall under ``indexes``). The 1M case names
``ivf``: HNSW (M 32, efConstruction 80) took 500 s to build for 100k items on the loaded 2-core machine, so 1M
items would take over an hour; IVF builds in minutes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
OCCUPATIONS = tuple(f"occupation_{i}" for i in range(21))
DEEPFM_PARAMS: dict[str, Any] = {"embedding_size": 10, "mlp_hidden_size": [128, 128, 128], "dropout_prob": 0.2}
ITEM_FEATURES = ["release_year", "genres"]
USER_FEATURES = ["age", "gender", "occupation"]
RECIPE = 2  # bump when a change here changes what a case holds: cached cases are then rebuilt
KEY_METRICS = ("test.ndcg@10", "test.recall@10", "test.auc", "test.gauc", "test.logloss")
TOPICS = 256
TOPIC_NOISE = 0.5  # an item's distance from its topic centre, relative to the centres' norm (about 1)
USER_NOISE = 0.3


def fingerprint(case: dict[str, Any]) -> str:
    """What a cached case was built from: its settings and the version of this recipe."""
    return hashlib.sha256(json.dumps({**case, "recipe": RECIPE}, sort_keys=True).encode()).hexdigest()[:16]


def prepare(case: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Build (or reuse) one case; its ``meta.json`` document."""
    meta_path = folder / "meta.json"
    wanted = fingerprint(case)
    if meta_path.is_file():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == wanted:
            return meta
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    from recplane.client import Client

    with Client(home=folder / "home") as client:
        build = _movielens if case["kind"] == "movielens" else _synthetic
        built = build(client, case, folder)
        for role in ("retrieval", "ranking"):
            name = built[role]["name"]
            version = built[role]["version"]
            client.set_model_alias(name, "production", version, reason="recplane bench serving")
    kinds = index_kinds(case)
    deployments = {kind: str(_write_deployment(case, built, folder, kind)) for kind in kinds}
    built["indexes"] = _build_indexes(built["retrieval"]["bundle"], kinds, case["candidates"])
    meta = {
        "fingerprint": wanted,
        "case": case,
        "home": str(folder / "home"),
        "deployments": deployments,
        "users": str(folder / "users.json"),
        "prepare_seconds": round(time.perf_counter() - started, 1),
        **built,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def _write_deployment(case: dict[str, Any], built: dict[str, Any], folder: Path, index: str) -> Path:
    import yaml

    spec = {
        "name": f"bench-{case['name']}-{index}",
        "retrieval": {"name": built["retrieval"]["name"], "alias": "production"},
        "ranking": {"name": built["ranking"]["name"], "alias": "production"},
        "candidates": case["candidates"],
        "k": case["k"],
        "index": index,
        "rules": {"exclude_seen": True},
        "fallback": {"kind": "popularity"},
        "serving": {"max_batch": 32, "max_wait_ms": 2.0, "threads": 1},
    }
    path = folder / f"deployment-{index}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def index_kinds(case: dict[str, Any]) -> tuple[str, str]:
    """The deployments of a case: exact (equal work with the peers) and its approximate index (default ``auto``)."""
    return ("exact", case.get("ann", "auto"))


def _build_indexes(bundle: str, kinds: tuple[str, ...], candidates: int) -> dict[str, dict[str, Any]]:
    """Build (and cache beside the version's files) the index of each deployment, with every core; per kind its
    build seconds and what :meth:`~recplane.serving.index.AnnIndex.describe` says (parameter, measured recall).

    ``recplane serve`` builds a missing index at load time with its serving threads (one here): HNSW over 1M items
    would then take tens of minutes of the benchmark. Building it once here, through the same
    :func:`~recplane.serving.index.cached_index` call with the same settings (recall target, k = candidates, the
    users' query vectors), leaves the server a cached index to load.
    """
    import os

    from recplane.serving.index import cached_index, calibration_users, set_search_threads
    from recplane.serving.spec import DeploymentSpec
    from recplane.training.bundle import load_bundle

    loaded = load_bundle(bundle)
    vectors = loaded.item_vectors[1:]  # row 0 is padding, as the recommender drops it
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    target = DeploymentSpec.model_fields["recall_target"].default
    set_search_threads(os.cpu_count() or 1)
    built = {}
    for kind in kinds:
        started = time.perf_counter()
        index = cached_index(
            Path(bundle) / "index",
            vectors,
            kind,
            ids=ids,
            recall_target=target,
            k=candidates,
            queries=lambda: loaded.query_vectors(calibration_users(len(loaded.users))),
        )
        built[kind] = {"build_seconds": round(time.perf_counter() - started, 1), **index.describe()}
    return built


def _local(uri: str) -> str:
    """The local folder of a registered version's files (the benchmark's registry is on local disk)."""
    return str(Path(uri.removeprefix("file://")).resolve())


def _write_users(folder: Path, user_ids: list[Any]) -> None:
    (folder / "users.json").write_text(json.dumps(user_ids))


# ------------------------------------------------------------------------------------------------ ml-100k


def _movielens(client: Any, case: dict[str, Any], folder: Path) -> dict[str, Any]:
    from recplane.samples.loading import load_movielens_into, synthetic_movielens
    from recplane.samples.movielens import MovieLensNotFound, load_movielens_100k

    try:
        tables = load_movielens_100k()
        source = f"MovieLens-100K ({tables.source})" if getattr(tables, "source", None) else "MovieLens-100K"
    except MovieLensNotFound:
        tables = synthetic_movielens()
        source = tables.source
    load_movielens_into(client, tables, prefix="ml100k", batch_id="bench-serving")
    epochs = case["epochs"]
    mf = client.train(
        {
            "name": "bench-serving-mf",
            "dataset": "ml100k_ratings",
            "train": {"model": "mf", "epochs": epochs, "params": {"dim": 64}, "seed": 2020},
        }
    )
    deepfm = client.train(
        {
            "name": "bench-serving-deepfm",
            "dataset": "ml100k_ratings",
            "item_features": "ml100k_items",
            "item_feature_columns": ITEM_FEATURES,
            "user_features": "ml100k_users",
            "user_feature_columns": USER_FEATURES,
            "train": {"model": "deepfm", "epochs": epochs, "params": DEEPFM_PARAMS, "seed": 2020},
        }
    )
    names = {"retrieval": "bench-ml100k-mf", "ranking": "bench-ml100k-deepfm"}
    built: dict[str, Any] = {"source": source, "weights": f"trained ({epochs} epochs max, early stopping)"}
    for role, trained in (("retrieval", mf), ("ranking", deepfm)):
        version = client.register_model(names[role], run_id=trained.run.id, description="recplane bench serving")
        metrics = {k: round(v, 4) for k, v in version.metrics.items() if k in KEY_METRICS}
        built[role] = {
            "name": names[role],
            "version": version.version,
            "run_id": trained.run.id,
            "bundle": _local(version.artifact_uri),
            "metrics": metrics,
        }
    users = sorted(set(tables.ratings.column("user_id").to_pylist()))
    _write_users(folder, users)
    built.update(
        num_users=len(users),
        num_items=len(set(tables.ratings.column("item_id").to_pylist())),
        interactions=tables.ratings.num_rows,
    )
    return built


# ------------------------------------------------------------------------------------------------ synthetic


def synthetic_tables(
    items: int, users: int, per_user: int, seed: int
) -> tuple[pa.Table, pa.Table, pa.Table, np.ndarray]:
    """Interactions (Zipf-like item popularity), items and users tables in MovieLens' shape, from a seed; and the
    item indexes (item id - 1) from the most popular down."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    shuffled = rng.permutation(items)  # popular items are spread over the id range
    rows = users * per_user
    user_col = np.repeat(np.arange(1, users + 1, dtype=np.int64), per_user)
    item_col = shuffled[rng.choice(items, size=rows, p=popularity)].astype(np.int64) + 1
    ts = np.sort(rng.integers(1_600_000_000, 1_700_000_000, size=rows)).astype("datetime64[s]")
    interactions = pa.table(
        {
            "user_id": user_col,
            "item_id": item_col,
            "rating": rng.integers(1, 6, size=rows).astype(np.float32),
            "ts": pa.array(ts, pa.timestamp("s")),
        }
    )
    genre_count = rng.integers(1, 4, size=items)
    genre_codes = rng.integers(0, len(GENRES), size=int(genre_count.sum()))
    offsets = np.concatenate([[0], np.cumsum(genre_count)]).astype(np.int32)
    genre_names = pa.array(np.asarray(GENRES, dtype=object)[genre_codes], pa.string())
    item_table = pa.table(
        {
            "item_id": np.arange(1, items + 1, dtype=np.int64),
            "release_year": rng.integers(1930, 2024, size=items).astype(np.int32),
            "genres": pa.ListArray.from_arrays(pa.array(offsets), genre_names),
        }
    )
    user_table = pa.table(
        {
            "user_id": np.arange(1, users + 1, dtype=np.int64),
            "age": rng.integers(7, 74, size=users).astype(np.int32),
            "gender": pa.array(np.where(rng.random(users) < 0.7, "M", "F"), pa.string()),
            "occupation": pa.array(np.asarray(OCCUPATIONS, dtype=object)[rng.integers(0, 21, size=users)], pa.string()),
        }
    )
    return interactions, item_table, user_table, shuffled


def topic_embeddings(popular_first: np.ndarray, users: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(items [N + 1, dim], users [U + 1, dim])`` float32 MF tables shaped like trained ones (row 0: padding).

    Latent topics: ``TOPICS`` centres; a topic's size follows a Zipf-like law (some genres are big). Item = its
    topic's centre + noise, scaled by a factor falling from 2 to 2/3 down the popularity ranks (trained
    MF/BPR norms grow with an item's interactions, which is why inner-product search favours popular items).
    User = a Dirichlet mixture of 1-3 topics' centres + noise.
    """
    rng = np.random.default_rng(seed + 1_000_003)  # not the interactions' stream
    items = len(popular_first)
    scale = np.float32(1 / np.sqrt(dim))  # centres of norm about 1
    centres = rng.standard_normal((TOPICS, dim), dtype=np.float32) * scale
    sizes = 1.0 / np.arange(1, TOPICS + 1) ** 0.7
    topic = rng.choice(TOPICS, size=items, p=sizes / sizes.sum())
    item_vectors = rng.standard_normal((items, dim), dtype=np.float32) * (scale * np.float32(TOPIC_NOISE))
    item_vectors += centres[topic]
    rank = np.empty(items, dtype=np.float64)
    rank[popular_first] = np.arange(1, items + 1)
    item_vectors *= (2.0 * rank ** -(np.log(3.0) / np.log(max(items, 2)))).astype(np.float32)[:, None]  # 2 to 2/3
    mixes = rng.integers(1, 4, size=users)
    weights = np.zeros((users, TOPICS))
    for count in (1, 2, 3):
        rows = np.flatnonzero(mixes == count)
        chosen = rng.choice(TOPICS, size=(len(rows), count), p=sizes / sizes.sum())
        np.add.at(weights, (rows[:, None], chosen), rng.dirichlet(np.ones(count), size=len(rows)))
    user_vectors = weights @ centres + rng.standard_normal((users, dim), dtype=np.float32) * scale * USER_NOISE
    padding = np.zeros((1, dim), dtype=np.float32)
    return (
        np.concatenate([padding, item_vectors]).astype(np.float32),
        np.concatenate([padding, user_vectors]).astype(np.float32),
    )


def _synthetic(client: Any, case: dict[str, Any], folder: Path) -> dict[str, Any]:
    import torch

    from recplane.models.deepfm import DeepFM, DeepFMConfig
    from recplane.models.features import SparseField
    from recplane.models.mf import MF
    from recplane.training.bundle import write_bundle
    from recplane.training.data import IdMap
    from recplane.training.feature_tables import build_entity_features

    tables = synthetic_tables(case["items"], case["users"], case["per_user"], case["seed"])
    interactions, items, users, popular_first = tables
    user_map = IdMap.build(users.column("user_id"))
    item_map = IdMap.build(items.column("item_id"))  # the whole catalog, as the item table is
    torch.manual_seed(case["seed"])
    mf = MF(user_map.num_embeddings, item_map.num_embeddings, dim=64).eval()
    item_vectors, user_vectors = topic_embeddings(popular_first, case["users"], 64, case["seed"])
    with torch.no_grad():  # model id = raw id here (ids 1..N, sorted), so row i is item/user i
        mf.item_table.weight.copy_(torch.from_numpy(item_vectors))
        mf.user_table.weight.copy_(torch.from_numpy(user_vectors))
    item_features = build_entity_features(items, "item_id", item_map, what="item feature")
    user_features = build_entity_features(users, "user_id", user_map, what="user feature")
    sparse = (
        SparseField("user_id", user_map.num_embeddings),
        SparseField("item_id", item_map.num_embeddings),
        *item_features.sparse_fields(),
        *user_features.sparse_fields(),
    )
    dense = (*item_features.dense_fields(), *user_features.dense_fields())
    params = {**DEEPFM_PARAMS, "mlp_hidden_size": tuple(DEEPFM_PARAMS["mlp_hidden_size"])}
    deepfm = DeepFM(DeepFMConfig(sparse_fields=sparse, dense_fields=dense, label="label", **params)).eval()
    # Distinct tensors with distinct values per key: an export traced from one tensor passed under two keys
    # would read both keys from one input (torch.export and ONNX dedupe aliased example inputs).
    users_example = torch.arange(1, 17) % (user_map.num_embeddings - 1) + 1
    items_example = (torch.arange(1, 17) * 7919) % (item_map.num_embeddings - 1) + 1
    mf_example = {"user_id": users_example, "item_id": items_example}
    ranker_example = {
        "user_id": users_example.clone(),
        "item_id": items_example.clone(),
        **item_features.take(items_example),
        **user_features.take(users_example),
    }
    names = {"retrieval": f"bench-{case['name']}-mf", "ranking": f"bench-{case['name']}-deepfm"}
    built: dict[str, Any] = {
        "source": f"synthetic: {case['items']:,} items, {case['users']:,} users, {case['per_user']} interactions "
        f"per user (seed {case['seed']})",
        "weights": "seeded: MF latent-topic embeddings (see prepare.py), DeepFM random",
    }
    for role, model, example in (("retrieval", mf, mf_example), ("ranking", deepfm, ranker_example)):
        result = SimpleNamespace(
            model=model,
            user_map=user_map,
            item_map=item_map,
            example_batch=example,
            row_encoder=None,
            row_features=None,
        )
        bundle = write_bundle(
            result,  # type: ignore[arg-type]  # the attributes write_bundle reads, without a training run
            folder / "bundles" / role,
            interactions=interactions,
            item_features=items if role == "ranking" else None,
            user_features=users if role == "ranking" else None,
        )
        version = client.register_model(
            names[role],
            artifact_uri=str(bundle),
            description="recplane bench serving",
            tags={"weights": "seeded latent topics" if role == "retrieval" else "seeded random", "bench": "serving"},
        )
        built[role] = {"name": names[role], "version": version.version, "bundle": _local(version.artifact_uri)}
    shutil.rmtree(folder / "bundles")  # the registry holds its own copy, which every server reads
    _write_users(folder, users.column("user_id").to_pylist())
    built.update(num_users=case["users"], num_items=case["items"], interactions=interactions.num_rows)
    return built


def main() -> None:
    case = json.loads(sys.argv[1])
    meta = prepare(case, Path(sys.argv[2]).resolve())
    print(json.dumps({k: meta[k] for k in ("source", "weights", "prepare_seconds")}))


if __name__ == "__main__":
    main()
