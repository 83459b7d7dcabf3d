"""The brute-force answer the serving benchmark checks every server against: NumPy + onnxruntime, no recplane code.

For a user known to the retrieval model: the query vector (the bundle's ONNX query graph), every item's score as
one NumPy matrix product with ``item_vectors.npy``, the padding row and the user's training items (decoded from
``interactions/seen_keys.npy``) excluded, the ``candidates`` best by a full stable argsort, the ranker's ONNX graph
on each (user, candidate) pair with its inputs gathered from the bundle's feature arrays, then a stable sort by
the ranker's first task and the top ``k``. An unknown user gets the ``k`` items with the most training
interactions (ties: lower model id first). Raw item ids come from ``item_ids.parquet``.

Besides the items, :func:`compare` names why two answers differ: a *near tie* (the first differing items score
within ``TIE`` of each other, so float summation order decides) is reported apart from a real mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

TIE = 1e-5


def _session(folder: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])


def _ids(folder: Path, name: str) -> np.ndarray:
    return pq.read_table(folder / f"{name}_ids.parquet").column(f"{name}_id").to_numpy(zero_copy_only=False)


class Reference:
    """Brute-force recommendations from two bundle folders (see the module docstring)."""

    def __init__(self, retrieval: str | Path, ranking: str | Path, candidates: int) -> None:
        self.retrieval, self.ranking = Path(retrieval), Path(ranking)
        self.candidates = candidates
        self.query = _session(self.retrieval)
        self.ranker = _session(self.ranking)
        self.items = np.load(self.retrieval / "item_vectors.npy")
        self.item_raw = _ids(self.retrieval, "item")
        self.user_index = {raw: i + 1 for i, raw in enumerate(_ids(self.retrieval, "user").tolist())}
        interactions = self.retrieval / "interactions"
        self.seen_keys = np.load(interactions / "seen_keys.npy")
        self.seen_indptr = np.load(interactions / "seen_indptr.npy")
        self.counts = np.load(interactions / "item_counts.npy")
        manifest = json.loads((self.ranking / "manifest.json").read_text())
        self.inputs = [spec["name"] for spec in manifest["inputs"]]
        self.ranker_users = {raw: i + 1 for i, raw in enumerate(_ids(self.ranking, "user").tolist())}
        ranker_items = {raw: i + 1 for i, raw in enumerate(_ids(self.ranking, "item").tolist())}
        self.ranker_item = np.array([0, *(ranker_items.get(raw, 0) for raw in self.item_raw.tolist())])
        self.features = {p.name[:-4]: np.load(p) for p in sorted((self.ranking / "features").glob("*.npy"))}

    def recommend(self, user: Any, k: int) -> dict[str, Any]:
        """``{"items": [raw ids], "scores": [...], "fallback": bool}`` for one user."""
        model_id = self.user_index.get(user, 0)
        if model_id == 0:
            best = np.argsort(-self.counts[1:], kind="stable")[:k] + 1
            return {"items": self.item_raw[best - 1].tolist(), "scores": self.counts[best].tolist(), "fallback": True}
        query = self.query.run(None, {self.query.get_inputs()[0].name: np.array([model_id], dtype=np.int64)})[0][0]
        scores = self.items @ query
        scores[0] = -np.inf
        seen = self.seen_keys[self.seen_indptr[model_id] : self.seen_indptr[model_id + 1]]
        scores[seen - model_id * len(self.counts)] = -np.inf
        candidates = np.argsort(-scores, kind="stable")[: self.candidates]
        probabilities = self._rank(user, candidates)
        order = np.argsort(-probabilities, kind="stable")[:k]
        return {
            "items": self.item_raw[candidates[order] - 1].tolist(),
            "scores": probabilities[order].tolist(),
            "fallback": False,
        }

    @staticmethod
    def verdict(expected: dict[str, Any], items: list[Any], scores: list[float]) -> str | None:
        """None when ``items`` match ``expected`` (see :func:`compare`)."""
        return compare(expected, items, scores)

    def _rank(self, user: Any, candidates: np.ndarray) -> np.ndarray:
        items = self.ranker_item[candidates]
        users = np.full(len(candidates), self.ranker_users.get(user, 0), dtype=np.int64)
        feeds = {}
        for spec, name in zip(self.ranker.get_inputs(), self.inputs, strict=True):
            if name == "user_id":
                value = users
            elif name == "item_id":
                value = items
            elif f"item.{name}" in self.features:
                value = self.features[f"item.{name}"][items]
            else:
                value = self.features[f"user.{name}"][users]
            feeds[spec.name] = np.ascontiguousarray(value)
        return np.asarray(self.ranker.run(None, feeds)[0], dtype=np.float64).reshape(-1)


def compare(expected: dict[str, Any], items: list[Any], scores: list[float]) -> str | None:
    """None when ``items`` are the expected ones in order; else ``"near tie"`` or ``"mismatch"``."""
    if list(items) == list(expected["items"]):
        return None
    for position, (want, got) in enumerate(zip(expected["items"], items, strict=False)):
        if want != got:
            ours = expected["scores"][position]
            theirs = scores[position] if position < len(scores) else float("nan")
            return "near tie" if abs(ours - theirs) <= TIE * max(1.0, abs(ours)) else "mismatch"
    return "mismatch"
