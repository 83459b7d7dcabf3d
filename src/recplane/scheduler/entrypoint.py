"""``python -m recplane.scheduler.entrypoint JOB_ID``: the process a job attempt runs (unless it has a command).

It reads the job from the catalog named by the environment the backend set (``RECPLANE_DATABASE_URL``,
``RECPLANE_HOME`` ...), calls its kind's runner, stores the result and exits 0. A failure prints its traceback
to the job's log and exits 1; a job that stopped because the scheduler asked it to exits 143 (as SIGTERM would).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

__all__ = ["STOPPED_EXIT", "main"]

STOPPED_EXIT = 143  # 128 + SIGTERM: the code a process ended by SIGTERM reports to a shell


def main(argv: Sequence[str] | None = None) -> int:
    """Run one attempt of the job named on the command line; returns the exit code."""
    from recplane.catalog import Catalog
    from recplane.config import Settings
    from recplane.scheduler.context import JobContext, JobStopped
    from recplane.scheduler.kinds import job_kind, load_callable
    from recplane.scheduler.store import JobStore

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m recplane.scheduler.entrypoint JOB_ID", file=sys.stderr)
        return 2
    settings = Settings()
    catalog = Catalog(settings.catalog_url)
    store = JobStore(catalog)
    job = store.get(args[0])
    kind = job_kind(job.kind)
    context = JobContext(job, settings, store)
    if kind.graceful_stop:
        context.watch_stop_signal()
    print(f"recplane: job {job.id} ({job.kind}, {job.name}) attempt {context.attempt}, rank {context.rank}",
          flush=True)
    try:
        result = load_callable(kind.runner)(context)
        if result is not None and context.rank == 0:
            context.record_result(result)
    except JobStopped as stopped:
        print(f"recplane: {stopped}", flush=True)
        return STOPPED_EXIT
    except Exception as exc:  # the job's own failure: its traceback is what the log is for
        traceback.print_exc()
        summary = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1]
        store.set_fields(job.id, error=summary[:2000])
        return 1
    finally:
        context.close()
        catalog.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
