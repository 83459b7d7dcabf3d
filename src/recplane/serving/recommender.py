"""The recommendation pipeline: a deployment's models, index, features and rules, run on batches of requests.

Per batch, every stage is one vectorised call over the whole batch:

1. raw user ids → retrieval model ids (one ``searchsorted``); unknown users, and users with fewer training
   interactions than ``fallback.min_interactions``, go to the fallback (:mod:`recplane.serving.fallback`);
2. query vectors for the known users (one call of the exported query graph);
3. ANN top candidates (:mod:`recplane.serving.index`), over-fetched by what the exclusions may remove (rows
   left short search again, wider), then seen, blocked and request-excluded items are dropped and the rest cut
   to ``candidates``;
4. with a ranker: its row features (the online feature service's values, or the request context's), then one
   batched predict over every (user, candidate) pair, scored as the weighted sum of its task probabilities;
5. boosts, dedupe and the per-category cap (:mod:`recplane.serving.rules`), then the top ``k`` of each row.

A :class:`Recommender` is immutable after loading and holds no per-request state, so any number of threads
may call :meth:`Recommender.recommend_batch` at once; a new model version means a new Recommender.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from recplane.auth import ADMIN
from recplane.errors import InvalidInput, RecplaneError
from recplane.serving.fallback import Fallback
from recplane.serving.index import AnnIndex, cached_index, calibration_users, set_search_threads
from recplane.serving.rules import Candidates, ItemRules, RuleLog, compile_rules, item_categories
from recplane.serving.spec import DeploymentSpec, ModelRef
from recplane.training.bundle import IdIndex, ModelBundle, load_bundle

if TYPE_CHECKING:
    from recplane.runtime import Runtime

__all__ = ["RecommendRequest", "Recommendation", "RecommendedItem", "Recommender", "recommendation_schema"]

INDEX_FOLDER = "index"
STAGES = ("features", "retrieval", "ranking", "rules")
RANK_PAIRS = 65_536  # (user, item) pairs per ranker call


@dataclass
class RecommendRequest:
    """One user's request: how many items, request context (fallback hints, row features) and items to leave out."""

    user_id: str | int
    k: int = 10
    context: dict[str, Any] = field(default_factory=dict)
    exclude: list[Any] = field(default_factory=list)


@dataclass
class RecommendedItem:
    """An item with its final score and the retrieval model's score for it."""

    item_id: Any
    score: float
    retrieval_score: float


@dataclass
class Recommendation:
    """The answer to one request.

    ``fallback``: None, or ``"<kind>: <why>"`` (``"popularity: unknown user"``); ``rules``: the rules that changed
    this answer; ``stage_ms``: the batch's time per stage; ``features``: the raw row-feature values the ranker
    read, aligned with ``items`` (None without row features, or unless ``logging.log_features``).
    """

    items: list[RecommendedItem]
    fallback: str | None
    model_versions: dict[str, str]
    rules: list[str]
    stage_ms: dict[str, float]
    features: dict[str, list[Any]] | None = None


class _Stopwatch:
    """Milliseconds per stage of one batch: ``with watch.stage(name):`` adds the block's wall time to ``name``.

    A plain context manager rather than ``@contextmanager``: a request passes a dozen stage boundaries, and a
    generator-based one costs several times more per use. Stages do not nest.
    """

    __slots__ = ("_name", "_started", "ms")

    def __init__(self) -> None:
        self.ms = dict.fromkeys(STAGES, 0.0)
        self._name = STAGES[0]
        self._started = 0.0

    def stage(self, name: str) -> _Stopwatch:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.ms[self._name] += (time.perf_counter() - self._started) * 1000


@dataclass(frozen=True)
class _RowValues:
    """The raw row-feature values one request's candidates were ranked with, per candidate item model id."""

    items: np.ndarray
    values: dict[str, list[Any]]

    def aligned(self, items: np.ndarray) -> dict[str, list[Any]]:
        """The values of ``items`` (the answer's items, in order)."""
        where = {item: position for position, item in enumerate(self.items.tolist())}
        positions = [where.get(item) for item in items.tolist()]
        return {name: [None if p is None else column[p] for p in positions] for name, column in self.values.items()}


@dataclass
class _Batch:
    """Per-row results of a batch, filled stage by stage."""

    requests: Sequence[RecommendRequest]
    width: int
    log: RuleLog
    ids: np.ndarray
    scores: np.ndarray
    retrieval_scores: np.ndarray
    fallback: list[str | None]
    features: list[_RowValues | None]

    @classmethod
    def start(cls, requests: Sequence[RecommendRequest], width: int) -> _Batch:
        rows = len(requests)
        return cls(
            requests,
            width,
            RuleLog(rows),
            np.full((rows, width), -1, dtype=np.int64),
            np.full((rows, width), -np.inf, dtype=np.float32),
            np.full((rows, width), -np.inf, dtype=np.float32),
            [None] * rows,
            [None] * rows,
        )

    def put(self, rows: np.ndarray, ranked: Candidates) -> None:
        """Store the best-first ``ranked`` candidates of ``rows``."""
        top = Candidates(ranked.ids[:, : self.width], ranked.scores[:, : self.width], ranked.retrieval_scores)
        columns = top.ids.shape[1]
        self.ids[rows, :columns] = top.ids
        self.scores[rows, :columns] = top.scores
        self.retrieval_scores[rows, :columns] = top.retrieval_scores[:, :columns]


class Recommender:
    """A loaded deployment (see the module docstring); build it with :meth:`load` or :meth:`from_bundles`."""

    def __init__(
        self,
        spec: DeploymentSpec,
        retrieval: ModelBundle,
        ranking: ModelBundle | None,
        *,
        versions: dict[str, str],
        index: AnnIndex,
        rules: ItemRules,
        fallback: Fallback,
        runtime: Runtime | None = None,
    ) -> None:
        self.spec, self.retrieval, self.ranking = spec, retrieval, ranking
        self.index, self.rules, self.fallback = index, rules, fallback
        self.runtime = runtime
        self._versions = dict(versions)
        self._ranker = _Ranker.of(spec, retrieval, ranking) if ranking is not None else None
        self._raw_items = _raw_numbers(retrieval.items)
        self._per_pair_features = False
        self._closed = False

    @classmethod
    def load(cls, spec: DeploymentSpec, runtime: Runtime) -> Recommender:
        """Resolve the spec's models in the registry (or their ``path``), load their bundles and build the index."""
        set_search_threads(spec.serving.threads)  # before the bundles' inference sessions are created
        retrieval, retrieval_version = _load_ref(spec.retrieval, runtime)
        ranking, ranking_version = _load_ref(spec.ranking, runtime) if spec.ranking else (None, None)
        versions = {"retrieval": retrieval_version}
        if ranking_version is not None:
            versions["ranking"] = ranking_version
        return cls.from_bundles(spec, retrieval, ranking, runtime=runtime, versions=versions)

    @classmethod
    def from_bundles(
        cls,
        spec: DeploymentSpec,
        retrieval: ModelBundle,
        ranking: ModelBundle | None = None,
        *,
        runtime: Runtime | None = None,
        versions: dict[str, str] | None = None,
    ) -> Recommender:
        """A recommender over loaded bundles; ``runtime`` is needed for item categories and online row features."""
        if retrieval.kind != "retrieval":
            raise InvalidInput(f"{spec.retrieval.name} is a {retrieval.kind} model; retrieval needs a retrieval model.")
        if ranking is not None and ranking.kind != "ranking":
            raise InvalidInput(f"{spec.ranking and spec.ranking.name} is a {ranking.kind} model, not a ranker.")
        set_search_threads(spec.serving.threads)
        vectors = retrieval.item_vectors[1:]  # row 0 is padding, never a candidate
        item_ids = np.arange(1, len(retrieval.items) + 1, dtype=np.int64)
        index = cached_index(
            retrieval.path / INDEX_FOLDER,
            vectors,
            spec.index,
            ids=item_ids,
            recall_target=spec.recall_target,
            k=spec.candidates,
            queries=lambda: retrieval.query_vectors(calibration_users(len(retrieval.users))),  # real user vectors
        )
        categories, names = _categories(spec, retrieval, runtime)
        rules = compile_rules(spec.rules, retrieval.items, categories, names)
        counts = retrieval.interactions.item_counts if retrieval.interactions is not None else None
        fallback = Fallback(
            spec.fallback.kind,
            np.zeros(retrieval.items.num_embeddings) if counts is None else counts,
            items=retrieval.items,
            index=index,
            item_vectors=retrieval.item_vectors,
            categories=categories,
            category_names=names,
        )
        labels = versions or {"retrieval": _ref_label(spec.retrieval)}
        if ranking is not None and "ranking" not in labels and spec.ranking is not None:
            labels["ranking"] = _ref_label(spec.ranking)
        return cls(
            spec, retrieval, ranking, versions=labels, index=index, rules=rules, fallback=fallback, runtime=runtime
        )

    @property
    def model_versions(self) -> dict[str, str]:
        """``{"retrieval": "mf:3", "ranking": "deepfm:2"}``."""
        return dict(self._versions)

    def recommend_batch(self, requests: Sequence[RecommendRequest]) -> list[Recommendation]:
        """Top-k items for each request, in request order (thread-safe)."""
        if not requests:
            return []
        batch, stage_ms = self._run(requests)
        return self._answers(batch, stage_ms)

    def recommend_table(self, user_ids: pa.Array | pa.ChunkedArray, k: int) -> pa.Table:
        """Top-k of many users as rows ``(user_id, rank, item_id, score, retrieval_score, fallback)``: what batch
        inference writes, built without a Python object per item."""
        users = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
        if len(users) == 0:
            return recommendation_schema(users.type, self.retrieval.items.values.type).empty_table()
        batch, _ = self._run([RecommendRequest(user, k=k) for user in users.to_pylist()])
        ids = batch.ids[:, :k]
        valid = ids >= 0
        rows, columns = np.nonzero(valid)
        fallback = np.array(batch.fallback, dtype=object)[rows]
        return pa.table(
            {
                "user_id": users.take(pa.array(rows)),
                "rank": pa.array(columns + 1, pa.int32()),
                "item_id": self.retrieval.items.decode_arrow(ids[valid]),
                "score": pa.array(batch.scores[:, :k][valid], pa.float32()),
                "retrieval_score": pa.array(batch.retrieval_scores[:, :k][valid], pa.float32()),
                "fallback": pa.array(fallback, pa.string()),
            }
        )

    def _run(self, requests: Sequence[RecommendRequest]) -> tuple[_Batch, dict[str, float]]:
        """Every stage for a batch of requests; the per-row results and the time per stage."""
        if self._closed:
            raise InvalidInput(f"Recommender for deployment {self.spec.name!r} is closed.")
        for request in requests:
            if request.k < 1:
                raise InvalidInput(f"k must be >= 1; got {request.k} for user {request.user_id!r}.")
        watch = _Stopwatch()
        width = max(self.spec.candidates, max(request.k for request in requests))
        batch = _Batch.start(requests, width)
        with watch.stage("retrieval"):
            users = self.retrieval.users.encode([request.user_id for request in requests])
            seen = self._seen_counts(users)
            why = self._fallback_reasons(users, seen)
            excluded = [self.retrieval.items.encode(r.exclude) if r.exclude else _NONE for r in requests]
        served = np.array([reason is None for reason in why], dtype=bool)
        known, cold = np.flatnonzero(served), np.flatnonzero(~served)
        if len(known):
            self._serve_known(batch, known, users[known], seen[known], [excluded[row] for row in known], watch)
        if len(cold):
            why_cold = [why[row] or "" for row in cold.tolist()]
            self._serve_fallback(batch, cold, users[cold], seen[cold], why_cold, excluded, watch)
        return batch, watch.ms

    def score(self, user_id: Any, item_ids: Sequence[Any], context: dict[str, Any] | None = None) -> Recommendation:
        """Rank the given items for a user, best first (items the retrieval model does not know are left out)."""
        watch = _Stopwatch()
        request = RecommendRequest(user_id, k=max(len(item_ids), 1), context=dict(context or {}))
        with watch.stage("retrieval"):
            users = self.retrieval.users.encode([user_id])
            items = self.retrieval.items.encode(list(item_ids))
            items = items[items > 0][None, :]
            why = self._fallback_reasons(users, self._seen_counts(users))[0]
        batch = _Batch.start([request], max(items.shape[1], 1))
        rows = np.zeros(1, dtype=np.int64)
        if why is None:
            with watch.stage("retrieval"):
                query = self.retrieval.query_vectors(users)
                scores = np.einsum("bkd,bd->bk", self.retrieval.item_vectors[items], query)
            candidates = Candidates.of(items, scores)
            if self._ranker is not None:
                candidates = self._rank(batch, rows, users, candidates, watch)
        else:
            candidates = Candidates.of(items, self.fallback.counts[items])
            batch.fallback[0] = f"popularity: {why}"
        batch.put(rows, candidates.best_first())
        return self._answers(batch, watch.ms)[0]

    def warm_up(self) -> None:
        """Run one known and one unknown user through every stage (first calls initialise lazy runtimes)."""
        known = self.retrieval.users.decode(np.array([1]))[0] if len(self.retrieval.users) else None
        requests = [RecommendRequest(user_id=known, k=self.spec.k)] if known is not None else []
        requests.append(RecommendRequest(user_id="__recplane_warm_up__", k=self.spec.k))
        self.recommend_batch(requests)

    def close(self) -> None:
        """Release the models and the index; later calls raise."""
        self._closed = True

    def _seen_counts(self, users: np.ndarray) -> np.ndarray:
        """Distinct items each user (model id) interacted with in training; zeros without interaction data."""
        interactions = self.retrieval.interactions
        return np.zeros(len(users), dtype=np.int64) if interactions is None else interactions.seen_counts(users)

    def _fallback_reasons(self, users: np.ndarray, seen: np.ndarray) -> list[str | None]:
        """Why each user goes to the fallback (None: the retrieval model serves it); ``seen``: their seen counts."""
        reasons: list[str | None] = ["unknown user" if user == 0 else None for user in users.tolist()]
        least = self.spec.fallback.min_interactions
        if least > 0 and self.retrieval.interactions is not None:
            for row in np.flatnonzero((users > 0) & (seen < least)).tolist():
                reasons[row] = f"cold user ({int(seen[row])} interactions < {least})"
        return reasons

    def _fetch_width(self, seen: np.ndarray, excluded: Sequence[np.ndarray], width: int, *, cap: int | None) -> int:
        """Candidates to ask for: ``width`` plus what exclusions may remove (at most ``cap`` more)."""
        extra = self.rules.blocked_count + max((len(items) for items in excluded), default=0)
        if self.rules.exclude_seen and self.retrieval.interactions is not None and len(seen):
            extra += int(seen.max())
        return min(width + (extra if cap is None else min(extra, cap)), self.index.size)

    def _serve_known(
        self,
        batch: _Batch,
        rows: np.ndarray,
        users: np.ndarray,
        seen: np.ndarray,
        excluded: list[np.ndarray],
        watch: _Stopwatch,
    ) -> None:
        with watch.stage("retrieval"):
            queries = self.retrieval.query_vectors(users)
        candidates = self._retrieve(batch, rows, users, seen, excluded, queries, watch)
        if self._ranker is not None:
            candidates = self._rank(batch, rows, users, candidates, watch)
        with watch.stage("rules"):
            batch.put(rows, self.rules.reorder(candidates, batch.log, rows))

    def _retrieve(
        self,
        batch: _Batch,
        rows: np.ndarray,
        users: np.ndarray,
        seen: np.ndarray,
        excluded: list[np.ndarray],
        queries: np.ndarray,
        watch: _Stopwatch,
    ) -> Candidates:
        """ANN candidates after exclusions, ``batch.width`` per row at most.

        The first search over-fetches by what exclusions may remove, up to ``width`` more, which keeps a heavy
        user's search cheap; rows left with fewer than ``width`` items (the deployment's ``candidates``: every
        answer ranks that many unseen items, as the spec promises) search again, 4x wider each time, until they
        have them or the catalog is exhausted.
        """
        width = batch.width
        ids = np.full((len(rows), width), -1, dtype=np.int64)
        scores = np.full((len(rows), width), -np.inf, dtype=np.float32)
        wanted = np.full(len(rows), width)
        pending = np.arange(len(rows))
        fetch = self._fetch_width(seen, excluded, width, cap=width)
        while True:
            with watch.stage("retrieval"):
                found_scores, found_ids = self.index.search(queries[pending], fetch)
            with watch.stage("rules"):
                own = [excluded[i] for i in pending.tolist()]
                found = self.rules.exclusions(
                    Candidates.of(found_ids, found_scores),
                    batch.log,
                    rows[pending],
                    users=users[pending],
                    interactions=self.retrieval.interactions,
                    excluded=own if any(len(e) for e in own) else (),
                ).best_first(width)
            columns = found.ids.shape[1]
            ids[pending, :columns], scores[pending, :columns] = found.ids, found.scores
            short = found.counts() < np.minimum(wanted[pending], self.index.size)
            if not short.any() or fetch >= self.index.size:
                return Candidates.of(ids, scores)
            pending, fetch = pending[short], min(fetch * 4, self.index.size)

    def _serve_fallback(
        self,
        batch: _Batch,
        rows: np.ndarray,
        users: np.ndarray,
        seen: np.ndarray,
        why: list[str],
        excluded: list[np.ndarray],
        watch: _Stopwatch,
    ) -> None:
        with watch.stage("retrieval"):
            contexts = [batch.requests[row].context for row in rows.tolist()]
            own = [excluded[row] for row in rows.tolist()]
            fetch = self._fetch_width(seen, own, batch.width, cap=None)  # popularity lists are cheap to widen
            candidates, labels = self.fallback.candidates(contexts, why, fetch)
        with watch.stage("rules"):
            candidates = self.rules.exclusions(
                candidates,
                batch.log,
                rows,
                users=users,  # cold users are known: their seen items go too
                interactions=self.retrieval.interactions,
                excluded=own if any(len(e) for e in own) else (),
            )
            batch.put(rows, self.rules.reorder(candidates.best_first(batch.width), batch.log, rows))
        for row, label in zip(rows.tolist(), labels, strict=True):
            batch.fallback[row] = label

    def _rank(
        self, batch: _Batch, rows: np.ndarray, users: np.ndarray, candidates: Candidates, watch: _Stopwatch
    ) -> Candidates:
        assert self._ranker is not None
        pair_rows, pair_cols = np.nonzero(candidates.valid)
        if len(pair_rows) == 0:
            return candidates
        pair_items = candidates.ids[pair_rows, pair_cols]
        with watch.stage("features"):
            encoded = self._row_features(batch, rows, users, pair_rows, pair_items)
        with watch.stage("ranking"):
            ranked = self._ranker.score(users, pair_items, pair_rows, encoded)
            scores = np.full(candidates.ids.shape, -np.inf, dtype=np.float32)
            scores[pair_rows, pair_cols] = ranked
        return candidates.with_scores(scores)

    def _row_features(
        self,
        batch: _Batch,
        rows: np.ndarray,
        users: np.ndarray,
        pair_rows: np.ndarray,
        pair_items: np.ndarray,
    ) -> dict[str, np.ndarray] | None:
        """Encoded row features of every (user, candidate) pair (and, with ``logging.log_features``, each row's raw
        values in ``batch.features``).

        Values come from the request context, else the deployment's feature service (looked up per user, or per
        (user, item) pair when one of its views is keyed by item), else null (which encodes as "missing").
        """
        assert self.ranking is not None
        encoder = self.ranking.row_features
        if encoder is None:
            return None
        contexts = [batch.requests[row].context for row in rows.tolist()]
        raw_users = self.retrieval.users.decode(users)
        raw_items = self.retrieval.items.decode(pair_items)
        values = self._feature_values(encoder.columns, raw_users, raw_items, pair_rows)
        for name in encoder.columns:
            for position, context in enumerate(contexts):
                if name in context:
                    for pair in np.flatnonzero(pair_rows == position).tolist():
                        values[name][pair] = context[name]
        if self.spec.logging.log_features:
            for position, row in enumerate(rows.tolist()):
                pairs = np.flatnonzero(pair_rows == position).tolist()
                logged = {name: [column[pair] for pair in pairs] for name, column in values.items()}
                batch.features[row] = _RowValues(pair_items[pairs], logged)
        return encoder.encode(values)

    def _feature_values(
        self, columns: list[str], raw_users: list[Any], raw_items: list[Any], pair_rows: np.ndarray
    ) -> dict[str, list[Any]]:
        """Online values of every row-feature column, one per pair (null where the service has none)."""
        empty: dict[str, list[Any]] = {name: [None] * len(pair_rows) for name in columns}
        if self.spec.features is None or self.runtime is None:
            return empty
        service = self.runtime.online_features
        if not self._per_pair_features:
            try:
                found = service.online_features({"user_id": raw_users}, self.spec.features, principal=ADMIN)
                spread = pair_rows.tolist()
                return {n: [found.values[n][r] for r in spread] if n in found.values else empty[n] for n in columns}
            except InvalidInput as exc:
                if "item_id" not in exc.details.get("missing_keys", []):
                    raise
                self._per_pair_features = True  # a view is keyed by item: look up (user, item) pairs from now on
        pairs = {"user_id": [raw_users[row] for row in pair_rows.tolist()], "item_id": raw_items}
        found = service.online_features(pairs, self.spec.features, principal=ADMIN)
        return {name: list(found.values[name]) if name in found.values else empty[name] for name in columns}

    def _decode_items(self, ids: np.ndarray) -> list[Any]:
        """Raw ids of item model ids ``>= 1`` as Python values (a NumPy gather for integer ids)."""
        if self._raw_items is not None:
            return self._raw_items[ids - 1].tolist()
        return self.retrieval.items.decode(ids)

    def _answers(self, batch: _Batch, stage_ms: dict[str, float]) -> list[Recommendation]:
        # Rows are best first with empty slots last: each answer is a prefix of its row, cut to the request's k.
        widest = max(request.k for request in batch.requests)
        ids = batch.ids[:, :widest]
        wanted = np.array([request.k for request in batch.requests], dtype=np.int64)
        kept = (ids >= 0) & (np.arange(ids.shape[1])[None, :] < wanted[:, None])
        raw = self._decode_items(ids[kept]) if kept.any() else []
        counts = kept.sum(axis=1).tolist()
        scores, retrieval_scores = batch.scores[:, :widest].tolist(), batch.retrieval_scores[:, :widest].tolist()
        answers, start = [], 0
        timings = {name: round(ms, 4) for name, ms in stage_ms.items()}
        for row in range(len(batch.requests)):
            count = counts[row]
            row_scores, row_retrieval = scores[row], retrieval_scores[row]
            items = [
                RecommendedItem(raw[start + column], row_scores[column], row_retrieval[column])
                for column in range(count)
            ]
            start += count
            logged = batch.features[row]
            answers.append(
                Recommendation(
                    items=items,
                    fallback=batch.fallback[row],
                    model_versions=dict(self._versions),
                    rules=batch.log.applied(row),
                    stage_ms=dict(timings),
                    features=None if logged is None else logged.aligned(batch.ids[row, :count]),
                )
            )
        return answers


_NONE = np.zeros(0, dtype=np.int64)


def _raw_numbers(ids: IdIndex) -> np.ndarray | None:
    """Integer raw ids as a NumPy array (row = model id - 1), or None for text ids (decoded through Arrow, which
    holds them far more compactly than an array of Python strings would)."""
    if not pa.types.is_integer(ids.values.type):
        return None
    return np.asarray(ids.values.to_numpy(zero_copy_only=False))


def recommendation_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    """Columns of :meth:`Recommender.recommend_table`."""
    return pa.schema(
        [
            ("user_id", user_type),
            ("rank", pa.int32()),
            ("item_id", item_type),
            ("score", pa.float32()),
            ("retrieval_score", pa.float32()),
            ("fallback", pa.string()),
        ]
    )


@dataclass(frozen=True)
class _Ranker:
    """The ranking bundle bound to the retrieval model's ids: id translation and the task weights.

    Both id maps are translated once at load, so a request goes from retrieval model ids to ranker model ids with
    one gather each, never through raw ids.
    """

    bundle: ModelBundle
    users: np.ndarray  # retrieval user model id -> ranking user model id (0 = unknown to the ranker)
    items: np.ndarray  # retrieval item model id -> ranking item model id (0 = unknown to the ranker)
    weights: np.ndarray  # one weight per ranker output

    @classmethod
    def of(cls, spec: DeploymentSpec, retrieval: ModelBundle, ranking: ModelBundle) -> _Ranker:
        users = np.concatenate([[0], ranking.users.encode(retrieval.users.values)]).astype(np.int64)
        items = np.concatenate([[0], ranking.items.encode(retrieval.items.values)]).astype(np.int64)
        outputs = ranking.model.manifest.outputs
        unknown = sorted(set(spec.ranking_weights) - set(outputs))
        if unknown:
            raise InvalidInput(f"ranking_weights name task(s) {unknown} the ranker does not have; it has {outputs}.")
        weights = np.array([spec.ranking_weights.get(name, 0.0) for name in outputs], dtype=np.float32)
        if not spec.ranking_weights:
            weights[0] = 1.0
        return cls(ranking, users, items, weights)

    def score(
        self,
        retrieval_users: np.ndarray,
        retrieval_items: np.ndarray,
        pair_rows: np.ndarray,
        row_features: Mapping[str, np.ndarray] | None,
    ) -> np.ndarray:
        """Weighted task probabilities of every (user of ``pair_rows``, item) pair, both as retrieval model ids: one
        predict call per ``RANK_PAIRS`` pairs (an online batch is one call; batch inference's large chunks stay
        bounded in memory)."""
        users = self.users[retrieval_users][pair_rows]
        items = self.items[retrieval_items]
        tasks = self.bundle.model.manifest.outputs
        scores = np.zeros(len(users), dtype=np.float32)
        for start in range(0, len(users), RANK_PAIRS):
            part = slice(start, start + RANK_PAIRS)
            features = None if row_features is None else {name: v[part] for name, v in row_features.items()}
            # Every id here went through the bundles' own maps and tables, so the range scans predict() does on
            # caller batches would find nothing.
            inputs = self.bundle.ranking_inputs(users[part], items[part], features)
            outputs = self.bundle.model.predict_in_range(inputs)
            for weight, name in zip(self.weights.tolist(), tasks, strict=True):
                if weight:
                    scores[part] += weight * outputs[name]
        return scores


def _load_ref(ref: ModelRef, runtime: Runtime) -> tuple[ModelBundle, str]:
    if ref.path is not None:
        return load_bundle(ref.path), _ref_label(ref)
    registry = getattr(runtime, "registry", None)
    if registry is None:
        raise InvalidInput(
            f"This recplane has no model registry to resolve {ref.name!r}; give the bundle folder as `path:`."
        )
    version = registry.resolve(ref.name, ref.ref)
    return load_bundle(registry.local_path(version)), f"{version.name}:{version.version}"


def _ref_label(ref: ModelRef) -> str:
    if ref.version is not None:
        return f"{ref.name}:{ref.version}"
    return f"{ref.name}:{Path(ref.path).parent.name if ref.path else ref.alias or 'latest'}"


def _categories(
    spec: DeploymentSpec, retrieval: ModelBundle, runtime: Runtime | None
) -> tuple[np.ndarray | None, list[str]]:
    """Category code of every retrieval item id (0 = unknown) from the rules' item dataset, and the names."""
    rules = spec.rules
    if rules.items is None:
        return None, []
    if runtime is None:
        raise InvalidInput(
            f"Deployment {spec.name!r} reads item categories from dataset {rules.items!r}: load it with a runtime."
        )
    try:
        table = runtime.datasets.read(rules.items, principal=ADMIN, columns=["item_id", rules.category_column])
    except RecplaneError as exc:
        raise InvalidInput(f"Deployment {spec.name!r}: cannot read item categories: {exc.message}") from exc
    return item_categories(retrieval.items, table.column("item_id"), table.column(rules.category_column))
