"""The RecBole 1.2.1 peer: make sure its venv exists, run ``run_recbole.py`` and read its JSON document.

The peer lives in ``benchmarks/peers/recbole`` with its own venv (RecBole pins numpy 1.x, scipy < 1.12 and
pandas 2.x, which recplane does not use). When the venv is missing and setup is allowed, ``setup.sh`` builds it
(it needs Python 3.11 and the package index or the RecBole wheel in ``.cache/``); when that is impossible the
suite reports why in the comparison rows instead of failing.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

PEER_DIR = Path(__file__).resolve().parents[1] / "peers" / "recbole"
PEER_PYTHON = PEER_DIR / ".venv" / "bin" / "python"
SETUP_HINT = "bash benchmarks/peers/recbole/setup.sh"


class PeerRun(NamedTuple):
    """The peer's results by RecBole model name, or why there are none."""

    results: dict[str, dict[str, Any]]
    environment: dict[str, Any]
    unavailable: str | None
    wall_seconds: float


def ensure_venv(allow_setup: bool) -> str | None:
    """None when the peer can run; else why not (after trying ``setup.sh`` when ``allow_setup``)."""
    if PEER_PYTHON.is_file():
        return None
    if not allow_setup:
        return f"peer venv missing (quick mode does not build it; run {SETUP_HINT})"
    done = subprocess.run(["bash", str(PEER_DIR / "setup.sh")], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not PEER_PYTHON.is_file():
        reason = (done.stderr or done.stdout).strip().splitlines()[-2:]
        return f"peer venv could not be built by setup.sh (exit {done.returncode}): {' '.join(reason)}"
    return None


def run_peer(epochs: dict[str, int], *, allow_setup: bool, threads: int, seed: int) -> PeerRun:
    """Run the RecBole models in ``epochs`` (model -> max epochs), one child process each, and collect them."""
    started = time.perf_counter()
    why = ensure_venv(allow_setup)
    if why is not None:
        return PeerRun({}, {}, why, 0.0)
    models = list(epochs)
    with tempfile.TemporaryDirectory(prefix="recplane-bench-recbole-") as folder:
        out = Path(folder) / "recbole.json"
        command = [
            str(PEER_PYTHON), str(PEER_DIR / "run_recbole.py"), "--models", ",".join(models),
            "--epochs", str(max(epochs.values())), "--threads", str(threads), "--seed", str(seed),
            "--json", str(out),
            *[arg for model, count in epochs.items() for arg in ("--model-epochs", f"{model}={count}")],
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if not out.is_file():
            tail = " ".join(done.stderr.strip().splitlines()[-3:])
            return PeerRun({}, {}, f"run_recbole.py exited {done.returncode} with no result: {tail}", 0.0)
        document = json.loads(out.read_text(encoding="utf-8"))
    results = {result["model"]: result for result in document.pop("results", [])}
    return PeerRun(results, document, None, time.perf_counter() - started)
