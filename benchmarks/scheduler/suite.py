"""Scheduler benchmark: admission throughput over 10k queued jobs of 20 teams, and its invariants.

``recplane bench scheduler [--quick] [--json]``. The workload (``workload.py``): 20 teams' queues in 4 cohorts with
nominal quotas that add up to a 400-CPU / 1.6 TB / 20-GPU cluster, half with borrowing limits; 10k jobs (quick: 1k)
with priorities, gangs of 1-4 and 1-4 rounds of run time. Cases:

* ``planner_drain`` — the pure admission planner, round after round until every job ran: decisions per second of
  planner time (a decision: one pending job admitted, or held with its reason), admissions per second, and the
  first round's latency with every job pending. Every round is checked: never over
  capacity, nominal + borrowing limit or a cohort's total; no job that fits its queue's idle nominal quota left
  waiting (reclaim); borrowing admissions in DRF order; every job admitted exactly once in the end.
* ``scheduler_catalog`` — the real :class:`~recplane.scheduler.Scheduler` on a SQLite catalog, its rounds' every
  read and write included, over a simulated backend (``simulated_backend.py``: attempts last their rounds,
  nothing is executed): submissions per second, decisions and admissions per second of round time, round
  p50/p99 — 30 rounds with ~10k jobs queued (quick: 300 jobs until all ran). Checked: capacity and quotas after
  every round, a ledger row per ended attempt, every history sane (and, drained, every job succeeded).
* ``local_job_overhead`` — real tiny jobs (``python -c pass``) through the local backend: seconds from submit
  to succeeded per job, one at a time (the per-job price of a process, its supervisor and two rounds).

No peer: Kueue and Volcano need a Kubernetes cluster, which this machine cannot run (``baseline`` says so).
"""

from __future__ import annotations

import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BENCH_ROOT = REPO / ".bench" / "scheduler"
NO_PEER = "unavailable: no peer (Kueue/Volcano need a Kubernetes cluster)"
Emit = Callable[[dict[str, Any]], None]


class Plan(NamedTuple):
    """Sizes of one run. ``catalog_rounds``: rounds of the catalog case (None: until every job ran)."""

    planner_jobs: int
    catalog_jobs: int
    catalog_rounds: int | None
    local_jobs: int
    runs: int

    @classmethod
    def of(cls, quick: bool, runs: int | None) -> Plan:
        if quick:
            return cls(1_000, 300, None, 2, runs or 1)
        return cls(10_000, 10_000, 30, 5, runs or 1)


def load_sibling(name: str) -> Any:
    """A helper module next to this file, loaded by path and registered."""
    module_name = f"_scheduler_bench_{name}"
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
    """Run every case and emit one row each."""
    plan = Plan.of(quick, runs)
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    emit(planner_drain(plan))
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=BENCH_ROOT))
    try:
        emit(scheduler_catalog(plan, scratch / "catalog"))
        emit(local_job_overhead(plan, scratch / "local"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _row(case: str, value: float, unit: str, runs: int, correct: bool, **extra: Any) -> dict[str, Any]:
    return {"case": case, "value": round(value, 3), "unit": unit, "baseline": NO_PEER, "baseline_value": None,
            "ratio": None, "runs": runs, "correct": correct, **extra}


def planner_drain(plan: Plan) -> dict[str, Any]:
    """The pure planner over the whole workload, invariants checked every round."""
    from recplane.scheduler.admission import ClusterSnapshot, plan_admission

    work = load_sibling("workload")
    queues = work.queues()
    capacity = {"local": work.CAPACITY}
    measured: list[tuple[float, float, int, int, list[str]]] = []
    every = {item.job.id: item for item in work.jobs(plan.planner_jobs)}
    for _ in range(plan.runs):
        pending = dict(every)
        running: list[Any] = []
        admitted_total, decisions, planner_seconds, first_round, rounds, problems = 0, 0, 0.0, 0.0, 0, []
        admitted_ids: list[str] = []
        while pending or running:
            snapshot = ClusterSnapshot(queues, [job for job, _ in running], [w.job for w in pending.values()],
                                       capacity, now=float(rounds))
            started = time.perf_counter()
            decided = plan_admission(snapshot)
            elapsed = time.perf_counter() - started
            planner_seconds += elapsed
            decisions += len(snapshot.pending)
            first_round = first_round or elapsed
            problems += work.check_round(snapshot, decided, work.CAPACITY)
            problems += work.drf_order_problems(snapshot, decided, work.CAPACITY)
            running, preempted = work.running_after(decided, running, pending, rounds)
            for admission in decided.admitted:
                admitted_ids.append(admission.job_id)
                del pending[admission.job_id]
            for job_id in preempted:  # back in line, to resume
                admitted_ids.remove(job_id)
                pending[job_id] = every[job_id]
            admitted_total += len(decided.admitted)
            rounds += 1
            if pending and not running and not decided.admitted:  # nothing runs or starts: the rest never will
                problems.append(f"stuck: {len(pending)} jobs never start ({_codes(decided)})")
                break
        if sorted(admitted_ids) != sorted(every):
            problems.append("not every job ran exactly once")
        measured.append((decisions / planner_seconds, admitted_total / planner_seconds, first_round, rounds,
                         admitted_total, decisions, problems))
    best = sorted(measured, key=lambda m: m[0])[len(measured) // 2]
    per_second, admissions_per_second, first_round, rounds, admitted_total, decisions, problems = best
    return _row("planner_drain", per_second, "decisions/s", plan.runs, not problems,
                jobs=plan.planner_jobs, teams=work.TEAMS, rounds=rounds, decisions=decisions,
                admissions=admitted_total, admissions_per_second=round(admissions_per_second, 1),
                first_round_ms=round(first_round * 1000, 1), violations=problems[:5])


def scheduler_catalog(plan: Plan, home: Path) -> dict[str, Any]:
    """The real scheduler's rounds on a SQLite catalog over the simulated backend."""
    from recplane.catalog import Catalog
    from recplane.config import Settings
    from recplane.scheduler import Scheduler

    work = load_sibling("workload")
    simulated = load_sibling("simulated_backend")
    home.mkdir(parents=True)
    settings = Settings(home=home)
    catalog = Catalog(settings.catalog_url)
    rounds_of: dict[str, int] = {}
    backend = simulated.SimulatedBackend(work.CAPACITY, rounds_of)
    scheduler = Scheduler(catalog, settings, backends={"simulated": backend})
    scheduler.apply_queues([
        {"name": q.name, "team": q.team, "cohort": q.cohort, "backend": "simulated", "nominal": q.nominal.to_dict(),
         "borrowing_limit": None if q.borrowing_limit is None else q.borrowing_limit.to_dict()}
        for q in work.queues()
    ])
    items = work.jobs(plan.catalog_jobs)
    started = time.perf_counter()
    for item in items:
        job = item.job
        submitted = scheduler.submit({
            "name": job.id, "team": job.queue, "queue": job.queue, "priority": job.priority,
            "resources": job.resources.to_dict(), "workers": job.workers, "command": ["true"],
        })
        rounds_of[submitted.id] = item.rounds
    submit_seconds = time.perf_counter() - started
    tick_seconds: list[float] = []
    problems: list[str] = []
    first_round = 0.0
    idle, decisions = 0, 0
    while plan.catalog_rounds is None or len(tick_seconds) < plan.catalog_rounds:
        report = scheduler.tick()
        tick_seconds.append(report.seconds)
        decisions += len(report.admitted) + report.held
        first_round = first_round or report.seconds
        problems += _catalog_invariants(scheduler, work)
        active = scheduler.store.active()
        idle = idle + 1 if active and all(r.status == "queued" for r in active) and not report.admitted else 0
        if not active or idle > 2:
            problems += [f"stuck: {len(active)} jobs never start"] if active else []
            break
    problems += _final_checks(scheduler, plan.catalog_jobs, drained=plan.catalog_rounds is None)
    catalog.close()
    admissions = backend.submitted
    total = sum(tick_seconds)
    ordered = sorted(tick_seconds)
    return _row(
        "scheduler_catalog", decisions / total, "decisions/s", 1, not problems, jobs=plan.catalog_jobs,
        teams=work.TEAMS, rounds=len(tick_seconds), decisions=decisions, admissions=admissions,
        admissions_per_second=round(admissions / total, 1), drained=plan.catalog_rounds is None,
        submits_per_second=round(plan.catalog_jobs / submit_seconds, 1),
        first_round_ms=round(first_round * 1000, 1),
        round_p50_ms=round(statistics.median(ordered) * 1000, 1),
        round_p99_ms=round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        preemptions=sum(job.preempted_count for job in scheduler.list_jobs(limit=plan.catalog_jobs)),
        catalog="sqlite", note="simulated backend: no processes; see local_job_overhead", violations=problems[:5],
    )


def _codes(decided: Any) -> str:
    codes: dict[str, int] = {}
    for hold in decided.held.values():
        codes[hold.code] = codes.get(hold.code, 0) + 1
    return ", ".join(f"{code}: {count}" for code, count in sorted(codes.items()))


def _catalog_invariants(scheduler: Any, work: Any) -> list[str]:
    """Capacity, quota ceilings and cohort totals over what the catalog says is running now."""
    from recplane.scheduler.admission import Resources
    from recplane.scheduler.rounds import demand_of

    used: dict[str, Any] = {}
    for record in scheduler.store.active():
        if record.status != "queued":
            used[record.queue] = used.get(record.queue, Resources()) + demand_of(record)
    problems = []
    total = sum(used.values(), Resources())
    if not total.fits_within(work.CAPACITY):
        problems.append(f"over capacity: {total}")
    cohorts: dict[str, Any] = {}
    for queue in work.queues():
        mine = used.get(queue.name, Resources())
        if queue.borrowing_limit is not None and not mine.fits_within(queue.nominal + queue.borrowing_limit):
            problems.append(f"{queue.name} over its borrowing limit")
        nominal, usage = cohorts.get(queue.cohort, (Resources(), Resources()))
        cohorts[queue.cohort] = (nominal + queue.nominal, usage + mine)
    problems += [f"cohort {name} over quota" for name, (n, u) in cohorts.items() if not u.fits_within(n)]
    return problems


def _final_checks(scheduler: Any, count: int, *, drained: bool) -> list[str]:
    """Every job accounted for: all succeeded (when drained), a ledger row per ended attempt, sane histories."""
    jobs = scheduler.list_jobs(limit=count + 10)
    problems = []
    if len(jobs) != count or (drained and any(job.status != "succeeded" for job in jobs)):
        problems.append("not every job succeeded")
    ended_attempts = sum(job.attempts - (job.status == "running") for job in jobs)
    ledger = scheduler.usage(group_by=["job"]).total
    if ledger.attempts != ended_attempts:
        problems.append(f"ledger has {ledger.attempts} rows for {ended_attempts} ended attempts")
    for job in jobs[:200]:
        history = [event.to_status for event in scheduler.get(job.id).events]
        if history[0] != "queued" or history[-1] != job.status:
            problems.append(f"job {job.id} history {history} but status {job.status}")
    return problems


def local_job_overhead(plan: Plan, home: Path) -> dict[str, Any]:
    """Submit-to-succeeded seconds of a trivial job through the real local backend, one job at a time."""
    from recplane.catalog import Catalog
    from recplane.config import Settings
    from recplane.scheduler import Scheduler

    home.mkdir(parents=True)
    settings = Settings(home=home, scheduler_interval_seconds=0.05)
    catalog = Catalog(settings.catalog_url)
    scheduler = Scheduler(catalog, settings)
    scheduler.start()
    seconds, correct = [], True
    try:
        for _ in range(plan.local_jobs):
            started = time.perf_counter()
            job = scheduler.submit({"command": [sys.executable, "-c", "pass"]})
            done = scheduler.wait(job.id, timeout=120)
            seconds.append(time.perf_counter() - started)
            correct &= done.status == "succeeded"
    finally:
        scheduler.close()
        catalog.close()
    return _row("local_job_overhead", statistics.median(seconds), "s/job", plan.local_jobs, correct,
                jobs=plan.local_jobs, interval_s=0.05, min_s=round(min(seconds), 3), max_s=round(max(seconds), 3))
