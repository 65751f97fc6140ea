"""The studio's side of the Ray worker pool (`python app.py --ray ADDRESS` / HUMO_RAY_ADDRESS; engine/workers.py).

A job's render goes to a resident worker instead of this process: the job runner (studio/jobs.py) still validates,
copies the inputs, makes the row, and writes it at the end, once, from what the worker returned. Here: the request
to a job dict, the worker's progress events to the row's progress and the page's JobProgress (previews included),
Stop to the worker, the worker's outcome to the same exceptions an in-process render raises, and the Models tab's
table of workers. Without --ray none of this is imported and jobs run in-process as before.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

from engine.errors import InputError, WorkerError

RAY_ADDRESS_ENV = "HUMO_RAY_ADDRESS"
GROUP_SIZE_ENV = "HUMO_RAY_GROUP_SIZE"
POOL_CONCURRENCY = 64  # jobs the page's queue hands on at once with a pool; the pool itself waits for a free worker


class StudioPool:
    """A WorkerPool for one studio process (one per front-end; several front-ends may share a cluster)."""

    def __init__(self, address: str | None, group_size: int = 1, max_retries: int = 1, pool=None):
        from engine.workers import WorkerPool

        self.pool = pool or WorkerPool(address, group_size=group_size, max_retries=max_retries)

    def render(self, ctx, request, model_id: str, out: Path, gid: int, stop_event: threading.Event, on_progress=None,
               advanced=None, names: dict | None = None) -> tuple[Path, dict]:  # fmt: skip
        """Render row `gid`'s request on a worker into `out`; marks the row running when a worker takes it. Returns
        (path, settings) like engine.generate.generate_to_file, or raises what an in-process render would raise
        (GenerationInterrupted for Stop, InputError for a refused input, RuntimeError with the worker's message)."""
        from engine.pipeline import GenerationInterrupted
        from engine.registry import model_source
        from engine.workers import job_dict
        from studio.progress import JobProgress

        job = job_dict(model_source(model_id), request, out, options=asdict(advanced) if advanced else None,
                       record=advanced.record(names) if advanced else None)  # fmt: skip
        started = [time.perf_counter()]

        def on_start(info: dict) -> None:  # queued -> running once a worker holds the job (not when it is retried)
            started[0] = time.perf_counter()
            ctx.store.mark_running(gid)

        def on_event(event: dict) -> None:
            done, total = event["step"], event["total"]
            ctx.store.update_progress(gid, done, total)
            if on_progress is None:
                return
            elapsed = time.perf_counter() - started[0]
            fraction = done / total
            message = f"step {done}/{total}"
            if event.get("window"):
                index, count = event["window"]
                fraction = (done - 1 + (index + 1) / count) / total
                message += f" · window {index + 1}/{count}"
            remaining = elapsed / max(fraction, 1e-6) * (1 - fraction)
            on_progress(JobProgress(gid, done, total, elapsed, remaining, event.get("preview"), message))

        result = self.pool.run(job, on_event=on_event, stop=stop_event, on_start=on_start)
        if result["status"] == "done":
            return Path(result["path"]), result["settings"]
        if result["status"] == "stopped":  # a row still queued (no worker reached) may become stopped too
            raise GenerationInterrupted(result.get("error") or "stopped")
        if result.get("field"):
            raise InputError(result["error"], field=result["field"])
        if result.get("pool_error"):  # a worker died twice, no worker anywhere: the row says so
            raise WorkerError(result["error"])
        raise RuntimeError(f"on worker {result.get('worker_id')}: {result.get('error')}")  # the log keeps it

    def rows(self) -> list[list]:
        """The Models tab's table: one row per worker."""
        return [list(r.values()) for r in self.pool.describe()]

    def shutdown(self) -> None:
        self.pool.shutdown()


POOL_HEADERS = ["worker", "node", "host", "ranks", "model", "state", "jobs done"]


def open_pool(address: str | None, group_size: int | None = None) -> StudioPool | None:
    """The pool for `--ray ADDRESS` (or $HUMO_RAY_ADDRESS); None when neither is given (jobs run in-process)."""
    address = address or os.environ.get(RAY_ADDRESS_ENV) or None
    if not address:
        return None
    size = group_size or int(os.environ.get(GROUP_SIZE_ENV) or 1)
    return StudioPool(address, group_size=size)


def job_slots(ctx) -> int:
    """How many jobs the page's queue runs at once: one in-process, many with a pool (it waits for free workers)."""
    return POOL_CONCURRENCY if getattr(ctx, "pool", None) is not None else 1
