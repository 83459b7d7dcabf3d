"""Serving benchmark: ``recplane serve`` side by side with a FastAPI + PyTorch service and Ray Serve, same run.

``recplane bench serving [--quick] [--json] [--runs N]``. Cases (``prepare.py``, cached under ``.bench/serving/``):
ml-100k (1,682 items; a trained MF + DeepFM), and synthetic catalogs of 100k and 1M items (an MF dim 64 with seeded
latent-topic vectors + a seeded random DeepFM of the same shape); every deployment retrieves 200 candidates,
excludes seen items, ranks them with the DeepFM and returns k = 10, with the popularity fallback for unknown users.
``--quick``: ml-100k (2 epochs) and 100k items, concurrency 1 and 8, short runs: it proves the suite runs and that
every server answers correctly.

Servers (``servers.py``), each its own process tree on loopback, all of one case up at once and measured in turn:

* ``recplane`` — ``recplane serve deployment-exact.yaml --dev`` (exact inner-product search: the equal-work
  comparison) and, for catalogs above 50k items, an approximate index reported apart with its recall against the
  exact answer: ``deployment-auto.yaml`` (recplane's default choice above 50k items; rows name what it resolved
  to) at 100k items, ``deployment-ivf.yaml`` at 1M (see ``prepare.py``);
* peer (a) ``fastapi`` — ``peer_fastapi.py``, the obvious FastAPI + PyTorch service;
* peer (b) ``rayserve`` — Ray Serve 2.60 with ``@serve.batch`` in its own venv (``peers/rayserve/setup.sh``);
  when that venv is missing its rows say ``unavailable: ...``.

Before any timing, a seeded sample of users (plus unknown ones) is asked of every server and each answer compared
with ``reference.py``'s brute force (NumPy + onnxruntime over the same bundle files). Then, per run and per
concurrency (1, 8, 32), ``loadgen.py`` (its own process, closed loop, keep-alive, ~2% unknown users) warms up and
measures each server for a fixed duration; servers take turns within a run so drifting neighbour load hits all
alike. The median over runs is reported.

Rows (ratio > 1 means recplane wins):

* ``loadgen_ceiling_c{C}`` — the generator's own QPS against a fixed-answer server (how far it is from being the
  bottleneck);
* ``{case}_c{C}_vs_{peer}`` — recplane's QPS (``value``) against the peer's (``baseline_value``), with p50/p99 end
  to end for both, recplane's per-stage p50/p99 (its answers' ``timings_ms``; per batch), the peers' where they
  report them, CPU per request of each server, and the check results. Target: >= 3x the peer's QPS at equal or
  lower p99 (``meets_target``);
* ``{case}_c1_p99`` — recplane's end-to-end p99 at concurrency 1 (baseline: the faster peer's); the 1M-item case
  has the target p99 <= 15 ms;
* ``{case}_{auto|ivf}_c{C}_vs_{peer}`` — the same with the approximate index, and its ``recall_at_10`` (the
  served top 10 against the exact answer, end to end).

Every ``_vs_`` row carries ``index_calibration``: the index as ``prepare.py`` built it (kind, ``nprobe``/``nlist`` or
``ef_search``, and the recall@candidates its calibration measured on the users' vectors; 1 for exact).

The machine has 2 cores shared by the server under test, the idle other servers and the load generator (and,
here, by neighbours): rows carry the load average seen at each run; prefer the ratios to the absolute numbers.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BENCH_ROOT = REPO / ".bench" / "serving"
EXACT_MAX_ITEMS = 50_000  # recplane's index="auto" is exact up to here (serving/index.py)
Emit = Callable[[dict[str, Any]], None]
QPS_TARGET = 3.0
P99_TARGET_MS = 15.0
PEERS = ("fastapi", "rayserve")
PEER_LABELS = {
    "fastapi": "FastAPI 0.165 + PyTorch 2.13 (TorchScript), uvicorn 1 worker, one request at a time",
    "rayserve": "Ray Serve 2.60 + PyTorch 2.13 (TorchScript), 1 replica, @serve.batch(32, 2 ms)",
}


def ann_kind(meta: dict[str, Any]) -> str:
    """The approximate index kind a case deploys beside the exact one."""
    return str(meta["case"].get("ann", "auto"))


def ann_label(meta: dict[str, Any]) -> str:
    """The approximate index as served: ``auto (ivf)``, ``ivf`` ... (what ``auto`` means is recplane's choice)."""
    from recplane.serving.index import resolve_kind

    kind = ann_kind(meta)
    chosen = resolve_kind(kind, int(meta["num_items"]))
    return kind if chosen == kind else f"{kind} ({chosen})"


def _case(name: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "candidates": 200, "k": 10, **settings}


class Plan(NamedTuple):
    """Sizes of one run (a NamedTuple: the CLI loads this file without registering it in ``sys.modules``)."""

    quick: bool
    runs: int
    concurrencies: tuple[int, ...]
    warmup: float
    duration: float
    cases: tuple[dict[str, Any], ...]
    check_users: int

    @classmethod
    def of(cls, quick: bool, runs: int | None) -> Plan:
        synthetic = {"kind": "synthetic", "users": 10_000, "per_user": 20}
        cases: tuple[dict[str, Any], ...]
        if quick:
            cases = (
                _case("ml100k", kind="movielens", epochs=2),
                _case("items100k", items=100_000, seed=11, **synthetic),
            )
            return cls(True, runs or 1, (1, 8), 1.0, 3.0, cases, 40)
        cases = (
            _case("ml100k", kind="movielens", epochs=30),
            _case("items100k", items=100_000, seed=11, **synthetic),
            _case("items1m", items=1_000_000, seed=12, ann="ivf", **synthetic),
        )
        return cls(False, runs or 3, (1, 8, 32), 3.0, 10.0, cases, 200)

    @property
    def data_dir(self) -> Path:
        return BENCH_ROOT / ("quick" if self.quick else "full")


def load_sibling(name: str) -> Any:
    """A helper module next to this file, loaded by path and registered (its classes need ``sys.modules``)."""
    module_name = f"_serving_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def log(message: str) -> None:
    print(f"[bench serving] {message}", file=sys.stderr, flush=True)


def run(emit: Emit, quick: bool = False, runs: int | None = None) -> None:
    """Measure the generator's ceiling, then every case: prepare, check answers, load each server, emit rows."""
    plan = Plan.of(quick, runs)
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=BENCH_ROOT))
    try:
        Rows(emit, plan).ceiling(loadgen_ceiling(plan, scratch))
        for case in plan.cases:
            meta = prepare_case(case, plan)
            if "error" in meta:
                Rows(emit, plan).error(case["name"], meta["error"])
                continue
            Rows(emit, plan).case(meta, CaseRun(plan, meta, scratch).run())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def prepare_case(case: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """``prepare.py`` in a child process (cached); its ``meta.json``, or ``{"error": ...}``."""
    servers = load_sibling("servers")
    folder = plan.data_dir / case["name"]
    log(f"preparing {case['name']} in {folder}")
    done = subprocess.run(
        [sys.executable, str(HERE / "prepare.py"), json.dumps(case), str(folder)],
        capture_output=True,
        text=True,
        env=servers.child_env(),
        cwd=REPO,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        return {"error": f"prepare.py failed ({done.returncode}): {done.stderr[-3000:]}"}
    meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
    return meta


def loadgen_ceiling(plan: Plan, scratch: Path) -> dict[int, dict[str, Any]]:
    """The generator's QPS against the fixed-answer server, per concurrency (median over runs)."""
    servers, measure = load_sibling("servers"), load_sibling("measure")
    users = scratch / "ceiling-users.json"
    users.write_text(json.dumps(list(range(1, 1001))))
    trivial = servers.start_trivial(scratch)
    try:
        results = {}
        for concurrency in plan.concurrencies:
            runs = [
                measure.load_run(trivial, str(users), concurrency, plan.warmup, min(plan.duration, 5.0), run, scratch)
                for run in range(plan.runs)
            ]
            results[concurrency] = summarize(runs)
            log(f"generator ceiling c={concurrency}: {results[concurrency].get('qps')} QPS")
        return results
    finally:
        trivial.stop()


class CaseRun:
    """One case: start its servers, check their answers, load each in turn, stop them."""

    def __init__(self, plan: Plan, meta: dict[str, Any], scratch: Path) -> None:
        self.plan, self.meta, self.scratch = plan, meta, scratch
        self.servers: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.rss: dict[str, float] = {}
        self.loads: dict[str, dict[int, list[dict[str, Any]]]] = {}

    @property
    def large(self) -> bool:
        return int(self.meta["num_items"]) > EXACT_MAX_ITEMS

    def run(self) -> dict[str, Any]:
        try:
            self.start_all()
            self.check_all()
            self.load_all()
        finally:
            for name, server in self.servers.items():
                self.rss[name] = round(server.rss_mb(), 1)
                server.stop()
        return {"checks": self.checks, "loads": self.loads, "unavailable": self.unavailable, "rss_mb": self.rss}

    def start_all(self) -> None:
        servers = load_sibling("servers")
        meta, case = self.meta, self.meta["case"]
        retrieval, ranking = meta["retrieval"]["bundle"], meta["ranking"]["bundle"]
        first_user = json.loads(Path(meta["users"]).read_text())[0]
        starters: dict[str, Callable[[], Any]] = {
            "recplane": lambda: servers.start_recplane(meta["home"], meta["deployments"]["exact"], self.scratch),
            "fastapi": lambda: servers.start_fastapi(retrieval, ranking, case["candidates"], self.scratch),
        }
        if self.large:
            starters["recplane_ann"] = lambda: servers.start_recplane(
                meta["home"], meta["deployments"][ann_kind(meta)], self.scratch
            )
        why = servers.ray_unavailable()
        if why:
            self.unavailable["rayserve"] = why
        else:
            starters["rayserve"] = lambda: servers.start_rayserve(
                retrieval, ranking, case["candidates"], first_user, self.scratch
            )
        for name, start in starters.items():
            log(f"{case['name']}: starting {name}")
            try:
                self.servers[name] = start()
            except Exception as exc:  # a server that cannot start is a row that says why, not a crash
                self.unavailable[name] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
                log(f"{case['name']}: {name} unavailable: {self.unavailable[name][:300]}")

    def check_all(self) -> None:
        measure, reference = load_sibling("measure"), load_sibling("reference")
        meta, case = self.meta, self.meta["case"]
        exact = reference.Reference(meta["retrieval"]["bundle"], meta["ranking"]["bundle"], case["candidates"])
        users = measure.sample_users(json.loads(Path(meta["users"]).read_text()), self.plan.check_users, 5, seed=1)
        for name, server in self.servers.items():
            if name == "recplane_ann":
                self.checks[name] = measure.recall_against(server, exact, users, case["k"])
            else:
                self.checks[name] = measure.check_answers(server, exact, users, case["k"])
            log(f"{case['name']}: {name} check {self.checks[name]}")

    def load_all(self) -> None:
        measure = load_sibling("measure")
        for run in range(self.plan.runs):
            for concurrency in self.plan.concurrencies:
                for name, server in self.servers.items():
                    if not server.alive():
                        continue
                    result = measure.load_run(
                        server, self.meta["users"], concurrency, self.plan.warmup, self.plan.duration, run, self.scratch
                    )
                    self.loads.setdefault(name, {}).setdefault(concurrency, []).append(result)
                    log(
                        f"{self.meta['case']['name']} run {run} c={concurrency} {name}: {result.get('qps')} QPS, "
                        f"p99 {result.get('latency', {}).get('p99_ms')} ms, load {result.get('load_avg')}"
                        + (f" ERROR {result['error'][:300]}" if "error" in result else "")
                    )


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median QPS, p50 and p99 over runs (and of each stage's p50/p99), plus what every run shares."""
    good = [r for r in runs if "error" not in r and r.get("ok")]
    if not good:
        return {"error": next((r["error"] for r in runs if "error" in r), "no successful run")}
    out: dict[str, Any] = {
        "qps": _median([r["qps"] for r in good]),
        "p50_ms": _median([r["latency"]["p50_ms"] for r in good]),
        "p99_ms": _median([r["latency"]["p99_ms"] for r in good]),
        "requests": sum(r["requests"] for r in good),
        "non_200": sum(r["requests"] - r["ok"] for r in good),
        "transport_errors": sum(r["transport_error_count"] for r in good),
        "server_cpu_ms_per_request": _median([r["server_cpu_ms_per_request"] for r in good]),
        "load_avg": _median([r["load_avg"] for r in good]),
        "runs_ok": len(good),
        "qps_runs": [r["qps"] for r in good],
    }
    stages = sorted({stage for r in good for stage in r.get("stages", {})})
    out["stages"] = {
        stage: {
            key: _median([r["stages"][stage][key] for r in good if stage in r.get("stages", {})])
            for key in ("p50_ms", "p99_ms")
        }
        for stage in stages
    }
    return out


def _median(values: list[float]) -> float:
    return round(float(statistics.median(values)), 3)


class Rows:
    """Turns the measurements into the suite's rows (ratio > 1 means recplane wins)."""

    def __init__(self, emit: Emit, plan: Plan) -> None:
        self.emit, self.plan = emit, plan

    def row(
        self,
        case: str,
        value: float | None,
        unit: str,
        baseline: str,
        baseline_value: float | None,
        ratio: float | None,
        **extra: Any,
    ) -> None:
        self.emit(
            {
                "case": case,
                "value": value,
                "unit": unit,
                "baseline": baseline,
                "baseline_value": baseline_value,
                "ratio": None if ratio is None else round(ratio, 2),
                "runs": self.plan.runs,
                **extra,
            }
        )

    def error(self, case: str, message: str) -> None:
        self.row(case, None, "", "", None, None, correct=False, error=message[-3000:])

    def ceiling(self, results: dict[int, dict[str, Any]]) -> None:
        for concurrency, result in results.items():
            if "error" in result:
                self.error(f"loadgen_ceiling_c{concurrency}", result["error"])
                continue
            self.row(
                f"loadgen_ceiling_c{concurrency}",
                result["qps"],
                "QPS",
                "none: the generator's own ceiling",
                None,
                None,
                p50_ms=result["p50_ms"],
                p99_ms=result["p99_ms"],
                load_avg=result["load_avg"],
                note="closed loop against a fixed-answer asyncio server on the same 2 cores",
            )

    def case(self, meta: dict[str, Any], measured: dict[str, Any]) -> None:
        name = meta["case"]["name"]
        loads = {server: {c: summarize(runs) for c, runs in per.items()} for server, per in measured["loads"].items()}
        checks, unavailable = measured["checks"], measured["unavailable"]
        common = {
            "items": meta["num_items"],
            "users": meta["num_users"],
            "source": meta["source"],
            "weights": meta["weights"],
            "candidates": meta["case"]["candidates"],
            "k": meta["case"]["k"],
        }
        if "recplane" not in loads:
            self.error(name, unavailable.get("recplane", "recplane serve did not run"))
            return
        # The exact index (equal work with the peers) and, where built, the approximate one: same comparisons.
        variants = [("recplane", name, "exact", "exact")]
        if "recplane_ann" in loads:
            variants.append(("recplane_ann", f"{name}_{ann_kind(meta)}", ann_label(meta), ann_kind(meta)))
        for concurrency in self.plan.concurrencies:
            for ours_name, label, index, kind in variants:
                ours = loads[ours_name].get(concurrency, {"error": "not measured"})
                for peer in PEERS:
                    self.versus(
                        f"{label}_c{concurrency}_vs_{peer}",
                        ours,
                        checks.get(ours_name, {}),
                        peer,
                        loads.get(peer, {}).get(concurrency),
                        checks.get(peer, {}),
                        unavailable.get(peer),
                        measured["rss_mb"],
                        concurrency=concurrency,
                        index=index,
                        index_calibration=meta.get("indexes", {}).get(kind),
                        ours_name=ours_name,
                        **common,
                    )
        self.latency_target(name, loads, meta)

    def versus(
        self,
        case: str,
        ours: dict[str, Any],
        our_check: dict[str, Any],
        peer: str,
        theirs: dict[str, Any] | None,
        their_check: dict[str, Any],
        why: str | None,
        rss: dict[str, float],
        ours_name: str = "recplane",
        **extra: Any,
    ) -> None:
        if "error" in ours:
            self.error(case, ours["error"])
            return
        approximate = "recall_at_k" in our_check
        extra.update(
            p50_ms=ours["p50_ms"],
            p99_ms=ours["p99_ms"],
            stages=ours["stages"],
            server_cpu_ms_per_request=ours["server_cpu_ms_per_request"],
            peak_rss_mb=rss.get(ours_name),
            load_avg=ours["load_avg"],
            qps_runs=ours["qps_runs"],
            non_200=ours["non_200"],
            correct=our_check.get("identical", False) if not approximate else None,
            check=our_check,
            target=QPS_TARGET,
        )
        if approximate:
            extra["recall_at_10"] = our_check["recall_at_k"]
            extra["note"] = "approximate index: not the peers' (exact) work, so no target; see recall_at_10"
        if why or theirs is None or "error" in (theirs or {}):
            reason = why or (theirs or {}).get("error") or f"{peer} did not run"
            extra["meets_target"] = None
            self.row(case, ours["qps"], "QPS", f"unavailable: {reason}", None, None, **extra)
            return
        ratio = ours["qps"] / theirs["qps"] if theirs["qps"] else None
        extra.update(
            baseline_p50_ms=theirs["p50_ms"],
            baseline_p99_ms=theirs["p99_ms"],
            baseline_stages=theirs["stages"],
            baseline_server_cpu_ms_per_request=theirs["server_cpu_ms_per_request"],
            baseline_peak_rss_mb=rss.get(peer),
            baseline_qps_runs=theirs["qps_runs"],
            baseline_non_200=theirs["non_200"],
            baseline_correct=their_check.get("identical"),
            baseline_check=their_check,
            p99_ratio=round(theirs["p99_ms"] / ours["p99_ms"], 2) if ours["p99_ms"] else None,
            meets_target=None
            if approximate
            else bool(ratio is not None and ratio >= QPS_TARGET and ours["p99_ms"] <= theirs["p99_ms"]),
        )
        self.row(case, ours["qps"], "QPS", PEER_LABELS[peer], theirs["qps"], ratio, **extra)

    def latency_target(self, name: str, loads: dict[str, Any], meta: dict[str, Any]) -> None:
        for ours_name, suffix in (("recplane", ""), ("recplane_ann", f"_{ann_kind(meta)}")):
            ours = loads.get(ours_name, {}).get(1)
            if ours is None:
                continue
            case = f"{name}{suffix}_c1_p99"
            if "error" in ours:
                self.error(case, ours["error"])
                continue
            peers = {p: loads[p][1] for p in PEERS if p in loads and 1 in loads[p] and "error" not in loads[p][1]}
            best = min(peers, key=lambda p: peers[p]["p99_ms"]) if peers else None
            extra: dict[str, Any] = {
                "p50_ms": ours["p50_ms"],
                "stages": ours["stages"],
                "items": meta["num_items"],
                "index": "exact" if not suffix else ann_label(meta),
                "load_avg": ours["load_avg"],
            }
            if meta["num_items"] >= 1_000_000:
                extra.update(target_p99_ms=P99_TARGET_MS, meets_target=ours["p99_ms"] <= P99_TARGET_MS)
            if best is None:
                self.row(case, ours["p99_ms"], "ms p99", "unavailable: no peer measured", None, None, **extra)
                continue
            theirs = peers[best]["p99_ms"]
            self.row(
                case,
                ours["p99_ms"],
                "ms p99",
                f"{PEER_LABELS[best]} (the faster peer at c=1)",
                theirs,
                theirs / ours["p99_ms"] if ours["p99_ms"] else None,
                **extra,
            )


if __name__ == "__main__":
    run(lambda row: print(json.dumps(row), flush=True), quick="--quick" in sys.argv)
