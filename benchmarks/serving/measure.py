"""One load run against one server (the generator as its own process), and the answer check before any timing.

:func:`load_run` starts ``loadgen.py`` for a (server, concurrency) pair and adds what only this side can see: the
server's CPU time per request over the run (its whole process tree) and the machine's load average.
:func:`check_answers` asks a server for a seeded sample of users, known and unknown, one request at a time, and
compares each answer with :class:`reference.Reference` (exact items in order; near ties named apart).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent


def load_run(
    server: Any, users: str, concurrency: int, warmup: float, duration: float, seed: int, scratch: Path
) -> dict[str, Any]:
    """The generator's summary for one run, plus ``server_cpu_ms_per_request`` and ``load_avg``."""
    out = Path(tempfile.mkstemp(suffix=".json", dir=scratch)[1])
    args = [
        sys.executable,
        str(HERE / "loadgen.py"),
        "--url",
        server.url,
        "--users",
        users,
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]
    before = server.cpu_seconds()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=warmup + duration + 120, check=False)
        if done.returncode != 0 or not out.read_text():
            return {"error": f"load generator failed ({done.returncode}): {done.stderr[-1500:]}"}
        result: dict[str, Any] = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    spent = server.cpu_seconds() - before
    total = result["requests"] + result["warmup_requests"]
    result["server_cpu_ms_per_request"] = round(spent * 1000 / total, 3) if total else None
    result["load_avg"] = round(os.getloadavg()[0], 2)
    if not server.alive():
        result["error"] = f"{server.name} died during the run: {server.tail()}"
    return result


def sample_users(users: list[Any], count: int, unknown: int, seed: int) -> list[Any]:
    """A seeded sample of known users plus ``unknown`` ids no model knows."""
    rng = random.Random(seed)
    picked = rng.sample(users, min(count, len(users)))
    return picked + [8_000_000_000 + i for i in range(unknown)]


def check_answers(server: Any, reference: Any, users: list[Any], k: int) -> dict[str, Any]:
    """Each sampled user's answer from ``server`` against the brute-force reference."""
    mismatches: list[dict[str, Any]] = []
    near_ties = 0
    from_fallback = 0
    with httpx.Client(timeout=60.0) as client:
        for user in users:
            answer = client.post(server.url, json={"user_id": user, "k": k})
            if answer.status_code != 200:
                mismatches.append({"user": user, "status": answer.status_code, "body": answer.text[:300]})
                continue
            body = answer.json()
            items = [entry["item_id"] for entry in body["items"]]
            scores = [float(entry["score"]) for entry in body["items"]]
            expected = reference.recommend(user, k)
            from_fallback += bool(body.get("fallback"))
            verdict = reference.verdict(expected, items, scores)
            if verdict == "near tie":
                near_ties += 1
            elif verdict is not None or bool(body.get("fallback")) != expected["fallback"]:
                mismatches.append({"user": user, "expected": expected["items"], "got": items})
    return {
        "users_checked": len(users),
        "fallback_answers": from_fallback,
        "mismatches": len(mismatches),
        "near_ties": near_ties,
        "examples": mismatches[:3],
        "identical": not mismatches,
    }


def recall_against(server: Any, reference: Any, users: list[Any], k: int) -> dict[str, Any]:
    """Mean recall@k of ``server``'s items against the exact answer (for an approximate index)."""
    recalls = []
    with httpx.Client(timeout=60.0) as client:
        for user in users:
            body = client.post(server.url, json={"user_id": user, "k": k}).json()
            got = {entry["item_id"] for entry in body.get("items", [])}
            expected = reference.recommend(user, k)["items"]
            recalls.append(len(got & set(expected)) / max(len(expected), 1))
    return {"users_checked": len(users), "recall_at_k": round(sum(recalls) / max(len(recalls), 1), 4)}
