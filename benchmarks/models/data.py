"""The benchmark's inputs: ml-100k as Parquet files, and MiniLM vectors of each movie's text, cached by text hash.

ml-100k is read once by the suite (``load_movielens_100k``: ``RECPLANE_MOVIELENS_PATH`` or the RecBole wheel in
``.cache/``) and written to ``.bench/models/data/`` so that every run's process reads the same bytes quickly.

Item texts (``render_texts`` over title, genres and release year) are encoded by MiniLM in a child process (the
suite never imports sentence-transformers itself) and cached in ``.bench/models/minilm_cache.parquet``, one row
per distinct text keyed by its SHA-256 and the encoder's name: a later run encodes only texts it has not seen.
The vectors join the items table as a ``fixed_size_list<float32, 384>`` column, which the trainer reads as a
dense vector feature (two-tower's item vector, a 384-wide dense field for DeepFM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recplane.features.text import MINILM_DIMENSION, MINILM_MODEL, render_texts, text_sha256
from recplane.samples.movielens import load_movielens_100k

HERE = Path(__file__).resolve().parent
CACHE_SCHEMA = pa.schema(
    [
        pa.field("text_sha256", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), MINILM_DIMENSION), nullable=False),
    ]
)


class DataPaths(NamedTuple):
    """Where the runs read their inputs."""

    ratings: str
    users: str
    items: str

    def as_dict(self) -> dict[str, str]:
        return self._asdict()


class TextStats(NamedTuple):
    """How the item text vectors were obtained in this run."""

    items: int
    encoded: int
    reused: int
    encode_seconds: float
    example: str
    error: str | None = None


def bench_root() -> Path:
    """``.bench/models`` at the repository root (git-ignored)."""
    return HERE.parents[1] / ".bench" / "models"


def prepare(root: Path, text_columns: tuple[str, ...], text_feature: str) -> tuple[DataPaths, TextStats, str]:
    """Write ml-100k (items with their text vectors, when MiniLM can run) under ``root/data``; return the paths,
    the text stats (``error`` says why there are no vectors) and where ml-100k was read from."""
    tables = load_movielens_100k()
    folder = root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    items = tables.items.sort_by("item_id")
    texts = render_texts(items, text_columns)
    try:
        vectors, stats = text_vectors(texts, root / "minilm_cache.parquet")
    except Exception as exc:  # MiniLM is an optional extra: the leaderboard runs without it, the text rows say why
        stats = TextStats(len(texts), 0, 0, 0.0, texts[0], f"{type(exc).__name__}: {exc}")
    else:
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), MINILM_DIMENSION)
        items = items.append_column(text_feature, column)
    paths = DataPaths(str(folder / "ratings.parquet"), str(folder / "users.parquet"), str(folder / "items.parquet"))
    for table, path in ((tables.ratings, paths.ratings), (tables.users, paths.users), (items, paths.items)):
        write_atomically(table, Path(path))
    return paths, stats, tables.source


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write then rename: runs of another benchmark still reading the old file keep reading whole bytes."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    pq.write_table(table, partial)
    os.replace(partial, path)


def text_vectors(texts: list[str], cache_path: Path) -> tuple[np.ndarray, TextStats]:
    """MiniLM vectors of ``texts`` in order: cached ones reused, the others encoded (in a child) and cached."""
    hashes = [text_sha256(text) for text in texts]
    cached = read_cache(cache_path)
    missing = sorted({digest: text for digest, text in zip(hashes, texts, strict=True) if digest not in cached}.items())
    seconds = 0.0
    if missing:
        started = time.perf_counter()
        fresh = encode_in_child([text for _, text in missing])
        seconds = time.perf_counter() - started
        for (digest, _), vector in zip(missing, fresh, strict=True):
            cached[digest] = vector
        write_cache(cache_path, cached, dict(missing), texts, hashes)
    vectors = np.stack([cached[digest] for digest in hashes]).astype(np.float32)
    stats = TextStats(len(texts), len(missing), len(set(hashes)) - len(missing), round(seconds, 1), texts[0])
    return vectors, stats


def read_cache(path: Path) -> dict[str, np.ndarray]:
    """Cached vectors by text hash, for this encoder only (another model's vectors are never reused)."""
    if not path.is_file():
        return {}
    table = pq.read_table(path)
    if table.schema != CACHE_SCHEMA:
        return {}  # an older layout: re-encode rather than guess
    table = table.filter(pc.equal(table.column("model"), MINILM_MODEL))
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, MINILM_DIMENSION)
    return dict(zip(table.column("text_sha256").to_pylist(), vectors, strict=True))


def write_cache(
    path: Path, vectors: dict[str, np.ndarray], new_texts: dict[str, str], texts: list[str], hashes: list[str]
) -> None:
    """Rewrite the cache with every known vector (old rows keep their text; new rows get theirs)."""
    known_texts = dict(zip(hashes, texts, strict=True))
    old = pq.read_table(path) if path.is_file() else None
    if old is not None and old.schema == CACHE_SCHEMA:
        known_texts = {**dict(zip(old.column("text_sha256").to_pylist(), old.column("text").to_pylist(),
                                  strict=True)), **known_texts}  # fmt: skip
    known_texts.update(new_texts)
    digests = sorted(vectors)
    flat = np.stack([vectors[digest] for digest in digests]).astype(np.float32).reshape(-1)
    table = pa.Table.from_arrays(
        [
            pa.array(digests, pa.string()),
            pa.array([MINILM_MODEL] * len(digests), pa.string()),
            pa.array([known_texts[digest] for digest in digests], pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), MINILM_DIMENSION),
        ],
        schema=CACHE_SCHEMA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(table, path)


def encode_in_child(texts: list[str]) -> np.ndarray:
    """Run ``worker.py encode`` (one torch thread) and read its vectors back."""
    with tempfile.TemporaryDirectory(prefix="recplane-bench-encode-") as folder:
        source, target = Path(folder) / "texts.json", Path(folder) / "vectors.npy"
        source.write_text(json.dumps(texts), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(HERE / "worker.py"), "encode", str(source), str(target)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        report = target.with_suffix(".json")
        result = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else {}
        if done.returncode != 0 or result.get("status") != "ok":
            raise RuntimeError(f"MiniLM encoding failed: {result.get('error') or done.stderr[-2000:]}")
        vectors: np.ndarray = np.load(target)
        return vectors
