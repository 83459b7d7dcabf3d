"""Closed-loop HTTP load generator of ``recplane bench serving``: its own process, C keep-alive connections.

``python loadgen.py --url http://127.0.0.1:PORT/v1/recommend --users users.json --concurrency 8 --warmup 3
--duration 10 --out result.json`` opens ``C`` HTTP/1.1 keep-alive connections over loopback and keeps exactly one
request in flight on each (closed loop: a connection sends its next request as soon as the previous answer is
read). Requests are ``{"user_id": U, "k": K}`` with ``U`` drawn (seeded) from the known users plus a share of
unknown ids (``--unknown-fraction``, which exercises the service's fallback); every connection walks the same
seeded sequence from its own offset, so every server sees the same users in the same proportions.

The client is raw asyncio streams on uvloop (when installed) with request bytes built up front: per request it
writes one buffer, reads the header block, then ``Content-Length`` bytes (chunked answers are read too). That keeps
the generator's own cost to a few tens of microseconds per request; ``--serve-trivial PORT`` runs a fixed-answer
server so the suite can measure the generator's ceiling and report it beside the results.

Latency is measured per request from just before the write to the last byte read (``perf_counter``); only
requests that *start* after the warm-up count, and QPS is those completed requests over the measured duration.
Bodies of measured requests are kept and parsed after the run (never during it), for the service's per-stage
``timings_ms`` and its ``fallback`` answers. Standard library + numpy only (and orjson/uvloop when present).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the suite runs it in recplane's venv, which has orjson
    _orjson = None  # type: ignore[assignment]


def loads(data: bytes) -> Any:
    """Parse one JSON answer (orjson when present, else the standard library)."""
    return _orjson.loads(data) if _orjson is not None else json.loads(data)


PERCENTILES = (50, 90, 99, 99.9)
UNKNOWN_BASE = 9_000_000_000  # unknown user ids: far above any id the benchmark's catalogs use


def build_sequence(users: list[Any], unknown_fraction: float, length: int, seed: int) -> list[Any]:
    """The seeded user sequence every connection walks: known users, with ``unknown_fraction`` unknown ids."""
    rng = random.Random(seed)
    sequence: list[Any] = []
    for index in range(length):
        if rng.random() < unknown_fraction:
            sequence.append(UNKNOWN_BASE + index)
        else:
            sequence.append(users[rng.randrange(len(users))])
    return sequence


def request_bytes(host: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    """One complete HTTP/1.1 keep-alive POST with a JSON body."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: keep-alive",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length >= 0:
        return status, await reader.readexactly(length)
    if not chunked:
        raise RuntimeError(f"response without Content-Length or chunked body: {head[:200]!r}")
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class Recorder:
    """Measured requests: start offsets, latencies, statuses and bodies (parsed after the run)."""

    def __init__(self, keep_bodies: bool) -> None:
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.bodies: list[bytes] = []
        self.keep_bodies = keep_bodies
        self.warmup_requests = 0
        self.errors: list[str] = []

    def add(self, latency: float, status: int, body: bytes) -> None:
        self.latencies.append(latency)
        self.statuses.append(status)
        if self.keep_bodies:
            self.bodies.append(body)


async def connection(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    measure_from: float,
    stop_at: float,
    recorder: Recorder,
) -> None:
    """One keep-alive connection in a closed loop until ``stop_at`` (reconnects if the server closes it)."""
    reader, writer = await asyncio.open_connection(host, port)
    index = offset
    clock = time.perf_counter
    try:
        while True:
            request = requests[index % len(requests)]
            index += 1
            started = clock()
            if started >= stop_at:
                return
            try:
                writer.write(request)
                status, body = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                recorder.errors.append(f"{type(exc).__name__}: {exc}")
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            if started >= measure_from:
                recorder.add(clock() - started, status, body)
            else:
                recorder.warmup_requests += 1
    finally:
        writer.close()


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p99/p99.9 and mean of ``values`` (seconds in, milliseconds out)."""
    if len(values) == 0:
        return {}
    array = np.asarray(values, dtype=np.float64) * 1000.0
    points = np.percentile(array, PERCENTILES)
    out = {f"p{str(p).replace('.', '')}_ms": round(float(v), 4) for p, v in zip(PERCENTILES, points, strict=True)}
    out["mean_ms"] = round(float(array.mean()), 4)
    return out


def stage_summary(bodies: list[bytes]) -> dict[str, Any]:
    """Per-stage p50/p99 from the answers' ``timings_ms`` (where the server reports them) and fallback counts."""
    stages: dict[str, list[float]] = {}
    fallbacks = 0
    answered = 0
    for body in bodies:
        try:
            document = loads(body)
        except ValueError:
            continue
        if not isinstance(document, dict):
            continue
        answered += 1
        if document.get("fallback"):
            fallbacks += 1
        for stage, value in (document.get("timings_ms") or {}).items():
            if isinstance(value, int | float):
                stages.setdefault(stage, []).append(float(value))
    summary: dict[str, Any] = {"answers_parsed": answered, "fallback_answers": fallbacks}
    summary["stages"] = {
        stage: {
            "p50_ms": round(float(np.percentile(values, 50)), 4),
            "p99_ms": round(float(np.percentile(values, 99)), 4),
            "mean_ms": round(float(np.mean(values)), 4),
        }
        for stage, values in sorted(stages.items())
    }
    return summary


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then measure for ``duration`` seconds; the summary document."""
    url = urlparse(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    users = json.loads(Path(args.users).read_text()) if args.users else [1]
    headers = dict(h.split(": ", 1) for h in args.header)
    sequence = build_sequence(users, args.unknown_fraction, args.sequence, args.seed)
    path = url.path or "/"
    requests = [request_bytes(f"{host}:{port}", path, {"user_id": user, "k": args.k}, headers) for user in sequence]
    recorder = Recorder(keep_bodies=not args.no_bodies)
    begin = time.perf_counter()
    measure_from = begin + args.warmup
    stop_at = measure_from + args.duration
    stride = max(len(requests) // max(args.concurrency, 1), 1)
    tasks = [
        connection(host, port, requests, i * stride, measure_from, stop_at, recorder) for i in range(args.concurrency)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    measured = len(recorder.latencies)
    statuses: dict[str, int] = {}
    for status in recorder.statuses:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = [lat for lat, status in zip(recorder.latencies, recorder.statuses, strict=True) if status == 200]
    document: dict[str, Any] = {
        "url": args.url,
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "requests": measured,
        "warmup_requests": recorder.warmup_requests,
        "ok": len(ok),
        "statuses": statuses,
        "qps": round(len(ok) / args.duration, 2),
        "latency": percentiles(ok),
        "transport_errors": recorder.errors[:5],
        "transport_error_count": len(recorder.errors),
        "connection_failures": failures[:5],
    }
    if recorder.keep_bodies:
        document.update(stage_summary([b for b, s in zip(recorder.bodies, recorder.statuses, strict=True) if s == 200]))
    return document


async def serve_trivial(port: int) -> None:
    """A fixed 200 answer per request, as lean as asyncio allows: the generator's ceiling is measured against it."""
    answer_body = b'{"items":[],"timings_ms":{}}'
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(answer_body)).encode()
        + b"\r\n\r\n"
        + answer_body
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(f"trivial server on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="POST target, e.g. http://127.0.0.1:8100/v1/recommend")
    parser.add_argument("--users", help="JSON file: the list of known user ids")
    parser.add_argument("--unknown-fraction", type=float, default=0.02)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequence", type=int, default=20_000, help="length of the seeded user sequence")
    parser.add_argument("--header", action="append", default=[], help="extra header 'Name: value' (repeatable)")
    parser.add_argument("--no-bodies", action="store_true", help="do not keep answers (no per-stage timings)")
    parser.add_argument("--out", help="write the summary JSON here (default: stdout)")
    parser.add_argument("--serve-trivial", type=int, metavar="PORT", help="run the fixed-answer server instead")
    args = parser.parse_args(argv)
    runner: Callable[..., Any]
    try:
        import uvloop

        runner, loop_name = uvloop.run, "uvloop"
    except ImportError:  # pragma: no cover - plain asyncio works, a little slower
        runner, loop_name = asyncio.run, "asyncio"
    if args.serve_trivial:
        runner(serve_trivial(args.serve_trivial))
        return
    if not args.url:
        parser.error("--url is required")
    document = runner(run_load(args))
    document["loop"] = loop_name
    text = json.dumps(document, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
