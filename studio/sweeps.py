"""Sweeps (an X/Y grid, as A1111/Forge's X/Y/Z plot): one or two settings and their values make a grid of ordinary
jobs, and a labelled grid video of the finished cells is kept in the gallery as an entry of its own.

UI-free: the Generate tab parses the axes here (`plan_sweep`); `studio/tab_sweep.py` checks the whole grid before
any job runs, runs each cell as the Generate button runs a job, then calls `make_grid`. The grid row's settings
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
