"""The peers' recommendation pipeline, written the obvious way in PyTorch: the work recplane's service does.

Both peers of ``recplane bench serving`` (``peer_fastapi.py``, and the Ray Serve deployment in
``benchmarks/peers/rayserve/``) wrap this one class, so they compute exactly the same thing and differ only in how
they serve it. It reads the bundle's plain files (NumPy, Parquet, TorchScript) and never imports recplane, so it
runs in the Ray peer's own venv too.

Per request (or per batch of users):

1. raw user id → model id (a dict); an unknown user gets the popularity fallback: the ``k`` items with the most
   training interactions (ties: lower item id first), unranked — as recplane's ``popularity`` fallback;
2. query vector from the retrieval model's TorchScript query graph, scores = query @ item matrix (``torch``);
3. exclude seen: the user's training items (and the padding row) set to ``-inf``, then ``topk(candidates)``;
4. the ranker (TorchScript) on every (user, candidate) pair, its inputs gathered from the bundle's feature arrays
   in the manifest's order; score = its first task's probability;
5. sort by that score (stable, so ties keep retrieval order), top ``k``, raw item ids out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch


def _load_graph(folder: Path) -> torch.nn.Module | Any:
    """The bundle's TorchScript graph (the obvious PyTorch form), else its torch.export program."""
    if (folder / "model.ts").is_file():
        return torch.jit.load(str(folder / "model.ts")).eval()
    return torch.export.load(str(folder / "model.pt2")).module()


def _raw_ids(folder: Path, name: str) -> np.ndarray:
    return pq.read_table(folder / f"{name}_ids.parquet").column(f"{name}_id").to_numpy(zero_copy_only=False)


class TorchRecommender:
    """Retrieval (MF query graph + item matrix) → exclude seen → top candidates → ranker → top k."""

    def __init__(self, retrieval: str | Path, ranking: str | Path, *, candidates: int = 200) -> None:
        retrieval, ranking = Path(retrieval), Path(ranking)
        self.candidates = candidates
        self.query_graph = _load_graph(retrieval)
        self.item_matrix = torch.from_numpy(np.load(retrieval / "item_vectors.npy"))  # [N + 1, D], row 0 = padding
        users, self.item_raw = _raw_ids(retrieval, "user"), _raw_ids(retrieval, "item")
        self.user_ids = {raw: index + 1 for index, raw in enumerate(users.tolist())}
        self.seen = self._seen_items(retrieval / "interactions", len(users))
        counts = np.load(retrieval / "interactions" / "item_counts.npy")
        self.popular = np.argsort(-counts[1:], kind="stable") + 1
        self.counts = counts.astype(np.float64)
        self.ranker = _load_graph(ranking)
        manifest = json.loads((ranking / "manifest.json").read_text())
        self.ranker_inputs = [spec["name"] for spec in manifest["inputs"]]
        ranker_users = {raw: index + 1 for index, raw in enumerate(_raw_ids(ranking, "user").tolist())}
        self.ranker_user = {raw: ranker_users.get(raw, 0) for raw in users.tolist()}
        ranker_items = {raw: index + 1 for index, raw in enumerate(_raw_ids(ranking, "item").tolist())}
        self.ranker_item = torch.tensor([0, *(ranker_items.get(raw, 0) for raw in self.item_raw.tolist())])
        self.features = {
            path.name[:-4]: torch.from_numpy(np.load(path)) for path in sorted((ranking / "features").glob("*.npy"))
        }

    @staticmethod
    def _seen_items(folder: Path, num_users: int) -> list[torch.Tensor]:
        """Each user's training items (model ids), as a tensor per user model id."""
        keys = np.load(folder / "seen_keys.npy")
        indptr = np.load(folder / "seen_indptr.npy")
        num_items = len(np.load(folder / "item_counts.npy"))
        items = keys - np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr)) * num_items
        return [torch.from_numpy(items[indptr[u] : indptr[u + 1]]) for u in range(num_users + 1)]

    @torch.inference_mode()
    def recommend(self, user_id: Any, k: int) -> dict[str, Any]:
        """One user's answer: ``{"items": [{"item_id", "score"}], "fallback", "timings_ms"}``."""
        return self.recommend_batch([user_id], [k])[0]

    @torch.inference_mode()
    def recommend_batch(self, user_ids: list[Any], ks: list[int]) -> list[dict[str, Any]]:
        """Answers for several users at once (one matmul, one ranker call)."""
        started = time.perf_counter()
        model_ids = [self.user_ids.get(user, 0) for user in user_ids]
        known = [row for row, uid in enumerate(model_ids) if uid]
        answers: list[dict[str, Any]] = [self._popular(ks[row]) for row in range(len(user_ids))]
        if not known:
            return answers
        users = torch.tensor([model_ids[row] for row in known])
        queries = self.query_graph(users)[0]
        scores = queries @ self.item_matrix.T  # [B, N + 1]
        scores[:, 0] = -torch.inf
        for position, user in enumerate(users.tolist()):
            scores[position, self.seen[user]] = -torch.inf
        top = torch.topk(scores, min(self.candidates, scores.shape[1] - 1), dim=1)
        retrieved = time.perf_counter()
        probabilities = self._rank([user_ids[row] for row in known], top.indices)
        order = torch.sort(probabilities, dim=1, descending=True, stable=True).indices
        finished = time.perf_counter()
        timings = {"retrieval": (retrieved - started) * 1000, "ranking": (finished - retrieved) * 1000}
        for position, row in enumerate(known):
            best = order[position, : ks[row]]
            items = self.item_raw[top.indices[position, best].numpy() - 1].tolist()
            values = probabilities[position, best].tolist()
            answers[row] = {
                "items": [{"item_id": i, "score": s} for i, s in zip(items, values, strict=True)],
                "fallback": None,
                "timings_ms": timings,
            }
        return answers

    def _rank(self, raw_users: list[Any], candidates: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` ranker probabilities of every (user, candidate) pair, in one ranker call."""
        rows, width = candidates.shape
        users = torch.tensor([self.ranker_user[raw] for raw in raw_users]).repeat_interleave(width)
        items = self.ranker_item[candidates.reshape(-1)]
        inputs = []
        for name in self.ranker_inputs:
            if name == "user_id":
                inputs.append(users)
            elif name == "item_id":
                inputs.append(items)
            elif f"item.{name}" in self.features:
                inputs.append(self.features[f"item.{name}"][items])
            else:
                inputs.append(self.features[f"user.{name}"][users])
        return self.ranker(*inputs)[0].reshape(rows, width)

    def _popular(self, k: int) -> dict[str, Any]:
        best = self.popular[:k]
        return {
            "items": [
                {"item_id": raw, "score": float(self.counts[i])}
                for raw, i in zip(self.item_raw[best - 1].tolist(), best.tolist(), strict=True)
            ],
            "fallback": "popularity: unknown user",
            "timings_ms": {},
        }
