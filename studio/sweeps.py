"""Sweeps (an X/Y grid, as A1111/Forge's X/Y/Z plot): one or two settings and their values make a grid of ordinary
jobs, and a labelled grid video of the finished cells is kept in the gallery as an entry of its own.

UI-free: the Generate tab parses the axes here (`plan_sweep`), checks the whole grid before any job runs
(`check_sweep`), runs each cell as the Generate button runs a job, then calls `make_grid`. The grid row's settings
say `kind: "sweep"` and list its cells' gallery ids, so each cell stays an ordinary, reusable gallery row.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InputError
from studio import inputs
from studio.context import StudioContext
from studio.progress import JobResult
from studio.store import LOCAL_OWNER

NO_AXIS = "(none)"
PROMPT_AXIS = "Prompt variants"
# The settings an axis may sweep: label -> (the Generate form's value name, type, lowest, highest). A keyframe axis
# names a column of the keyframe table's first row; the prompt axis takes one variant per line.
AXES: dict[str, tuple[str, type, float, float]] = {
    "Text scale": ("scale_t", float, 0.0, 15.0),
    "Image scale": ("scale_i", float, 0.0, 15.0),
    "Audio scale": ("scale_a", float, 0.0, 15.0),
    "Switch timestep": ("switch", int, 900, 999),
    "Steps": ("steps", int, 1, 200),
    "Seed": ("seed", int, 0, inputs.MAX_SEED),
    "Keyframe 1 text scale": ("keyframe:1", float, 0.0, 15.0),
    "Keyframe 1 image scale": ("keyframe:2", float, 0.0, 15.0),
    "Keyframe 1 audio scale": ("keyframe:3", float, 0.0, 15.0),
    PROMPT_AXIS: ("prompt", str, 0, 0),
}
AXIS_CHOICES = [NO_AXIS, *AXES]
MAX_VALUES = 8  # per axis
MAX_CELLS = 36  # a local sweep; a public studio's cap is StudioOptions.max_sweep_cells_public


@dataclass
class Cell:
    """One job of the grid: the Generate form's values (API_INPUTS names) and its keyframe table, with its labels."""

    x: str
    y: str
    values: dict
    keyframes: object = None


@dataclass
class Sweep:
    x_axis: str
    y_axis: str
    x_labels: list[str]
    y_labels: list[str]
    cells: list[Cell] = field(default_factory=list)  # row-major: y rows of x columns

    @property
    def columns(self) -> int:
        return len(self.x_labels)


def parse_axis(axis: str, text, which: str = "X") -> list:
    """The values typed for one axis: comma-separated numbers (prompt variants: one per line). Each bad value gets
    a message naming the axis and saying what to type."""
    if axis not in AXES:
        raise InputError(f"Sweep {which} axis: pick one of {', '.join(AXES)}.", field="sweep")
    name, kind, low, high = AXES[axis]
    if text is not None and not isinstance(text, str):
        raise InputError(f"Sweep {which} axis ({axis}): type the values as text.", field="sweep")
    text = inputs.text(text or "", "sweep", f"sweep {which} values", max_chars=5000)
    parts = text.splitlines() if kind is str else text.replace("\n", ",").split(",")
    raw = [part.strip() for part in parts if part.strip()]
    if not raw:
        hint = "one prompt per line" if kind is str else "values separated by commas, e.g. 3, 5, 7.5"
        raise InputError(f"Sweep {which} axis ({axis}): type {hint}.", field="sweep")
    if len(raw) > MAX_VALUES:
        raise InputError(f"Sweep {which} axis ({axis}) has {len(raw)} values; at most {MAX_VALUES}.", field="sweep")
    values = [part if kind is str else _number(axis, which, part, kind, low, high) for part in raw]
    seen = set()
    for value in values:
        if value in seen:
            raise InputError(f"Sweep {which} axis ({axis}) lists {value} twice.", field="sweep")
        seen.add(value)
    return values


def _number(axis: str, which: str, text: str, kind: type, low: float, high: float):
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"Sweep {which} axis ({axis}): {text!r} is not a number; type values separated by commas, "
                         "e.g. 3, 5, 7.5.", field="sweep") from None  # fmt: skip
    if not math.isfinite(value) or not low <= value <= high:
        raise InputError(f"Sweep {which} axis ({axis}): {text} is out of range; use {low:g} to {high:g}.",
                         field="sweep")  # fmt: skip
    if kind is int:
        if value != int(value):
            raise InputError(f"Sweep {which} axis ({axis}): {text} is not a whole number.", field="sweep")
        return int(value)
    return value


def label(axis: str, value) -> str:
    """A cell's label on the grid: `Audio scale 7.5`, or the prompt variant itself."""
    if axis == PROMPT_AXIS:
        return str(value)
    return f"{axis} {value:g}" if isinstance(value, float) else f"{axis} {value}"


def plan_sweep(values: dict, keyframes, x_axis: str, x_text, y_axis: str | None = None, y_text=None) -> Sweep:
    """The grid's cells from the Generate form's raw values (`values`: API_INPUTS names) and the axes: the X axis
    is required, the Y axis optional (NO_AXIS). Without a seed axis every cell shares one seed (a random seed is
    drawn once), so the cells differ only by the swept settings."""
    x_values = parse_axis(x_axis, x_text, "X")
    y_values = [None]
    if y_axis and y_axis != NO_AXIS:
        if y_axis == x_axis:
            raise InputError(f"The sweep's X and Y axes are both {x_axis}: pick two different settings.", field="sweep")
        y_values = parse_axis(y_axis, y_text, "Y")
    else:
        y_axis = NO_AXIS
    base = dict(values)
    if "Seed" not in (x_axis, y_axis):
        seed = inputs.number(base.get("seed"), "seed", "Seed", minimum=-1, maximum=inputs.MAX_SEED, integer=True,
                             default=-1)  # fmt: skip
        base["seed"] = random.randint(0, 2**31 - 1) if seed < 0 else seed
    if any(AXES[a][0].startswith("keyframe:") for a in (x_axis, y_axis) if a in AXES):
        keyframes = _keyframe_rows(keyframes)
    sweep = Sweep(x_axis, y_axis, [label(x_axis, v) for v in x_values],
                  [label(y_axis, v) if v is not None else "" for v in y_values])  # fmt: skip
    for y_value in y_values:
        for x_value in x_values:
            cell_values, cell_keyframes = dict(base), keyframes
            for axis, value in ((x_axis, x_value), (y_axis, y_value)):
                if value is not None:
                    cell_keyframes = _apply(cell_values, cell_keyframes, axis, value)
            y_label = label(y_axis, y_value) if y_value is not None else ""
            sweep.cells.append(Cell(label(x_axis, x_value), y_label, cell_values, cell_keyframes))
    return sweep


def _keyframe_rows(keyframes) -> list[list]:
    from studio import guidance_editor

    rows = guidance_editor.keyframe_rows(guidance_editor.parse_keyframes(keyframes))
    if not rows:
        raise InputError("A keyframe sweep changes the keyframe table's first row: type a keyframe there first (its "
                         "start, e.g. 5 or t950).", field="sweep")  # fmt: skip
    return rows


def _apply(values: dict, keyframes, axis: str, value):
    """Set one axis value on a cell's form values (or on a copy of its keyframe table); returns the table."""
    name = AXES[axis][0]
    if name.startswith("keyframe:"):
        rows = [list(row) for row in keyframes]
        rows[0][int(name.split(":")[1])] = value
        return rows
    values[name] = value
    return keyframes


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
    from studio.jobs import validate_request
    from studio.tab_generate import make_request

    try:
        request, names = make_request(ctx, **cell.values, keyframes=cell.keyframes, phases=phases)
        validate_request(ctx, request, names)
    except InputError as exc:
        where = " · ".join(part for part in (cell.x, cell.y) if part)
        raise InputError(f"Sweep cell {where}: {exc}", field=exc.field) from None
    return request, names


# ---------------------------------------------------------------------------------------------- the grid video
def make_grid(ctx: StudioContext, sweep: Sweep, ids: list[int], owner: str = LOCAL_OWNER) -> JobResult:
    """The labelled grid video of a finished sweep (`ids`: its cells' gallery ids, row-major) as a gallery row of
    its own: cells tiled with axis labels, playing in sync, with the first cell's sound, marked AI-made like every
    output (engine.generate.write_generated), its settings listing the cells."""
    from engine import media
    from engine.generate import write_generated
    from studio.jobs import _end_row, _finish
    from studio.paths import DataPaths

    rows = [ctx.store.get(gid, owner=owner) for gid in ids]
    unfinished = [row.id for row in rows if row.status != "done" or not row.video_path]
    if unfinished:
        raise InputError(f"The sweep's cells {', '.join(f'#{i}' for i in unfinished)} did not finish: no grid.",
                         field="sweep")  # fmt: skip
    first = rows[0]
    settings = grid_settings(sweep, rows)
    grid = ctx.store.create_generation(prompt=f"Sweep {sweep_title(sweep)}: {first.prompt}", mode=first.mode,
                                       model_id=first.model_id, seed=first.seed, settings=settings, owner=owner,
                                       consent=first.consent)  # fmt: skip
    try:
        ctx.store.mark_running(grid.id)
        first_video = ctx.store.abs_path(first.video_path)
        videos = [media.read_video_frames(ctx.store.abs_path(row.video_path)) for row in rows]
        frames = media.tile_frames(videos, sweep.columns, sweep.x_labels, sweep.y_labels)
        audio = first_video if media.probe(first_video)["audio"] is not None else None
        video_rel = DataPaths.video_rel(grid.id)
        record = {**settings, "model_id": first.model_id, "prompt": first.prompt}
        path = write_generated(frames, record, ctx.store.abs_path(video_rel), audio, media.DEFAULT_FPS)
        return _finish(ctx, grid.id, video_rel, Path(path), record)
    except BaseException as exc:
        return _end_row(ctx, grid.id, exc)


def sweep_title(sweep: Sweep) -> str:
    return sweep.x_axis if sweep.y_axis == NO_AXIS else f"{sweep.x_axis} × {sweep.y_axis}"


def grid_settings(sweep: Sweep, rows) -> dict:
    """What a grid row keeps: its axes and its cells (gallery id and labels), read back by the gallery's detail."""
    cells = [{"id": row.id, "x": cell.x, "y": cell.y, "seed": row.seed} for cell, row in zip(sweep.cells, rows,
                                                                                             strict=True)]  # fmt: skip
    return {"kind": "sweep", "sweep": {"x_axis": sweep.x_axis, "y_axis": sweep.y_axis, "x_labels": sweep.x_labels,
                                       "y_labels": sweep.y_labels, "cells": cells}}  # fmt: skip


def grid_cells(settings: dict | None) -> list[dict]:
    """The cells of a grid row's settings ([] for any other row)."""
    if not isinstance(settings, dict) or settings.get("kind") != "sweep":
        return []
    cells = (settings.get("sweep") or {}).get("cells") or []
    return [cell for cell in cells if isinstance(cell, dict) and isinstance(cell.get("id"), int)]


def cell_caption(cell: dict) -> str:
    where = " · ".join(part for part in (cell.get("x"), cell.get("y")) if part)
    return f"#{cell['id']} {where}"


# ---------------------------------------------------------------------------------------------- the page's event
def sweep_stream(runner, request, args):
    """The Sweep button's event (Generate's inputs, its page-only inputs and the visitor, then the two axes and
    their values): the grid planned and checked whole, each cell run as Generate runs a job (`runner.job_stream`,
    the same admission ticket, queue entry and Stop), then the grid video. Yields Generate's outputs."""
    import gradio as gr

    from studio import admission
    from studio.owners import request_owner
    from studio.serving import served_copy
    from studio.tab_generate import API_INPUTS, ERROR_FIELDS, PAGE_INPUTS, _page_values, _tab, refusal

    ctx, split = runner.ctx, len(API_INPUTS) + len(PAGE_INPUTS) + 1
    values = dict(zip(API_INPUTS, args[: len(API_INPUTS)], strict=True))
    keyframes, phases, _, options, visitor = _page_values(args[len(API_INPUTS) : split])
    x_axis, x_text, y_axis, y_text = (list(args[split:]) + [None] * 4)[:4]
    try:
        owner = request_owner(ctx.options.public, request, visitor, ctx.visitor_key)
    except InputError as exc:
        yield refusal(exc)
        return
    entry = ctx.board.start(owner, getattr(request, "session_hash", None))
    blank = ["" for _ in ERROR_FIELDS]
    try:
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
        if len(ids) < len(sweep.cells):
            yield gr.update(), gr.update(), f"■ Sweep ended after {len(ids)} of {len(sweep.cells)} cells: no grid.", \
                gr.update(), *blank  # fmt: skip
            return
        result = make_grid(ctx, sweep, ids, owner)
        if result.status != "done":
            yield None, result.generation_id, f"✖ Sweep grid #{result.generation_id} failed: {result.error}", \
                gr.update(), *blank  # fmt: skip
            return
        cells = f"#{ids[0]}–#{ids[-1]}" if len(ids) > 1 else f"#{ids[0]}"
        yield (served_copy(result.video_path), result.generation_id,
               f"✔ Sweep grid #{result.generation_id} done: {sweep_title(sweep)}, {len(ids)} cells ({cells}) in the "
               "gallery", gr.update(), *blank)  # fmt: skip
    finally:
        ctx.board.finish(entry)
        admission.release(ctx, owner)
