"""The Generate tab's Sweep (studio/sweeps.py plans the grid and makes its video): the whole grid checked before
any job runs, each cell run as the Generate button runs a job (the same admission ticket, queue entry and Stop), then
the grid video. Its own module so the Generate tab imports sweeps one way (this page side needs the tab's request
maker, `make_request`)."""

from __future__ import annotations

import gradio as gr

from engine.errors import InputError
from studio.context import StudioContext
from studio.jobs import validate_request
from studio.serving import served_copy
from studio.store import LOCAL_OWNER
from studio.sweeps import MAX_CELLS, Cell, Sweep, make_grid, plan_sweep, sweep_title
from studio.tab_generate import (
    API_INPUTS,
    ERROR_FIELDS,
    PAGE_INPUTS,
    PRIVATE,
    GenerateTab,
    JobRunner,
    _page_values,
    _tab,
    job_concurrency,
    make_request,
    refusal,
)


def check_sweep(ctx: StudioContext, sweep: Sweep, owner: str = LOCAL_OWNER, phases=None) -> None:
    """The whole grid against the studio's caps before any job runs: the number of cells (a public studio counts
    each cell as a job of the visitor's, and the jobs already waiting), then every cell's own checks (steps,
    size, frames, voice: `jobs.validate_request`). Raises InputError naming what to change."""
    opts = ctx.options
    count = len(sweep.cells)
    cap = opts.max_sweep_cells_public if opts.public else MAX_CELLS
    where = "this public studio runs" if opts.public else "a sweep makes"
    if count > cap:
        raise InputError(f"This sweep makes {count} videos; {where} at most {cap}: drop values from an axis.",
                         field="sweep")  # fmt: skip
    if opts.public:
        others = sum(1 for ticket_owner, *_ in ctx.store.tickets() if ticket_owner != owner)
        if others + count > opts.max_queue_public:
            raise InputError(f"The studio is busy ({others} jobs waiting or running): a sweep of {count} videos does "
                             "not fit now; try fewer values or come back in a few minutes.", field="sweep")  # fmt: skip
    for cell in sweep.cells:
        cell_request(ctx, cell, phases)


def cell_request(ctx: StudioContext, cell: Cell, phases=None):
    """A cell's GenerationRequest as Generate makes it, checked as a job is (nothing written): (request, names)."""
    try:
        request, names = make_request(ctx, **cell.values, keyframes=cell.keyframes, phases=phases)
        validate_request(ctx, request, names)
    except InputError as exc:
        where = " · ".join(part for part in (cell.x, cell.y) if part)
        raise InputError(f"Sweep cell {where}: {exc}", field=exc.field) from None
    return request, names


# ---------------------------------------------------------------------------------------------- the grid video
def sweep_stream(runner, request, args):
    """The Sweep button's event (Generate's inputs, its page-only inputs and the visitor, then the two axes and
    their values): the grid planned and checked whole, each cell run as Generate runs a job (`runner.job_stream`,
    the same admission ticket, queue entry and Stop), then the grid video. Yields Generate's outputs."""

    ctx, split = runner.ctx, len(API_INPUTS) + len(PAGE_INPUTS) + 1
    values = dict(zip(API_INPUTS, args[: len(API_INPUTS)], strict=True))
    keyframes, phases, _, options, visitor = _page_values(args[len(API_INPUTS) : split])
    x_axis, x_text, y_axis, y_text = (list(args[split:]) + [None] * 4)[:4]

    def cells(owner, entry):
        try:
            sweep = plan_sweep(values, keyframes, x_axis, x_text, y_axis, y_text)
            check_sweep(ctx, sweep, owner, phases)
        except InputError as exc:
            yield refusal(exc)
            return
        if entry is not None:
            entry.count = len(sweep.cells)  # the queue list counts the grid's jobs
        ids = []
        for index, cell in enumerate(sweep.cells):
            if ctx.board.cancelled(entry):
                break
            if entry is not None:
                entry.done = index
            where = f"Sweep cell {index + 1} of {len(sweep.cells)} ({' · '.join(p for p in (cell.x, cell.y) if p)})"
            last = None
            for last in runner.gpu_job_stream(_tab(request), *[cell.values.get(k) for k in API_INPUTS], owner=owner,
                                              keyframes=cell.keyframes, phases=phases, options=options):  # fmt: skip
                yield last[0], last[1], f"{where}: {last[2]}", *last[3:]
            gid = last[1] if last is not None else None
            if gid is None or ctx.store.get(gid, owner=owner).status != "done":
                break
            ids.append(gid)
        yield grid_outputs(ctx, sweep, ids, owner)

    yield from runner.listed(request, visitor, cells)


def grid_outputs(ctx: StudioContext, sweep: Sweep, ids: list[int], owner: str) -> tuple:
    """Generate's outputs once the cells have run: the grid video, or why there is none."""
    blank = ["" for _ in ERROR_FIELDS]
    if len(ids) < len(sweep.cells):
        return gr.update(), gr.update(), f"■ Sweep ended after {len(ids)} of {len(sweep.cells)} cells: no grid.", \
            gr.update(), *blank  # fmt: skip
    result = make_grid(ctx, sweep, ids, owner)
    if result.status != "done":
        return None, result.generation_id, f"✖ Sweep grid #{result.generation_id} failed: {result.error}", \
            gr.update(), *blank  # fmt: skip
    cells = f"#{ids[0]}–#{ids[-1]}" if len(ids) > 1 else f"#{ids[0]}"
    return (served_copy(result.video_path), result.generation_id,
            f"✔ Sweep grid #{result.generation_id} done: {sweep_title(sweep)}, {len(ids)} cells ({cells}) in the "
            "gallery", gr.update(), *blank)  # fmt: skip


def wire_sweep(runner: JobRunner, tab: GenerateTab, visitor: gr.BrowserState) -> None:
    """Run sweep: Generate's inputs and admission, then the axes; its cells and its grid reach Generate's outputs."""
    from studio.pool import job_slots

    outputs = [tab.result.video, tab.result.gallery_id, tab.result.status, tab.result.preview,
               *[tab.errors[k] for k in ERROR_FIELDS]]  # fmt: skip
    axes = [tab.sweep[k] for k in ("x_axis", "x_values", "y_axis", "y_values")]

    def on_sweep(request: gr.Request, *args):
        yield from sweep_stream(runner, request, args)

    event = tab.sweep["run"].click(on_sweep, tab.form.get(API_INPUTS) + tab.form.get(PAGE_INPUTS) + [visitor] + axes,
                                   outputs, api_visibility="private", trigger_mode="multiple",
                                   **job_concurrency(runner.ctx, job_slots(runner.ctx)), preprocess=False,
                                   validator=runner.admit_job)  # fmt: skip
    tab.job_events.append(event)
    # as Generate's (wire_generate ran first): a new run clears an old "Stopping…" line, and so does its end
    tab.sweep["run"].click(lambda: "", None, tab.result.stop_info, **PRIVATE)
    event.then(lambda: "", None, tab.result.stop_info, **PRIVATE)
