"""One bulk write of a Parquet folder into a fresh Delta table, in its own process; prints one JSON line.

``python bulk_writer.py direct SOURCE TARGET`` streams the files through ``deltalake.write_deltalake`` the
way a competent user would (a ``pyarrow.dataset`` scanner's record batch reader, nothing materialised).
``python bulk_writer.py recplane SOURCE HOME`` creates the dataset with ``Client(home=HOME)`` (not timed)
and times ``client.ingest(name, SOURCE)`` alone.

Each write runs in a fresh process so that ``ru_maxrss`` (the process's peak resident memory) belongs to
this write alone, and neither side inherits the other's warm allocator or thread pools. Checksums are taken
after the peak-memory reading, so reading the table back does not count against the writer.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from event_spec import events_spec
from table_checksum import checksum_of_delta

DATASET = "bench_events"


def _peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _files_of(uri: str) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(uri).file_uris())


def write_direct(source: Path, target: Path) -> dict[str, Any]:
    """Stream the Parquet folder into a new Delta table with write_deltalake."""
    import pyarrow.dataset as pads
    from deltalake import write_deltalake

    started, cpu = time.perf_counter(), _cpu_seconds()
    reader = pads.dataset(source, format="parquet").scanner().to_reader()
    write_deltalake(str(target), reader, mode="error")
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    peak = _peak_rss_bytes()
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_bytes": peak, "uri": str(target),
            "files": _files_of(str(target))}


def write_recplane(source: Path, home: Path) -> dict[str, Any]:
    """Create the dataset (untimed), then time client.ingest of the Parquet folder."""
    from recplane import Client

    client = Client(home=home)
    setup_started = time.perf_counter()
    location = client.create_dataset(events_spec(DATASET)).location
    setup_seconds = time.perf_counter() - setup_started
    started, cpu = time.perf_counter(), _cpu_seconds()
    result = client.ingest(DATASET, source)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    peak = _peak_rss_bytes()
    close_started = time.perf_counter()
    client.close()
    close_seconds = time.perf_counter() - close_started
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_bytes": peak,
        "uri": location,
        "files": _files_of(location),
        "create_dataset_seconds": setup_seconds,
        "close_seconds": close_seconds,
        "accepted": result.accepted,
        "rejected": result.rejected,
        "version": result.version,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["direct", "recplane"])
    parser.add_argument("source", type=Path, help="Folder of Parquet files")
    parser.add_argument("target", type=Path, help="New Delta table folder (direct) or recplane home")
    args = parser.parse_args(argv)
    outcome = write_direct(args.source, args.target) if args.mode == "direct" else write_recplane(
        args.source, args.target
    )
    outcome["checksum"] = checksum_of_delta(outcome["uri"]).to_dict()
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
