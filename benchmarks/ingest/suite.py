"""Ingestion benchmark: recplane against writing Delta directly, side by side in the same run.

Cases (``recplane bench ingest [--quick] [--json] [--runs N]``):

* ``bulk_parquet`` — a folder of synthetic Parquet events (10M; quick 200k) into a fresh table:
  ``deltalake.write_deltalake`` fed by a ``pyarrow.dataset`` reader, against ``client.ingest(name, folder)``
  on an embedded ``Client`` (only the ingest call is timed; ``create_dataset`` is not). Each write runs in its
  own process, so its peak RSS is its own.
* ``http_batches_100`` — a real ``recplane server --dev`` and a separate load-generator process with 8
  concurrent clients posting 100-event JSON requests for 30 s (quick 3 s); the baseline is the same load
  against the same server with group commit off (one Delta commit per request).
* ``durable_single_row_1_client`` / ``_8_clients`` — 1-row requests, each acknowledged only after its commit,
  for 10 s (quick 2 s); the baseline is ``write_deltalake`` of one row per call, in process.

Correctness comes before speed: every case checks that the written table holds exactly the rows that were
sent or acknowledged (row count and exact checksums); a row with ``"correct": false`` is a bug, not a
result. Data lives under ``.bench/ingest/`` (git-ignored): the synthetic Parquet is generated once per spec
and kept; every run writes to a fresh folder that is deleted afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
CACHE = HERE.parents[1] / ".bench" / "ingest"
MACHINE_NOTE = "2 cores shared by the server and the load generator (separate processes)"

Emit = Callable[[dict[str, Any]], None]


def _sibling(name: str) -> ModuleType:
    """Import a helper module that sits next to this file (the suite is loaded by path, not as a package)."""
    qualified = f"recplane_bench_ingest_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, HERE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


checksums = _sibling("table_checksum")
servers = _sibling("server_process")
specs = _sibling("event_spec")


class Plan(NamedTuple):
    """Sizes and durations of one suite run (a NamedTuple: the CLI loads this file without registering it
    in sys.modules, which dataclasses need)."""

    bulk_events: int
    bulk_chunk_rows: int
    http_seconds: float
    single_row_seconds: float
    warmup_seconds: float
    runs: int

    @classmethod
    def of(cls, quick: bool, runs: int | None) -> Plan:
        if quick:
            return cls(200_000, 100_000, 3.0, 2.0, 0.5, runs or 1)
        return cls(10_000_000, 1_000_000, 30.0, 10.0, 2.0, runs or 3)


def run(emit: Emit, quick: bool = False, runs: int | None = None) -> None:
    """Run every case and emit one row per case (an ``error`` row when a case could not run)."""
    plan = Plan.of(quick, runs)
    CACHE.mkdir(parents=True, exist_ok=True)
    for name, case in (("bulk_parquet", bulk_case), ("http_batches_100", http_case),
                       ("durable_single_row", single_row_case)):
        load_before = os.getloadavg()[0]

        def emit_with_load(row: dict[str, Any], before: float = load_before) -> None:
            # The machine has neighbours. The 1-minute load average counts this suite's own processes too
            # (about 1-2 while a server and a load generator run); well above that, others shared the cores.
            emit({**row, "load_avg_1m": [round(before, 2), round(os.getloadavg()[0], 2)]})

        try:
            case(emit_with_load, plan)
        except Exception as exc:  # a broken case must show up as a row, not end the suite
            emit_with_load({"case": name, "value": None, "unit": "", "baseline": "", "baseline_value": None,
                  "ratio": None, "runs": plan.runs, "correct": False, "error": f"{type(exc).__name__}: {exc}"})


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh folder under .bench/ingest/work, deleted afterwards."""
    (CACHE / "work").mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=CACHE / "work"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def ratio(baseline: float | None, ours: float | None, *, higher_is_better: bool) -> float | None:
    """Times better than the baseline (>1 means recplane wins)."""
    if not baseline or not ours:
        return None
    return round(ours / baseline if higher_is_better else baseline / ours, 3)


def run_script(script: str, args: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run a helper script of this folder in a fresh interpreter; its last stdout line is JSON."""
    command = [sys.executable, str(HERE / script), *args]
    done = subprocess.run(command, cwd=cwd, env=servers.clean_environment(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def package_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def synthetic_events(events: int, chunk_rows: int) -> tuple[Path, Any]:
    """The cached folder of event Parquet files for this size (generated on first use) and its checksum."""
    import pyarrow.dataset as pads

    from recplane.samples import SyntheticSpec, generate_synthetic

    spec = SyntheticSpec(users=100_000, items=50_000, events=events, seed=42, chunk_rows=chunk_rows)
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:10]
    folder = CACHE / f"synthetic-{events}-{digest}"
    events_dir, marker = folder / "events", folder / "checksum.json"
    if not marker.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        files = generate_synthetic(spec, folder / "generated")
        events_dir.mkdir()
        for path in files.events:  # only the events are ingested; items/users stay out of the folder
            path.rename(events_dir / path.name)
        shutil.rmtree(folder / "generated")
        expected = checksums.checksum_of_dataset(pads.dataset(events_dir, format="parquet"))
        marker.write_text(json.dumps(expected.to_dict()))
    return events_dir, checksums.EventChecksum(**json.loads(marker.read_text()))


def bulk_once(mode: str, source: Path, expected: Any, timeout: float) -> dict[str, Any]:
    """One write in a fresh process and folder; adds ``correct`` and ``mismatch``."""
    with scratch(f"bulk-{mode}-") as folder:
        outcome = run_script("bulk_writer.py", [mode, str(source), str(folder / "target")], folder, timeout)
    got = checksums.EventChecksum(**outcome["checksum"])
    outcome["mismatch"] = got.differences(expected)
    outcome["correct"] = not outcome["mismatch"] and outcome.get("rejected", 0) == 0
    return outcome


def bulk_case(emit: Emit, plan: Plan) -> None:
    source, expected = synthetic_events(plan.bulk_events, plan.bulk_chunk_rows)
    timeout = 600.0 + plan.bulk_events / 10_000
    for mode in ("direct", "recplane"):  # warm-up: page cache, interpreter and library caches on disk
        bulk_once(mode, source, expected, timeout)
    direct: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    for index in range(plan.runs):
        order = ("direct", "recplane") if index % 2 == 0 else ("recplane", "direct")
        for mode in order:
            (direct if mode == "direct" else ours).append(bulk_once(mode, source, expected, timeout))
    correct = all(o["correct"] for o in direct + ours)
    direct_s = median([o["seconds"] for o in direct])
    ours_s = median([o["seconds"] for o in ours])
    assert direct_s is not None and ours_s is not None
    events_per_s = expected.rows / ours_s
    time_ratio = ratio(direct_s, ours_s, higher_is_better=False)
    emit({
        "case": "bulk_parquet",
        "value": round(events_per_s),
        "unit": "events/s",
        "baseline": f"deltalake {package_version('deltalake')} write_deltalake(pyarrow.dataset reader)",
        "baseline_value": round(expected.rows / direct_s),
        "ratio": time_ratio,
        "runs": plan.runs,
        "rows": expected.rows,
        "files_in": len(list(source.glob("*.parquet"))),
        "seconds": round(ours_s, 3),
        "baseline_seconds": round(direct_s, 3),
        "seconds_per_run": [round(o["seconds"], 3) for o in ours],
        "baseline_seconds_per_run": [round(o["seconds"], 3) for o in direct],
        "cpu_s": rounded(median([o["cpu_seconds"] for o in ours]), 2),
        "baseline_cpu_s": rounded(median([o["cpu_seconds"] for o in direct]), 2),
        "peak_rss_mb": _mib(median([o["peak_rss_bytes"] for o in ours])),
        "baseline_peak_rss_mb": _mib(median([o["peak_rss_bytes"] for o in direct])),
        "files_out": ours[0]["files"],
        "baseline_files_out": direct[0]["files"],
        "commit_version": ours[0].get("version"),
        "create_dataset_s": rounded(median([o["create_dataset_seconds"] for o in ours]), 3),
        "timed": "client.ingest(name, folder) only; create_dataset and close are not timed. Each write in a "
                 "fresh process (peak RSS = that process's ru_maxrss, reading the table back excluded).",
        "target": "time ratio >= 0.83 (recplane <= 1.2x direct) and >= 1M events/s",
        "meets_target": bool(time_ratio and time_ratio >= 0.83 and events_per_s >= 1_000_000),
        "correct": correct,
        "mismatch": [m for o in direct + ours for m in o["mismatch"]][:5],
    })


ONE_COMMIT_PER_REQUEST = {"RECPLANE_GROUP_COMMIT_MAX_WAIT_MS": "0", "RECPLANE_GROUP_COMMIT_MAX_ROWS": "100"}
# Raw keep-alive HTTP/1.1 on asyncio: same requests, keys and retries as the httpx clients, at ≈1/7 of their
# CPU (0.02 instead of 0.15 cores at ~200 requests/s), which on 2 shared cores the server gets instead.
# ``load_generator.py --client threads`` reproduces the numbers recorded before 2026-11-23 evening.
LOAD_CLIENT = "raw"


def group_commit_defaults() -> str:
    from recplane.config import Settings

    fields = Settings.model_fields
    return (f"group commit max_wait {fields['group_commit_max_wait_ms'].default} ms, "
            f"max_rows {fields['group_commit_max_rows'].default}")


def verify_acknowledged(location: str, load: dict[str, Any]) -> list[str]:
    """Mismatches between the table and what the load generator saw acknowledged (empty when exact)."""
    got = checksums.checksum_of_delta(location)
    problems = []
    for key, have in (("rows", got.rows), ("user_id_sum", got.user_id_sum), ("item_id_sum", got.item_id_sum)):
        want = load["total_rows"] if key == "rows" else load[key]
        if have != want:
            problems.append(f"{key}: table {have} != acknowledged {want}")
    if load["errors"]:
        problems.append(f"{load['errors']} requests failed: {load['error_samples'][:2]}")
    if load["rejected"]:
        problems.append(f"{load['rejected']} rows rejected")
    return problems


def generate_load(server: Any, args: list[str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run the load generator; also measure the server's CPU use while the load runs."""
    command = [sys.executable, str(HERE / "load_generator.py"), *args]
    with subprocess.Popen(command, cwd=cwd, env=servers.clean_environment(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()  # {"event": "started"}: request bodies are built, senders start now
        cpu_before, started = server.cpu_seconds(), time.perf_counter()
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        load_seconds = time.perf_counter() - started
        cpu_used = server.cpu_seconds() - cpu_before
    if process.returncode != 0:
        raise RuntimeError(f"load_generator.py failed ({process.returncode}): {err.strip()[-2000:]}")
    load = dict(json.loads(out.strip().splitlines()[-1]))
    load["server_cpu_cores"] = cpu_used / load_seconds
    load["server_peak_rss_bytes"] = server.peak_rss_bytes()
    return load


def load_once(env: dict[str, str], name: str, *, clients: int, rows: int, seconds: float,
              warmup: float) -> dict[str, Any]:
    """Fresh home and server, one dataset, one load-generator process; adds ``correct`` and ``mismatch``."""
    with scratch("http-") as folder:
        home = folder / "home"
        with servers.recplane_server(home, env) as server:
            location = server.create_dataset(specs.events_spec(name))["location"]
            load = generate_load(server, [server.url, name, "--clients", str(clients), "--rows", str(rows),
                                          "--seconds", str(seconds), "--warmup", str(warmup),
                                          "--client", LOAD_CLIENT], folder, timeout=seconds + warmup + 300)
        from deltalake import DeltaTable

        load["table_version"] = DeltaTable(location).version()
        load["mismatch"] = verify_acknowledged(location, load)
    load["correct"] = not load["mismatch"]
    return load


def http_case(emit: Emit, plan: Plan) -> None:
    configs = {"group": {}, "per_request": ONE_COMMIT_PER_REQUEST}
    results: dict[str, list[dict[str, Any]]] = {"group": [], "per_request": []}
    for index in range(plan.runs):
        order = ("per_request", "group") if index % 2 == 0 else ("group", "per_request")
        for config in order:
            results[config].append(load_once(configs[config], "bench_events", clients=8, rows=100,
                                             seconds=plan.http_seconds, warmup=plan.warmup_seconds))
    ours, base = results["group"], results["per_request"]
    value = median([r["rows_per_s"] for r in ours])
    p99 = median([r["p99_ms"] for r in ours])
    emit({
        "case": "http_batches_100",
        "value": rounded(value, 0),
        "unit": "events/s acknowledged",
        "baseline": "same server, group commit off (one commit per request)",
        "baseline_value": rounded(median([r["rows_per_s"] for r in base]), 0),
        "ratio": ratio(median([r["rows_per_s"] for r in base]), value, higher_is_better=True),
        "runs": plan.runs,
        "p50_ms": rounded(median([r["p50_ms"] for r in ours])),
        "p99_ms": rounded(p99),
        "baseline_p50_ms": rounded(median([r["p50_ms"] for r in base])),
        "baseline_p99_ms": rounded(median([r["p99_ms"] for r in base])),
        "requests_per_s": rounded(median([r["requests_per_s"] for r in ours])),
        "retries_429": sum(r["retries_429"] for r in ours),
        "baseline_retries_429": sum(r["retries_429"] for r in base),
        "delta_versions": ours[0]["table_version"],
        "baseline_delta_versions": base[0]["table_version"],
        "server_peak_rss_mb": _mib(median([r["server_peak_rss_bytes"] for r in ours])),
        "server_cpu_cores": rounded(median([r["server_cpu_cores"] for r in ours]), 2),
        "loadgen_cpu_cores": rounded(median([r["cpu_cores"] for r in ours]), 2),
        "baseline_server_cpu_cores": rounded(median([r["server_cpu_cores"] for r in base]), 2),
        "clients": 8,
        "rows_per_request": 100,
        "seconds": plan.http_seconds,
        "load_client": "raw asyncio HTTP/1.1, one keep-alive connection per sender, separate process",
        "config": group_commit_defaults(),
        "target": ">= 50k events/s acknowledged with p99 <= 250 ms",
        "meets_target": bool(value and p99 and value >= 50_000 and p99 <= 250),
        "note": MACHINE_NOTE,
        "correct": all(r["correct"] for r in ours + base),
        "mismatch": [m for r in ours + base for m in r["mismatch"]][:5],
    })


def _mib(value: float | None) -> int | None:
    return None if value is None else round(value / (1024 * 1024))


def single_rows(count: int) -> list[dict[str, Any]]:
    """Synthetic events as Python dicts (what a caller appending one row at a time holds)."""
    import pyarrow as pa

    from recplane.samples import SyntheticSpec, iter_synthetic_batches

    spec = SyntheticSpec(users=50_000, items=20_000, events=count, seed=3, chunk_rows=count)
    return list(pa.Table.from_batches(list(iter_synthetic_batches(spec))).to_pylist())


def direct_appends(clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """``clients`` threads each appending one row per write_deltalake call to one table, in process."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    rows = single_rows(20_000)
    schema = pa.Table.from_pylist(rows[:1]).schema
    lat: list[list[float]] = [[] for _ in range(clients)]
    sums = [[0, 0, 0, 0] for _ in range(clients)]  # rows in window, total rows, user_id sum, item_id sum
    errors: list[str] = []
    with scratch("direct-") as folder:
        uri = str(folder / "table")
        write_deltalake(uri, schema.empty_table(), mode="error")
        now = time.perf_counter()
        start, end = now + warmup, now + warmup + seconds

        def writer(index: int) -> None:
            table, sequence = DeltaTable(uri), 0
            while time.perf_counter() < end:
                row = rows[(index + sequence * clients) % len(rows)]
                sequence += 1
                sent = time.perf_counter()
                try:
                    write_deltalake(table, pa.Table.from_pylist([row], schema=schema), mode="append")
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                acked = time.perf_counter()
                mine = sums[index]
                mine[0] += start <= acked <= end
                mine[1] += 1
                mine[2] += row["user_id"]
                mine[3] += row["item_id"]
                if sent >= start:
                    lat[index].append(acked - sent)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        got = checksums.checksum_of_delta(uri)
        version = DeltaTable(uri).version()
    total = [sum(s[k] for s in sums) for k in range(4)]
    latencies = sorted(x for per in lat for x in per)
    mismatch = [f"{key}: table {have} != acknowledged {want}" for key, have, want in (
        ("rows", got.rows, total[1]), ("user_id_sum", got.user_id_sum, total[2]),
        ("item_id_sum", got.item_id_sum, total[3])) if have != want]
    # A write that raised was not acknowledged; with concurrent writers delta-rs gives up after its default
    # 15 commit retries. That is the peer's behaviour, reported apart from correctness.
    return {"rows_per_s": total[0] / seconds, "p50_ms": _pct(latencies, 50), "p99_ms": _pct(latencies, 99),
            "table_version": version, "failed_writes": len(errors), "failure_samples": sorted(set(errors))[:2],
            "mismatch": mismatch, "correct": not mismatch}


def _pct(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    rank = min(len(ordered), max(1, -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1] * 1000


def single_row_case(emit: Emit, plan: Plan) -> None:
    for clients in (1, 8):
        ours: list[dict[str, Any]] = []
        base: list[dict[str, Any]] = []
        for index in range(plan.runs):
            for side in (("direct", "recplane") if index % 2 == 0 else ("recplane", "direct")):
                if side == "direct":
                    base.append(direct_appends(clients, plan.single_row_seconds, plan.warmup_seconds))
                else:
                    ours.append(load_once({}, "bench_single", clients=clients, rows=1,
                                          seconds=plan.single_row_seconds, warmup=plan.warmup_seconds))
        p99 = median([r["p99_ms"] for r in ours])
        base_p99 = median([r["p99_ms"] for r in base])
        label = "1_client" if clients == 1 else f"{clients}_clients"
        emit({
            "case": f"durable_single_row_{label}",
            "value": rounded(p99),
            "unit": "ms p99 ack latency",
            "baseline": "write_deltalake of one row per call, in process"
                        + ("" if clients == 1 else f" ({clients} threads, one table)"),
            "baseline_value": rounded(base_p99),
            "ratio": ratio(base_p99, p99, higher_is_better=False),
            "runs": plan.runs,
            "p50_ms": rounded(median([r["p50_ms"] for r in ours])),
            "rows_per_s": rounded(median([r["rows_per_s"] for r in ours])),
            "baseline_p50_ms": rounded(median([r["p50_ms"] for r in base])),
            "baseline_rows_per_s": rounded(median([r["rows_per_s"] for r in base])),
            "delta_versions": ours[0]["table_version"],
            "baseline_delta_versions": base[0]["table_version"],
            "server_cpu_cores": rounded(median([r["server_cpu_cores"] for r in ours]), 2),
            "loadgen_cpu_cores": rounded(median([r["cpu_cores"] for r in ours]), 2),
            "baseline_failed_writes": sum(r["failed_writes"] for r in base),
            "baseline_failure_samples": base[0]["failure_samples"],
            "clients": clients,
            "seconds": plan.single_row_seconds,
            "config": group_commit_defaults(),
            "load_client": "raw asyncio HTTP/1.1, separate process (recplane); baseline in the suite's process",
            "note": MACHINE_NOTE,
            "correct": all(r["correct"] for r in ours + base),
            "mismatch": [m for r in ours + base for m in r["mismatch"]][:5],
        })
