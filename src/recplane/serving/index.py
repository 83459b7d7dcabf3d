"""The ANN index over a retrieval model's item vectors: exact for small catalogs, IVF (or HNSW) for large ones.

``build_ann_index(vectors, kind="auto")`` picks faiss ``IndexFlatIP`` (exact inner product) up to
``EXACT_MAX_ITEMS`` items and IVF above; ``exact``, ``ivf`` and ``hnsw`` force one. Every kind scores by inner
product, the retrieval models' score, natively (faiss ``METRIC_INNER_PRODUCT``).

Approximate indexes are **calibrated to a recall target** when built: the exact top-k of a sample of queries
(one blocked GEMM) is compared with the index's answers while the search parameter grows (IVF ``nprobe`` from 1,
HNSW ``efSearch`` from k: doubling, then bisecting) until the mean recall@k reaches ``recall_target`` (default
0.95). How many lists a query must probe depends entirely on how clustered the vectors are: on trained-embedding-like
vectors a few percent of the lists suffice, on structureless (i.i.d. Gaussian) vectors a fixed ``nlist / 64`` found
a quarter of the exact top-10 at 1M items. The chosen parameter and the measured recall are saved with the index
and logged; when IVF must probe more than a quarter of its lists it is a slow exact search, and a warning says so.

Why IVF for ``auto``: inner product is not a metric, and HNSW's graph navigates it poorly on clustered vectors.
On a 1M-item MF bundle with clustered item vectors HNSW (M 32, efConstruction 160, efSearch 440) found 38% of the
exact top-10 and took 25 minutes to build on a busy 2-core machine; IVF (4·sqrt(N) lists, 64 probed) found 98%,
built in under 3 minutes and searched in about 1 ms. The classic reduction of inner product to L2 (one extra
coordinate ``sqrt(M² - |x|²)``) was measured too and dropped: it puts every query far from the data, and HNSW's
recall@50 fell to 0.22 on vectors where native inner product reaches 0.99.

An index is an artifact of a model version: :func:`cached_index` loads ``<folder>/<kind>.faiss`` when it was
built from the same vectors with the same settings (recall target and k included; a fingerprint says so) and
builds, calibrates and saves it otherwise. Searches are read-only and take their search-time parameters per call,
so one index serves many threads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recplane.errors import InvalidInput

__all__ = [
    "DEFAULT_CALIBRATION_K",
    "DEFAULT_RECALL_TARGET",
    "EXACT_MAX_ITEMS",
    "AnnIndex",
    "Calibration",
    "IndexKind",
    "build_ann_index",
    "cached_index",
    "calibration_users",
    "set_search_threads",
]

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "exact", "hnsw", "ivf"]
KINDS = ("auto", "exact", "hnsw", "ivf")
EXACT_MAX_ITEMS = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 160
HNSW_MAX_EF_SEARCH = 4096
IVF_TRAIN_POINTS_PER_LIST = 64
IVF_DEGENERATE_SHARE = 0.25  # beyond this share of lists probed, IVF nears exact search's cost and still misses items
DEFAULT_RECALL_TARGET = 0.95
DEFAULT_CALIBRATION_K = 100
CALIBRATION_QUERIES = 256  # mean recall within ~0.01 (per-query spread <= 0.16); exact top-k at 1M x 64 in ~1 s
CALIBRATION_NOISE = 0.25  # stand-in queries: item vectors plus this share of the items' per-coordinate spread
CONFIDENCE_Z = 1.645  # one-sided 95% lower bound of the mean recall must reach the target
_BUILD_LOCK = threading.Lock()
_search_threads: int | None = None  # set by set_search_threads; None leaves OpenMP's default
_thread_state = threading.local()

Queries = np.ndarray | Callable[[], np.ndarray] | None


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss is in the serving extra
        raise InvalidInput("ANN retrieval needs faiss: pip install 'recplane[serving]'") from exc
    return faiss


def set_search_threads(threads: int) -> None:
    """Threads every math library of this serving process may use: faiss (OpenMP), torch (and so the ONNX Runtime
    sessions loaded afterwards, which take torch's count) and NumPy's BLAS. Process-wide. Each library otherwise
    takes every core, and with requests already running in parallel that doubled the CPU per request here."""
    import threadpoolctl
    import torch

    global _search_threads
    count = max(int(threads), 1)
    _search_threads = count
    _faiss().omp_set_num_threads(count)
    _thread_state.threads = count
    torch.set_num_threads(count)
    threadpoolctl.threadpool_limits(limits=count, user_api="blas")


def _use_search_threads() -> None:
    """Apply :func:`set_search_threads` to the calling thread. OpenMP's thread count is per thread: a thread that
    never set it (a server's batching or worker thread) searched with every core, which on a 1M-item exact index
    here doubled the wall time and quadrupled the CPU of a single-query search (threads spinning in barriers)."""
    if _search_threads is not None and getattr(_thread_state, "threads", None) != _search_threads:
        _faiss().omp_set_num_threads(_search_threads)
        _thread_state.threads = _search_threads


@contextlib.contextmanager
def _every_core() -> Iterator[None]:
    """Build with every core, then give searches back their thread count (building is a one-off per version)."""
    faiss = _faiss()
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


@dataclass(frozen=True)
class Calibration:
    """How an approximate index's search parameter was chosen: mean recall@``k`` against exact search, measured on
    ``queries`` calibration queries from ``source`` (``given``: e.g. user vectors; or ``item vectors + noise``), for
    ``target``; ``seconds`` spent measuring."""

    recall: float
    target: float
    k: int
    queries: int
    source: str
    seconds: float


@dataclass(frozen=True)
class _Settings:
    """What an index is built from besides its vectors; part of the fingerprint, so a change rebuilds."""

    recall_target: float = DEFAULT_RECALL_TARGET
    k: int = DEFAULT_CALIBRATION_K
    hnsw_m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION
    ef_search: int | None = None
    nlist: int | None = None
    nprobe: int | None = None
    seed: int = 0

    def key(self, kind: str) -> tuple[Any, ...]:
        """The settings an index of ``kind`` depends on (exact search depends on none)."""
        if kind == "exact":
            return ()
        return (kind, *astuple(self), IVF_TRAIN_POINTS_PER_LIST, CALIBRATION_QUERIES, CALIBRATION_NOISE)


class AnnIndex:
    """Top-k inner-product search over item vectors; returns external ids (``-1`` where fewer than k exist)."""

    def __init__(
        self,
        index: Any,
        kind: str,
        ids: np.ndarray,
        *,
        fingerprint: str,
        ef_search: int = 0,
        nprobe: int = 0,
        calibration: Calibration | None = None,
    ) -> None:
        self.index, self.kind, self.ids = index, kind, ids
        self.fingerprint, self.ef_search, self.nprobe = fingerprint, ef_search, nprobe
        self.calibration = calibration

    @property
    def size(self) -> int:
        """Number of indexed items."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Vector width."""
        return int(self.index.d)

    @property
    def recall(self) -> float:
        """Mean recall@k measured when the index was calibrated (1.0 for exact search)."""
        return 1.0 if self.calibration is None else self.calibration.recall

    def describe(self) -> dict[str, Any]:
        """Kind, size, search parameter and measured recall, as deployment info reports them."""
        info: dict[str, Any] = {"kind": self.kind, "items": self.size, "recall": round(self.recall, 4)}
        if self.kind == "ivf":
            info.update(nprobe=self.nprobe, nlist=int(self.index.nlist))
        if self.kind == "hnsw":
            info["ef_search"] = self.ef_search
        if self.calibration is not None:
            cal = self.calibration
            info.update(
                recall_target=cal.target, recall_k=cal.k, calibration_queries=cal.queries, calibration_source=cal.source
            )
        return info

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [B, k] float32, ids [B, k] int64)`` best first; missing slots are ``(-inf, -1)``."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InvalidInput(f"Queries must be [B, {self.dim}] vectors; got shape {list(queries.shape)}.")
        k = max(min(int(k), self.size), 1)
        _use_search_threads()
        scores, positions = _search(self.index, queries, k, _params(self.kind, self.nprobe, max(self.ef_search, k)))
        found = positions >= 0
        ids = np.where(found, self.ids[np.maximum(positions, 0)], -1).astype(np.int64)
        return np.where(found, scores, -np.inf).astype(np.float32), ids

    def save(self, path: str | Path) -> None:
        """Write the faiss index and a sidecar ``.json`` (kind, search parameters, calibration, fingerprint)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.tmp")
        _faiss().write_index(self.index, str(staged))
        staged.replace(target)  # a reader never sees a half-written index
        meta = {
            "kind": self.kind,
            "ef_search": self.ef_search,
            "nprobe": self.nprobe,
            "recall": self.recall,
            "calibration": None if self.calibration is None else asdict(self.calibration),
            "fingerprint": self.fingerprint,
        }
        target.with_suffix(".json").write_text(json.dumps(meta))

    @classmethod
    def load(
        cls,
        path: str | Path,
        vectors: np.ndarray,
        ids: np.ndarray | None = None,
        *,
        recall_target: float = DEFAULT_RECALL_TARGET,
        k: int = DEFAULT_CALIBRATION_K,
    ) -> AnnIndex:
        """Read an index written by :meth:`save` for these vectors and settings (InvalidInput if built otherwise)."""
        target = Path(path)
        external = _ids(vectors, ids)
        meta = json.loads(target.with_suffix(".json").read_text())
        expected = fingerprint(vectors, external, _Settings(recall_target, k).key(meta["kind"]))
        if meta.get("fingerprint") != expected:
            raise InvalidInput(
                f"The index at {target} was built from other item vectors or settings (recall_target, k); rebuild it."
            )
        index = _faiss().read_index(str(target))
        calibration = Calibration(**meta["calibration"]) if meta.get("calibration") else None
        return cls(
            index,
            meta["kind"],
            external,
            fingerprint=expected,
            ef_search=int(meta["ef_search"]),
            nprobe=int(meta["nprobe"]),
            calibration=calibration,
        )


def _params(kind: str, nprobe: int, ef_search: int) -> Any:
    faiss = _faiss()
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=ef_search)
    if kind == "ivf":
        return faiss.SearchParametersIVF(nprobe=nprobe)
    return None


def _search(index: Any, queries: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
    if params is None:
        return index.search(queries, k)
    return index.search(queries, k, params=params)


def resolve_kind(kind: str, num_items: int) -> str:
    """The concrete index kind: ``auto`` is exact up to ``EXACT_MAX_ITEMS`` items, IVF above."""
    if kind not in KINDS:
        raise InvalidInput(f"Unknown index kind {kind!r}; choose one of {list(KINDS)}.")
    if kind != "auto":
        return kind
    return "exact" if num_items <= EXACT_MAX_ITEMS else "ivf"


def build_ann_index(
    vectors: np.ndarray,
    kind: str = "auto",
    *,
    ids: np.ndarray | None = None,
    recall_target: float = DEFAULT_RECALL_TARGET,
    k: int = DEFAULT_CALIBRATION_K,
    queries: Queries = None,
    hnsw_m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    ef_search: int | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> AnnIndex:
    """Index ``vectors`` ``[N, D]`` for inner-product top-k; ``ids`` are what searches return (default row numbers).

    Approximate kinds are calibrated so that mean recall@``k`` (``k``: the candidates a search asks for) reaches
    ``recall_target`` on ``queries`` (``[Q, D]`` real query vectors such as user embeddings, or a function
    returning them, called only when calibrating; default: item vectors plus noise). A given ``nprobe`` (IVF) or
    ``ef_search`` (HNSW) is used as is, and its recall measured. IVF: ``nlist`` lists (default ``4·sqrt(N)``).
    HNSW: ``hnsw_m`` links per node, ``ef_construction`` build beam width.
    """
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) == 0:
        raise InvalidInput(f"Index needs a non-empty [N, D] matrix of item vectors; got shape {list(matrix.shape)}.")
    settings = _Settings(
        _check_target(recall_target), _check_k(k), hnsw_m, ef_construction, ef_search, nlist, nprobe, seed
    )
    external = _ids(matrix, ids)
    chosen = resolve_kind(kind, len(matrix))
    stamp = fingerprint(matrix, external, settings.key(chosen))
    with _every_core():
        if chosen == "exact":
            return AnnIndex(_build_exact(matrix), chosen, external, fingerprint=stamp)
        index = _build_hnsw(matrix, settings) if chosen == "hnsw" else _build_ivf(matrix, settings)
        sample, source = _calibration_queries(matrix, queries, settings.seed)
        parameter, calibration = _calibrate(index, chosen, matrix, sample, source, settings)
    _report(chosen, len(matrix), parameter, int(getattr(index, "nlist", 0)), calibration)
    return AnnIndex(
        index,
        chosen,
        external,
        fingerprint=stamp,
        ef_search=parameter if chosen == "hnsw" else 0,
        nprobe=parameter if chosen == "ivf" else 0,
        calibration=calibration,
    )


def _build_exact(matrix: np.ndarray) -> Any:
    index = _faiss().IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    return index


def _build_hnsw(matrix: np.ndarray, settings: _Settings) -> Any:
    faiss = _faiss()
    index = faiss.IndexHNSWFlat(matrix.shape[1], settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = settings.ef_construction
    index.add(matrix)
    return index


def _build_ivf(matrix: np.ndarray, settings: _Settings) -> Any:
    faiss = _faiss()
    dim = matrix.shape[1]
    lists = settings.nlist or max(1, min(int(4 * math.sqrt(len(matrix))), len(matrix) // IVF_TRAIN_POINTS_PER_LIST))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = settings.seed
    index.cp.verbose = False
    sample = np.random.default_rng(settings.seed).permutation(len(matrix))[: lists * IVF_TRAIN_POINTS_PER_LIST]
    index.train(matrix[np.sort(sample)])
    index.add(matrix)
    # faiss holds the quantizer by pointer: hand it to the index, which then frees it with itself.
    index.own_fields = True
    quantizer.this.disown()
    return index


def _calibration_queries(matrix: np.ndarray, queries: Queries, seed: int) -> tuple[np.ndarray, str]:
    """Up to ``CALIBRATION_QUERIES`` query vectors to measure recall on, and where they came from."""
    rng = np.random.default_rng(seed)
    given = queries() if callable(queries) else queries
    if given is not None:
        sample = np.asarray(given, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[1] != matrix.shape[1] or not np.isfinite(sample).all():
            raise InvalidInput(
                f"Calibration queries must be finite [Q, {matrix.shape[1]}] vectors; got shape {list(sample.shape)}."
            )
        if len(sample):
            return np.ascontiguousarray(sample[rng.permutation(len(sample))[:CALIBRATION_QUERIES]]), "given"
    # Without real queries, items stand in for them: a trained retrieval model pulls each user's vector toward the
    # items the user interacts with, so queries fall in the regions the items occupy, which are the regions IVF's
    # lists and HNSW's graph are built from. The noise keeps a query off an indexed point, whose own list or graph
    # neighbourhood would flatter the recall. Real user vectors may lie elsewhere: pass them when there are some.
    rows = rng.choice(len(matrix), size=min(CALIBRATION_QUERIES, len(matrix)), replace=False)
    sample = matrix[np.sort(rows)]
    spread = sample.std(axis=0, keepdims=True)
    noise = rng.normal(size=sample.shape).astype(np.float32) * spread * CALIBRATION_NOISE
    return np.ascontiguousarray(sample + noise, dtype=np.float32), "item vectors + noise"


def _calibrate(
    index: Any, kind: str, matrix: np.ndarray, queries: np.ndarray, source: str, settings: _Settings
) -> tuple[int, Calibration]:
    """The smallest search parameter whose mean recall@k on ``queries`` reaches the target, and its measure."""
    started = time.perf_counter()
    k = min(settings.k, len(matrix))
    truth, _ = _faiss().knn(queries, matrix, k, metric=_faiss().METRIC_INNER_PRODUCT)  # one blocked GEMM
    threshold = truth[:, k - 1 : k]
    # A found item counts when its exact score reaches the k-th exact score (ties and float rounding included).
    tolerance = 1e-5 * np.maximum(np.abs(threshold), 1.0)

    @functools.cache
    def recalls_at(parameter: int) -> np.ndarray:
        scores, positions = _search(index, queries, k, _params(kind, parameter, max(parameter, k)))
        hits = (positions >= 0) & (scores >= threshold - tolerance)
        return np.asarray(hits.sum(axis=1) / k)

    target = settings.recall_target

    def reaches(parameter: int) -> bool:
        # The smallest parameter whose *sample* mean passes is biased low for other queries (it is chosen because
        # the sample happened to pass): ask the one-sided 95% lower bound of the mean to reach the target instead.
        recalls = recalls_at(parameter)
        error = recalls.std(ddof=1) / math.sqrt(len(recalls)) if len(recalls) > 1 else 0.0
        return bool(recalls.mean() - CONFIDENCE_Z * error >= target)

    if kind == "ivf":
        # Only probing every list guarantees the exact answer for queries beyond the sample.
        fixed, start, cap = settings.nprobe or (index.nlist if target >= 1.0 else None), 1, int(index.nlist)
    else:
        fixed, start, cap = settings.ef_search, k, max(k, min(len(matrix), HNSW_MAX_EF_SEARCH))
    parameter = min(fixed, cap) if fixed else _smallest_passing(reaches, start, cap)
    recall = float(recalls_at(parameter).mean())
    seconds = round(time.perf_counter() - started, 2)
    return int(parameter), Calibration(round(recall, 4), target, k, len(queries), source, seconds)


def _smallest_passing(reaches: Callable[[int], bool], start: int, cap: int) -> int:
    """About the smallest parameter in ``[start, cap]`` that ``reaches`` the target (recall grows with it): doubling,
    then bisecting to within an eighth; ``cap`` when nothing below reaches it."""
    failing, passing = start - 1, start
    while not reaches(passing) and passing < cap:
        failing, passing = passing, min(passing * 2, cap)
    while passing - failing > max(1, failing // 8):
        middle = (failing + passing) // 2
        if reaches(middle):
            passing = middle
        else:
            failing = middle
    return passing


def _report(kind: str, items: int, parameter: int, nlist: int, calibration: Calibration) -> None:
    name = "nprobe" if kind == "ivf" else "efSearch"
    of_lists = f" of {nlist} lists" if kind == "ivf" else ""
    log.info(
        "Calibrated the %s index over %d items: %s %d%s gives recall@%d %.3f (target %.3f) on %d queries (%s) "
        "in %.1fs",
        kind, items, name, parameter, of_lists, calibration.k, calibration.recall, calibration.target,
        calibration.queries, calibration.source, calibration.seconds,
    )  # fmt: skip
    if calibration.recall < calibration.target:
        log.warning(
            "The %s index reaches only recall@%d %.3f (target %.3f) at %s %d; use index: exact (or ivf) instead.",
            kind, calibration.k, calibration.recall, calibration.target, name, parameter,
        )  # fmt: skip
    elif kind == "ivf" and calibration.target >= 1.0:
        log.warning(
            "recall_target 1 makes the ivf index probe all %d lists: index: exact answers the same faster.", nlist
        )
    elif kind == "ivf" and parameter > IVF_DEGENERATE_SHARE * nlist:
        log.warning(
            "The ivf index must probe %d of %d lists to reach recall@%d %.3f: the item vectors have little cluster "
            "structure, so IVF is a slow exact search here. Consider index: exact (or a lower recall_target).",
            parameter, nlist, calibration.k, calibration.target,
        )  # fmt: skip


def cached_index(
    folder: str | Path,
    vectors: np.ndarray,
    kind: str = "auto",
    *,
    ids: np.ndarray | None = None,
    recall_target: float = DEFAULT_RECALL_TARGET,
    k: int = DEFAULT_CALIBRATION_K,
    queries: Queries = None,
) -> AnnIndex:
    """The index of ``vectors`` saved under ``folder`` (``<kind>.faiss``), built, calibrated (see
    :func:`build_ann_index`) and saved first if missing or stale. ``queries`` are read only when building."""
    external = _ids(vectors, ids)
    chosen = resolve_kind(kind, len(vectors))
    target, width = _check_target(recall_target), _check_k(k)
    path = Path(folder) / f"{chosen}.faiss"
    with _BUILD_LOCK:  # two deployments of one model version build its index once
        if path.is_file() and path.with_suffix(".json").is_file():
            try:
                return AnnIndex.load(path, vectors, external, recall_target=target, k=width)
            except (InvalidInput, RuntimeError, ValueError, KeyError, TypeError) as exc:
                log.warning("Rebuilding the %s index at %s: %s", chosen, path, exc)
        index = build_ann_index(vectors, chosen, ids=external, recall_target=target, k=width, queries=queries)
        try:
            index.save(path)
        except OSError as exc:  # a read-only bundle still serves, from an index built in memory
            log.warning("Could not save the %s index to %s: %s", chosen, path, exc)
        return index


def calibration_users(num_users: int, seed: int = 0) -> np.ndarray:
    """Model ids (1..``num_users``) of a seeded sample of users whose query vectors calibrate an index."""
    users = np.arange(1, max(int(num_users), 0) + 1, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).permutation(users)[:CALIBRATION_QUERIES])


def fingerprint(vectors: np.ndarray, ids: np.ndarray, settings: tuple[Any, ...] = ()) -> str:
    """A cheap identity of (vectors, ids, build settings): shapes, a strided sample of rows, all ids, the settings."""
    digest = hashlib.sha1(str((vectors.shape, settings)).encode())
    step = max(len(vectors) // 4096, 1)
    digest.update(np.ascontiguousarray(vectors[::step], dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _check_target(recall_target: float) -> float:
    value = float(recall_target)
    if not 0.0 < value <= 1.0:
        raise InvalidInput(
            f"recall_target must be in (0, 1] (a mean recall@k, e.g. 0.95); got {recall_target!r}. "
            "Use index: exact for exact answers."
        )
    return value


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise InvalidInput(f"The calibration k (candidates per search) must be >= 1; got {k!r}.")
    return int(k)


def _ids(vectors: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    external = np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if external.shape != (len(vectors),):
        raise InvalidInput(f"ids must hold one id per vector ({len(vectors)}); got shape {list(external.shape)}.")
    return external
