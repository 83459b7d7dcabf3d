"""Feature-store benchmark: recplane side by side with Feast 0.67 in one run, on the same data, values checked.

``recplane bench features [--quick] [--json] [--runs N]``. The data is ``data.py``'s deterministic set (100k users
x ~10 rows, 50k items x ~5, 1M labels over 30 days, event-time ties, late rows, cold entities; ``--quick``: 1/10),
cached under ``.bench/features/data-quick`` / ``data-1`` (the folders the Feast peer uses). recplane's steps run
in child processes (``recplane_steps.py``: one process per step, so peak RSS is that step's), Feast's through
``benchmarks/peers/feast/run_feast.py`` in its own venv (the same per-step processes), one after the other so
they never share the CPU. Both engines get the whole machine (Feast with ``--threads <cpus>``, recplane's DuckDB
with its default).

Cases (every row has ``ratio`` = Feast / recplane, so > 1 means recplane wins):

* ``training_set_{N}_vs_feast_{duckdb,file}`` — seconds to build the point-in-time training set of the first N
  labels (100k and 1M; quick 10k and 100k), with peak RSS and the value check of **both** engines against
  ``reference.py`` (rows missing, rows with a wrong value). Targets: >= 3x Feast+DuckDB, >= 10x Feast's file store.
* ``materialize_{embedded,redis}_vs_feast_{sqlite,redis}`` — seconds to materialize the full history of both
  views; every entity's served value (cold ones included) is then checked against the reference. Target >= 5x.
* ``online_{single,batch100}_{embedded,redis}_vs_feast_{sqlite,redis}`` — SDK lookup latency of the user view's
  3 features (same id draws as Feast, 5 rounds x 1000 single / 100 batch-of-100, median of per-round p50/p99);
  ``value`` is the p99. Targets: p99 >= 5x lower; embedded single p99 <= 0.25 ms.
* ``online_http_{single,batch100}`` — the same lookups through ``Client(url, token)`` against a ``recplane
  server`` subprocess (baseline: Feast's in-process SQLite numbers, for orientation; no target), every entity's
  values checked over HTTP too.

Redis: ``RECPLANE_TEST_REDIS_URL`` or ``redis://127.0.0.1:6379``; recplane uses db 10 and Feast db 9, each
flushed before materializing. Without a reachable Redis, or without the Feast venv
(``bash benchmarks/peers/feast/setup.sh``), the affected rows say ``unavailable: why`` instead of a number.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FEAST_DIR = REPO / "benchmarks" / "peers" / "feast"
FEAST_PYTHON = FEAST_DIR / ".venv" / "bin" / "python"
BENCH_ROOT = REPO / ".bench" / "features"
RECPLANE_REDIS_DB = 10
FEAST_REDIS_DB = 9
TEAM = "recsys"
Emit = Callable[[dict[str, Any]], None]


class Plan(NamedTuple):
    """Sizes of one run (a NamedTuple: the CLI loads this file without registering it in ``sys.modules``)."""

    quick: bool
    scale: float
    label_rows: tuple[int, ...]
    runs: int
    feast_timeout: float
    step_timeout: float

    @classmethod
    def of(cls, quick: bool, runs: int | None) -> Plan:
        if quick:
            return cls(True, 0.1, (10_000, 100_000), runs or 1, 300.0, 240.0)
        return cls(False, 1.0, (100_000, 1_000_000), runs or 1, 1200.0, 900.0)

    @property
    def data_dir(self) -> Path:
        return BENCH_ROOT / ("data-quick" if self.quick else f"data-{self.scale:g}")


def load_sibling(name: str) -> Any:
    """A helper module next to this file, loaded by path and registered (its dataclasses need ``sys.modules``)."""
    module_name = f"_features_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def run(emit: Emit, quick: bool = False, runs: int | None = None) -> None:
    """Prepare data, run recplane's steps and Feast's, then emit one row per case."""
    plan = Plan.of(quick, runs)
    data = load_sibling("data")
    meta = data.ensure(data.DataSpec.scaled(plan.scale), plan.data_dir)
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=BENCH_ROOT))
    redis = redis_target()
    try:
        ours = RecplaneSide(plan, meta, scratch, redis).run_all()
        feast = run_feast(plan, scratch, redis)
        Rows(emit, plan, meta, ours, feast, redis).emit_all()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ environment


class RedisTarget(NamedTuple):
    """Where the Redis cases run, or why they cannot."""

    host: str
    port: int
    unavailable: str | None

    @property
    def recplane_url(self) -> str:
        return f"redis://{self.host}:{self.port}/{RECPLANE_REDIS_DB}"


def redis_target() -> RedisTarget:
    """``RECPLANE_TEST_REDIS_URL``'s (or the local default's) host and port, pinged once."""
    parsed = urlparse(os.environ.get("RECPLANE_TEST_REDIS_URL") or "redis://127.0.0.1:6379")
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    try:
        import redis

        redis.Redis(host=host, port=port, socket_connect_timeout=2).ping()
    except Exception as exc:  # no client library or no server: the Redis rows say so
        return RedisTarget(host, port, f"no Redis at {host}:{port} ({type(exc).__name__}: {exc})")
    return RedisTarget(host, port, None)


def child_env() -> dict[str, str]:
    """The caller's environment without ``RECPLANE_*`` settings (a ``RECPLANE_URL`` would make the embedded
    client remote), so only what a step passes explicitly configures it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RECPLANE_") or k.startswith("RECPLANE_TEST_")}


def spawn(task: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One recplane step in a fresh process; its result, or why there is none."""
    result_path = Path(tempfile.mkstemp(suffix=".json", dir=task["scratch"])[1])
    script = HERE / "recplane_steps.py"
    try:
        done = subprocess.run(
            [sys.executable, str(script), json.dumps(task, default=str), str(result_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            env=child_env(),
            check=False,
        )
        text = result_path.read_text()
        result: dict[str, Any] = json.loads(text) if text else {"status": "error", "error": done.stderr[-3000:]}
    except subprocess.TimeoutExpired:
        result = {"status": "timeout", "error": f"no result within {timeout:.0f} s"}
    finally:
        result_path.unlink(missing_ok=True)
    return result


def log(message: str) -> None:
    print(f"[bench features] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ recplane


class RecplaneSide:
    """Runs recplane's steps (setup, training sets, materializations, lookups SDK and HTTP) and checks values."""

    def __init__(self, plan: Plan, meta: dict[str, Any], scratch: Path, redis: RedisTarget) -> None:
        self.plan, self.meta, self.scratch, self.redis = plan, meta, scratch, redis
        self.base: dict[str, Any] = {
            "data": str(plan.data_dir),
            "meta": meta,
            "home": str(scratch / "home"),
            "scratch": str(scratch),
        }

    def step(self, step: str, **extra: Any) -> dict[str, Any]:
        results = [spawn({**self.base, "step": step, **extra}, self.plan.step_timeout) for _ in range(self.runs(step))]
        result = dict(results[-1])
        ok = [r for r in results if r["status"] == "ok"]
        if len(ok) == len(results) and "seconds" in result and "peak_rss_mb" in result:
            result["seconds"] = sorted(r["seconds"] for r in ok)[len(ok) // 2]
            result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
        log(
            f"recplane {step} {extra.get('rows') or extra.get('online_store') or extra.get('url') or ''}: "
            f"{result['status']} {result.get('seconds', '')}"
        )
        return result

    def runs(self, step: str) -> int:
        return self.plan.runs if step in ("train", "materialize") else 1

    def run_all(self) -> dict[str, Any]:
        out: dict[str, Any] = {"setup": self.step("setup")}
        if out["setup"]["status"] != "ok":
            return out
        out["train"] = self.training_sets()
        out["embedded"] = self.online("embedded")
        out["http"] = self.http(out["embedded"])
        out["redis"] = (
            {"unavailable": self.redis.unavailable} if self.redis.unavailable else self.online(self.redis.recplane_url)
        )
        return out

    def training_sets(self) -> dict[int, dict[str, Any]]:
        import pandas as pd

        reference = load_sibling("reference")
        expected = reference.reference_for(self.plan.data_dir, max(self.plan.label_rows))
        features = [c for v in reference.load_views(self.plan.data_dir) for c in v.columns]
        results = {}
        for rows in self.plan.label_rows:
            out = self.scratch / f"recplane_{rows}.parquet"
            result = self.step("train", rows=rows, out=str(out))
            if result["status"] == "ok":
                result["correctness"] = reference.compare(expected.iloc[:rows], pd.read_parquet(out), features)
            results[rows] = result
        return results

    def online(self, store: str) -> dict[str, Any]:
        materialized = self.step("materialize", online_store=store)
        if materialized["status"] != "ok":
            return {"materialize": materialized}
        lookup = self.step("lookup", online_store=store, now=materialized["end"], **LATENCY)
        return {"materialize": materialized, "lookup": lookup}

    def http(self, embedded: dict[str, Any]) -> dict[str, Any]:
        """The embedded store's lookups through ``recplane server`` (a subprocess) and the remote client."""
        if "lookup" not in embedded:
            return {"status": "error", "error": "embedded materialization failed"}
        server = start_server(Path(self.base["home"]), self.scratch)
        try:
            return self.step(
                "lookup",
                url=server.url,
                token=team_token(Path(self.base["home"])),
                now=embedded["materialize"]["end"],
                check=True,
                **LATENCY,
            )
        finally:
            server.stop()


LATENCY = {"warmup": 200, "rounds": 5, "single": 1000, "batches": 100}
"""The Feast peer's latency protocol (its defaults, quick or not): warm-up, then rounds of lookups."""


class Server(NamedTuple):
    """A running ``recplane server`` subprocess."""

    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(home: Path, scratch: Path, timeout: float = 60.0) -> Server:
    """``python -m recplane --home H server --port P`` (not ``--dev``: requests need a token), ready on /readyz."""
    import httpx

    port = free_port()
    log_file = (scratch / "server.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "recplane", "--home", str(home), "server", "--port", str(port)],
        env={**child_env(), "RECPLANE_LOG_LEVEL": "warning"},
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"recplane server exited with {process.returncode}; see {log_file.name}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise TimeoutError(f"recplane server not ready within {timeout:.0f} s; see {log_file.name}")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def team_token(home: Path) -> str:
    """An API token of the team that owns the feature datasets (the HTTP route checks it)."""
    from recplane.auth import create_token
    from recplane.catalog import Catalog
    from recplane.config import Settings

    catalog = Catalog(Settings(home=home).catalog_url)
    try:
        secret = create_token(catalog, TEAM).secret
    finally:
        catalog.close()
    assert secret is not None
    return secret


# ------------------------------------------------------------------------------------------------ Feast


def run_feast(plan: Plan, scratch: Path, redis: RedisTarget) -> dict[str, Any]:
    """The Feast peer's JSON document for the same data and sizes, or ``{"unavailable": why}``."""
    if not FEAST_PYTHON.exists():
        return {
            "unavailable": f"Feast venv missing ({FEAST_PYTHON.relative_to(REPO)}): "
            "run `bash benchmarks/peers/feast/setup.sh`"
        }
    out = scratch / "feast.json"
    args = [
        str(FEAST_PYTHON),
        str(FEAST_DIR / "run_feast.py"),
        "--data",
        str(plan.data_dir),
        "--json",
        str(out),
        "--scale",
        f"{plan.scale:g}",
        "--label-rows",
        ",".join(map(str, plan.label_rows)),
        "--runs",
        str(plan.runs),
        "--threads",
        str(os.cpu_count() or 1),
        "--out-dir",
        str(scratch / "feast_out"),
        "--online",
        "sqlite" if redis.unavailable else "sqlite,redis",
        "--redis",
        f"{redis.host}:{redis.port}",
        "--redis-db",
        str(FEAST_REDIS_DB),
        "--timeout",
        str(plan.step_timeout),
        "--no-check",
    ]
    log("Feast peer: " + " ".join(args[1:]))
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=plan.feast_timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"unavailable": f"Feast peer gave no result within {plan.feast_timeout:.0f} s"}
    if not out.exists():
        return {"unavailable": f"Feast peer failed (exit {done.returncode}): {done.stderr[-1500:]}"}
    document: dict[str, Any] = json.loads(out.read_text())
    check_feast_training_sets(document, plan)
    return document


def check_feast_training_sets(document: dict[str, Any], plan: Plan) -> None:
    """Feast's training sets checked here, by the same reference and ``compare`` as recplane's.

    The peer runs with ``--no-check``: its own check loads the reference into its parent process before the
    training steps start, and a child's ``ru_maxrss`` (what the peer reports) inherits the parent's high-water
    mark, which would put a floor of about 1 GB under every Feast step's peak RSS."""
    import pandas as pd

    reference = load_sibling("reference")
    expected = reference.reference_for(plan.data_dir, max(plan.label_rows))
    features = [c for v in reference.load_views(plan.data_dir) for c in v.columns]
    for entry in document.get("training_set", []):
        output = Path(entry.get("output", ""))
        if entry.get("runs", [{}])[-1].get("status") == "ok" and output.is_file():
            entry["correctness"] = reference.compare(
                expected.iloc[: entry["label_rows"]], pd.read_parquet(output), features
            )


def feast_entry(feast: dict[str, Any], section: str, **match: Any) -> dict[str, Any]:
    """One entry of the Feast document (e.g. the DuckDB training set of 100k labels), or why there is none."""
    if "unavailable" in feast:
        return {"unavailable": feast["unavailable"]}
    for entry in feast.get(section, []):
        if all(entry.get(k) == v for k, v in match.items()):
            runs = entry.get("runs", [entry])
            if runs[-1].get("status") != "ok":
                return {"unavailable": f"Feast step failed: {str(runs[-1].get('error', ''))[-600:]}"}
            return dict(entry)
    return {"unavailable": f"Feast did not run {section} {match}"}


def feast_label(feast: dict[str, Any], what: str) -> str:
    version = feast.get("versions", {}).get("feast", "0.67")
    return f"feast {version} {what}"


# ------------------------------------------------------------------------------------------------ rows


class Rows:
    """Turns both sides' results into the suite's rows (ratio = Feast / recplane: > 1 means recplane wins)."""

    def __init__(
        self,
        emit: Emit,
        plan: Plan,
        meta: dict[str, Any],
        ours: dict[str, Any],
        feast: dict[str, Any],
        redis: RedisTarget,
    ) -> None:
        self.emit, self.plan, self.meta, self.ours, self.feast, self.redis = emit, plan, meta, ours, feast, redis

    def emit_all(self) -> None:
        if self.ours["setup"]["status"] != "ok":
            self.error_row("setup", self.ours["setup"])
            return
        for rows in self.plan.label_rows:
            for offline, target in (("duckdb", 3.0), ("file", 10.0)):
                self.training_row(rows, offline, target)
        for ours_key, feast_store in (("embedded", "sqlite"), ("redis", "redis")):
            self.online_rows(ours_key, feast_store)
        self.http_rows()

    def row(
        self, case: str, value: float | None, unit: str, baseline: str, baseline_value: float | None, **extra: Any
    ) -> None:
        ratio = baseline_value / value if value and baseline_value else None
        target, also_meets = extra.get("target"), extra.pop("also_meets", True)
        if target is not None:
            extra["meets_target"] = ratio is not None and ratio >= target and also_meets
        self.emit(
            {
                "case": case,
                "value": _round(value),
                "unit": unit,
                "baseline": baseline,
                "baseline_value": _round(baseline_value),
                "ratio": _round(ratio, 2),
                "runs": self.plan.runs,
                **extra,
            }
        )

    def error_row(self, case: str, result: dict[str, Any]) -> None:
        self.emit(
            {
                "case": case,
                "value": None,
                "unit": "",
                "baseline": "",
                "baseline_value": None,
                "ratio": None,
                "runs": self.plan.runs,
                "correct": False,
                "error": str(result.get("error", result))[-2000:],
            }
        )

    def training_row(self, rows: int, offline: str, target: float) -> None:
        case = f"training_set_{_size(rows)}_vs_feast_{offline}"
        ours = self.ours["train"][rows]
        if ours["status"] != "ok":
            self.error_row(case, ours)
            return
        peer = feast_entry(self.feast, "training_set", offline_store=offline, label_rows=rows)
        mine = ours["correctness"]
        extra: dict[str, Any] = {
            "label_rows": rows,
            "peak_rss_mb": _round(ours["peak_rss_mb"]),
            "rows_returned": ours["rows_returned"],
            "rows_missing": mine["rows_missing"],
            "rows_with_wrong_value": mine["rows_with_any_mismatch"],
            "value_mismatches": mine["value_mismatches"],
            "correct": bool(mine["identical"]),
            "ingest_seconds": _round(self.ours["setup"]["ingest_seconds"]),
            "target": target,
        }
        if "unavailable" in peer:
            self.row(case, ours["seconds"], "s", f"unavailable: {peer['unavailable']}", None, **extra)
            return
        theirs = peer.get("correctness", {})
        extra.update(
            {
                "baseline_peak_rss_mb": _round(peer["peak_rss_mb"]),
                "baseline_rows_returned": peer["rows_returned"],
                "baseline_rows_missing": theirs.get("rows_missing"),
                "baseline_rows_with_wrong_value": theirs.get("rows_with_any_mismatch"),
                "baseline_value_mismatches": theirs.get("value_mismatches"),
                "baseline_correct": theirs.get("identical"),
            }
        )
        label = feast_label(self.feast, f"{'DuckDB' if offline == 'duckdb' else 'file (Dask)'} offline store")
        self.row(case, ours["seconds"], "s", label, peer["seconds"], **extra)

    def online_rows(self, ours_key: str, feast_store: str) -> None:
        ours = self.ours.get(ours_key, {})
        peer_mat = feast_entry(self.feast, "materialization", online_store=feast_store)
        peer_look = feast_entry(self.feast, "online_lookup", online_store=feast_store)
        suffix = f"{ours_key}_vs_feast_{feast_store}"
        if "unavailable" in ours:
            for kind in ("materialize", "online_single", "online_batch100"):
                self.emit(
                    {
                        "case": f"{kind}_{suffix}",
                        "value": None,
                        "unit": "",
                        "baseline": "",
                        "baseline_value": None,
                        "ratio": None,
                        "runs": self.plan.runs,
                        "skipped": f"unavailable: {ours['unavailable']}",
                    }
                )
            return
        materialized = ours["materialize"]
        if materialized["status"] != "ok":
            self.error_row(f"materialize_{suffix}", materialized)
            return
        check = materialized["value_check"]
        extra: dict[str, Any] = {
            "source_rows": materialized["source_rows"],
            "online_rows_written": materialized["rows_written"],
            "peak_rss_mb": _round(materialized["peak_rss_mb"]),
            "entities_checked": check["entities"],
            "value_mismatches": check["value_mismatches"],
            "correct": bool(check["identical"]),
            "target": 5.0,
        }
        store_name = "SQLite" if feast_store == "sqlite" else "Redis"
        if "unavailable" in peer_mat:
            self.row(
                f"materialize_{suffix}",
                materialized["seconds"],
                "s",
                f"unavailable: {peer_mat['unavailable']}",
                None,
                **extra,
            )
        else:
            if "unavailable" not in peer_look:
                vc = peer_look.get("value_check", {})
                extra["baseline_entities_checked"] = vc.get("rows_expected")
                extra["baseline_value_mismatches"] = vc.get("value_mismatches")
            extra["baseline_peak_rss_mb"] = _round(peer_mat["peak_rss_mb"])
            extra["baseline_source_rows"] = peer_mat["source_rows"]
            self.row(
                f"materialize_{suffix}",
                materialized["seconds"],
                "s",
                feast_label(self.feast, f"materialize -> {store_name} online store (DuckDB offline)"),
                peer_mat["seconds"],
                **extra,
            )
        lookup = ours.get("lookup", {"status": "error", "error": "no lookup"})
        self.latency_rows(
            suffix,
            lookup,
            peer_look,
            f"get_online_features, {store_name} online store",
            correct=bool(check["identical"]),
            embedded=ours_key == "embedded",
        )

    def latency_rows(
        self,
        suffix: str,
        lookup: dict[str, Any],
        peer: dict[str, Any],
        what: str,
        correct: bool,
        embedded: bool,
        target: float | None = 5.0,
        note: str | None = None,
    ) -> None:
        for kind, key in (("online_single", "single"), ("online_batch100", "batch_100")):
            case = f"{kind}_{suffix}"
            if lookup["status"] != "ok":
                self.error_row(case, lookup)
                continue
            mine = lookup[key]
            extra: dict[str, Any] = {
                "p50_ms": _round(mine["p50_ms"]),
                "p99_ms": _round(mine["p99_ms"]),
                "correct": correct,
                "peak_rss_mb": _round(lookup["peak_rss_mb"]),
            }
            if target is not None:
                extra["target"] = target
            if embedded and key == "single":
                extra["target_p99_ms"] = 0.25
                extra["also_meets"] = mine["p99_ms"] <= 0.25
            if note:
                extra["note"] = note
            if "unavailable" in peer:
                self.row(case, mine["p99_ms"], "ms p99", f"unavailable: {peer['unavailable']}", None, **extra)
                continue
            extra["baseline_p50_ms"] = _round(peer[key]["p50_ms"])
            extra["baseline_p99_ms"] = _round(peer[key]["p99_ms"])
            self.row(case, mine["p99_ms"], "ms p99", feast_label(self.feast, what), peer[key]["p99_ms"], **extra)

    def http_rows(self) -> None:
        lookup = self.ours.get("http", {"status": "error", "error": "not run"})
        check = lookup.get("value_check") or {}
        peer = feast_entry(self.feast, "online_lookup", online_store="sqlite")
        self.latency_rows(
            "http",
            lookup,
            peer,
            "get_online_features in process, SQLite online store",
            correct=bool(check.get("identical")),
            embedded=False,
            target=None,
            note="recplane over HTTP (Client(url, token) -> recplane server, embedded store) vs Feast in process: "
            "orientation only, no target",
        )


def _size(rows: int) -> str:
    return f"{rows // 1_000_000}m" if rows % 1_000_000 == 0 else f"{rows // 1000}k"


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    return round(value, digits) if abs(value) >= 1 else float(f"{value:.{digits}g}")


if __name__ == "__main__":
    quick_run = "--quick" in sys.argv
    run(lambda row: print(json.dumps(row), flush=True), quick=quick_run)
