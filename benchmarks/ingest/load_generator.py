"""HTTP load generator for the ingestion endpoint, run as its own process; prints one JSON line.

``python load_generator.py URL DATASET --clients 8 --rows 100 --seconds 30`` keeps ``clients`` concurrent
senders busy, each posting a JSON array of ``rows`` events with its own Idempotency-Key and waiting for the
acknowledgement before sending the next (closed loop: every request in flight is one a client waits on).
A 429 is retried with the same key after Retry-After, and its latency runs from the first attempt to the
acknowledgement, as a caller would see it.

Request bodies are built before the clock starts (a pool of bodies reused round-robin), so the generator
spends its CPU on HTTP, not on making JSON. It runs in a separate process from the server so the two never
share a GIL; on a small machine they still share cores, which the caller reports.

Reported: acknowledged rows and requests inside the measured window (after ``--warmup``), latencies of the
requests sent inside it, and totals over the whole run (warm-up and the tail included) with the sums of
``user_id`` and ``item_id`` over every acknowledged row, so the caller can check that the table holds
exactly what was acknowledged.

Three client implementations of the same workload: ``threads`` (one ``httpx.Client`` with keep-alive per
sender thread), ``async`` (``asyncio`` with one ``httpx.AsyncClient``) and ``raw`` (one keep-alive HTTP/1.1
connection per sender on asyncio streams, request bytes written by hand; uvloop when installed). On a 2-core
machine shared with the server, httpx's own cost (≈0.7 ms of CPU per request) is CPU the server cannot use;
the raw client costs a small fraction of that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import orjson

POOL_ROWS = 100_000
MAX_RETRY_SLEEP = 1.0


@dataclass
class Body:
    """One pre-encoded request body and the sums of the rows it carries."""

    payload: bytes
    rows: int
    user_id_sum: int
    item_id_sum: int


@dataclass
class Tally:
    """What one sender saw."""

    window_rows: int = 0
    window_requests: int = 0
    total_rows: int = 0
    total_requests: int = 0
    user_id_sum: int = 0
    item_id_sum: int = 0
    rejected: int = 0
    duplicates: int = 0
    retries_429: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def merge(self, other: Tally) -> None:
        for name in ("window_rows", "window_requests", "total_rows", "total_requests", "user_id_sum",
                     "item_id_sum", "rejected", "duplicates", "retries_429"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)
        self.latencies.extend(other.latencies)


@dataclass(frozen=True)
class Window:
    """The measured window on the perf_counter clock; senders stop sending at ``end``."""

    start: float
    end: float


def build_bodies(rows_per_request: int, seed: int) -> list[Body]:
    """A pool of JSON bodies cut from synthetic events (timestamps as ISO-8601 text, as producers send)."""
    import pyarrow as pa

    from recplane.samples import SyntheticSpec, iter_synthetic_batches

    pool_rows = max(POOL_ROWS - POOL_ROWS % rows_per_request, rows_per_request)
    spec = SyntheticSpec(users=50_000, items=20_000, events=pool_rows, seed=seed, chunk_rows=pool_rows)
    table = pa.Table.from_batches(list(iter_synthetic_batches(spec)))
    columns = table.to_pydict()
    ts = [moment.astimezone(UTC).isoformat().replace("+00:00", "Z") for moment in columns["ts"]]
    rows = [
        {"user_id": u, "item_id": i, "event_type": e, "value": v, "ts": t, "session_id": s}
        for u, i, e, v, t, s in zip(columns["user_id"], columns["item_id"], columns["event_type"],
                                    columns["value"], ts, columns["session_id"], strict=True)
    ]
    bodies = []
    for start in range(0, len(rows) - rows_per_request + 1, rows_per_request):
        chunk = rows[start:start + rows_per_request]
        bodies.append(Body(orjson.dumps(chunk), len(chunk), sum(r["user_id"] for r in chunk),
                           sum(r["item_id"] for r in chunk)))
    return bodies


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or "0.05"), 0.01), MAX_RETRY_SLEEP)
    except ValueError:
        return 0.05


def _record(tally: Tally, body: Body, answer: dict[str, Any], sent: float, acked: float,
            window: Window) -> None:
    tally.total_requests += 1
    tally.total_rows += int(answer.get("accepted", 0))
    tally.rejected += int(answer.get("rejected", 0))
    tally.duplicates += bool(answer.get("duplicate"))
    if int(answer.get("accepted", 0)) == body.rows:
        tally.user_id_sum += body.user_id_sum
        tally.item_id_sum += body.item_id_sum
    if window.start <= acked <= window.end:
        tally.window_requests += 1
        tally.window_rows += int(answer.get("accepted", 0))
    if sent >= window.start:
        tally.latencies.append(acked - sent)


def _headers(key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Idempotency-Key": key}


def run_threads(url: str, path: str, bodies: list[Body], clients: int, window: Window, run_id: str) -> Tally:
    """One thread and one keep-alive httpx.Client per sender."""
    tallies = [Tally() for _ in range(clients)]

    def sender(index: int) -> None:
        tally, sequence = tallies[index], 0
        with httpx.Client(base_url=url, timeout=60.0) as http:
            while time.perf_counter() < window.end:
                body = bodies[(index + sequence * clients) % len(bodies)]
                key, sent = f"{run_id}-{index}-{sequence}", time.perf_counter()
                sequence += 1
                try:
                    while True:
                        response = http.post(path, content=body.payload, headers=_headers(key))
                        if response.status_code != 429:
                            break
                        tally.retries_429 += 1
                        time.sleep(_retry_after(response.headers.get("retry-after")))
                except httpx.HTTPError as exc:
                    tally.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                acked = time.perf_counter()
                if response.status_code != 200:
                    tally.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    continue
                _record(tally, body, response.json(), sent, acked, window)

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _merged(tallies)


async def _run_async(url: str, path: str, bodies: list[Body], clients: int, window: Window,
                     run_id: str) -> Tally:
    tallies = [Tally() for _ in range(clients)]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def sender(http: httpx.AsyncClient, index: int) -> None:
        tally, sequence = tallies[index], 0
        while time.perf_counter() < window.end:
            body = bodies[(index + sequence * clients) % len(bodies)]
            key, sent = f"{run_id}-{index}-{sequence}", time.perf_counter()
            sequence += 1
            try:
                while True:
                    response = await http.post(path, content=body.payload, headers=_headers(key))
                    if response.status_code != 429:
                        break
                    tally.retries_429 += 1
                    await asyncio.sleep(_retry_after(response.headers.get("retry-after")))
            except httpx.HTTPError as exc:
                tally.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            acked = time.perf_counter()
            if response.status_code != 200:
                tally.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                continue
            _record(tally, body, response.json(), sent, acked, window)

    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as http:
        await asyncio.gather(*(sender(http, i) for i in range(clients)))
    return _merged(tallies)


def _merged(tallies: list[Tally]) -> Tally:
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return total


def _run_loop(main: Coroutine[Any, Any, Tally]) -> Tally:
    """Run the senders on uvloop when it is installed (as the server does), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def run_async(url: str, path: str, bodies: list[Body], clients: int, window: Window, run_id: str) -> Tally:
    """Senders as asyncio tasks sharing one httpx.AsyncClient (uvloop when installed)."""
    return _run_loop(_run_async(url, path, bodies, clients, window, run_id))


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower().decode()] = value.strip().decode()
    if "content-length" in headers:
        return int(head[9:12]), headers, await reader.readexactly(int(headers["content-length"]))
    parts: list[bytes] = []
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return int(head[9:12]), headers, b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _run_raw(url: str, path: str, bodies: list[Body], clients: int, window: Window, run_id: str) -> Tally:
    tallies = [Tally() for _ in range(clients)]
    target = urlparse(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    prefix = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
              "Connection: keep-alive\r\n").encode()

    async def sender(index: int) -> None:
        tally, sequence = tallies[index], 0
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < window.end:
                body = bodies[(index + sequence * clients) % len(bodies)]
                key, sent = f"{run_id}-{index}-{sequence}", time.perf_counter()
                sequence += 1
                request = (prefix + f"Content-Length: {len(body.payload)}\r\nIdempotency-Key: {key}\r\n\r\n".encode()
                           + body.payload)
                try:
                    while True:
                        writer.write(request)
                        status, headers, answer = await _read_answer(reader)
                        if status != 429:
                            break
                        tally.retries_429 += 1
                        await asyncio.sleep(_retry_after(headers.get("retry-after")))
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    tally.errors.append(f"{type(exc).__name__}: {exc}")
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                acked = time.perf_counter()
                if status != 200:
                    tally.errors.append(f"HTTP {status}: {answer[:200].decode(errors='replace')}")
                    continue
                _record(tally, body, orjson.loads(answer), sent, acked, window)
        finally:
            writer.close()

    await asyncio.gather(*(sender(i) for i in range(clients)))
    return _merged(tallies)


def run_raw(url: str, path: str, bodies: list[Body], clients: int, window: Window, run_id: str) -> Tally:
    """Senders as asyncio tasks, each on its own keep-alive connection written by hand (uvloop when installed)."""
    return _run_loop(_run_raw(url, path, bodies, clients, window, run_id))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary(tally: Tally, window: Window, *, clients: int, rows: int, mode: str) -> dict[str, Any]:
    """The JSON line this process prints."""
    seconds = window.end - window.start
    as_ms = {f"p{q}_ms": (None if (p := percentile(tally.latencies, q)) is None else p * 1000)
             for q in (50, 90, 99)}
    return {
        "client": mode,
        "clients": clients,
        "rows_per_request": rows,
        "window_seconds": seconds,
        "rows_per_s": tally.window_rows / seconds,
        "requests_per_s": tally.window_requests / seconds,
        **as_ms,
        "max_ms": max(tally.latencies) * 1000 if tally.latencies else None,
        "latency_samples": len(tally.latencies),
        "total_rows": tally.total_rows,
        "total_requests": tally.total_requests,
        "user_id_sum": tally.user_id_sum,
        "item_id_sum": tally.item_id_sum,
        "rejected": tally.rejected,
        "duplicates": tally.duplicates,
        "retries_429": tally.retries_429,
        "errors": len(tally.errors),
        "error_samples": tally.errors[:5],
        "finished_at": datetime.now(UTC).isoformat(),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("dataset")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rows", type=int, default=100, help="Events per request")
    parser.add_argument("--seconds", type=float, default=30.0, help="Measured window")
    parser.add_argument("--warmup", type=float, default=1.0, help="Seconds of load before the window")
    parser.add_argument("--client", choices=["threads", "async", "raw"], default="threads")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    bodies = build_bodies(args.rows, args.seed)
    now = time.perf_counter()
    window = Window(start=now + args.warmup, end=now + args.warmup + args.seconds)
    runner = {"threads": run_threads, "async": run_async, "raw": run_raw}[args.client]
    print(json.dumps({"event": "started"}), flush=True)  # the caller starts its own clocks here
    cpu_before = time.process_time()
    tally = runner(args.url, f"/v1/datasets/{args.dataset}/events", bodies, args.clients, window,
                   uuid.uuid4().hex[:12])
    result = summary(tally, window, clients=args.clients, rows=args.rows, mode=args.client)
    result["cpu_cores"] = (time.process_time() - cpu_before) / (time.perf_counter() - now)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
