"""Peer (a) of ``recplane bench serving``: a minimal FastAPI + PyTorch service, written the obvious way.

``python peer_fastapi.py --retrieval BUNDLE --ranking BUNDLE --port P`` serves ``POST /v1/recommend``
(``{"user_id": ..., "k": 10}``) with the same computation as recplane's service (:mod:`torch_recommender`: TorchScript
query graph, ``query @ items`` in torch, seen items masked, ``topk(200)``, the TorchScript ranker on every
candidate, sort, top k) on the same bundle files, one request at a time. It is what a team would write first:
a pydantic request and response model, a plain ``def`` endpoint (FastAPI runs it in its thread pool, so requests
overlap while torch releases the GIL), uvicorn with one worker, uvloop and httptools (``uvicorn[standard]``), no
access log. ``GET /readyz`` answers once the models are loaded and warmed up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_recommender import TorchRecommender


class RecommendBody(BaseModel):
    """The request: a user and how many items."""

    user_id: int | str
    k: int = 10


class ScoredItem(BaseModel):
    """One recommended item."""

    item_id: int | str
    score: float


class RecommendAnswer(BaseModel):
    """The answer: items best first, the fallback used (if any) and the time per stage."""

    items: list[ScoredItem]
    fallback: str | None
    timings_ms: dict[str, float]


def build_app(retrieval: str, ranking: str, candidates: int) -> FastAPI:
    """The FastAPI app over one loaded recommender."""
    recommender = TorchRecommender(retrieval, ranking, candidates=candidates)
    recommender.recommend(next(iter(recommender.user_ids)), 10)  # warm up TorchScript's first-call profiling
    app = FastAPI(title="peer: FastAPI + PyTorch")

    @app.post("/v1/recommend", response_model=RecommendAnswer)
    def recommend(body: RecommendBody) -> RecommendAnswer:
        return RecommendAnswer(**recommender.recommend(body.user_id, body.k))

    @app.get("/readyz")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retrieval", required=True)
    parser.add_argument("--ranking", required=True)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    app = build_app(args.retrieval, args.ranking, args.candidates)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        workers=1,
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
