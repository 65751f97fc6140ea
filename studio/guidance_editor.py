"""The guidance-schedule editor of the Generate tab: raw form values -> the engine's own `GuidanceSchedule`.

The editor is a preset (the formula: which branches are mixed), start scales, the 17B switch timestep and a table
of keyframes that change the scales later in the run (`engine.guidance.Keyframe`: hold or linear ramp). Everything
is compiled by `engine.guidance.curve_schedule`, the same object the CLI's `--guidance-json` runs; nothing here
keeps a parallel representation. The plot is drawn as SVG from that schedule on the model's own timestep grid.

Schedules the keyframes cannot describe (other branch mixes, more phases: anything `--guidance-json` runs) are
typed as *custom phases*: the same JSON (`GuidanceSchedule.to_dict`), which then replaces the editor's schedule.
"Edit as phases" writes the editor's current schedule there as a starting point.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from engine import guidance as guidance_lib
from engine.errors import InputError
from engine.guidance import GuidanceSchedule, Keyframe
from studio import inputs

KEYFRAME_HEADERS = ["at (step, or t950)", "text", "image", "audio", "segment (hold / linear)"]
SCALE_LABELS = {"scale_t": "Text scale", "scale_i": "Image scale", "scale_a": "Audio scale"}
COLOURS = {"text": "#1f77b4", "image": "#2ca02c", "audio": "#d62728"}  # distinct also for red-green weak eyes
MAX_KEYFRAMES = 64
MAX_PHASES = 32  # a phase per step of a 32-step run; more only slows the page's plot
MAX_PHASES_CHARS = 20_000
PHASES_SOURCE = {"kind": "phases"}  # the `source` of a schedule typed as custom phases (reuse puts the JSON back)
NEEDS = {"image": ("I", "a reference image"), "audio": ("A", "a voice")}


@dataclass
class EditorState:
    """What the editor's controls hold, read and checked from raw values."""

    preset: str
    scales: dict[str, float | None]
    switch: int | None
    keyframes: list[Keyframe]


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() == ""


def parse_keyframes(value) -> list[Keyframe]:
    """Keyframes from the table's raw value (Gradio's {"headers", "data"} dict, a list of rows, or a DataFrame).
    Empty rows are skipped; a bad cell raises InputError(field="guidance") naming its row."""
    if value is None:
        return []
    if hasattr(value, "values") and hasattr(value, "columns"):  # pandas, from direct calls
        rows = value.values.tolist()
    elif isinstance(value, dict):
        rows = value.get("data") or []
    elif isinstance(value, list | tuple):
        rows = list(value)
    else:
        raise InputError("The keyframe table could not be read: clear it and type the rows again.", field="guidance")
    keyframes = []
    for number, row in enumerate(rows, start=1):
        cells = list(row) + [None] * (5 - len(row)) if isinstance(row, list | tuple) else None
        if cells is None:
            raise InputError(f"Keyframe row {number} could not be read.", field="guidance")
        if all(_blank(c) for c in cells[:5]):
            continue
        keyframes.append(_keyframe(number, cells))
        if len(keyframes) > MAX_KEYFRAMES:
            raise InputError(f"At most {MAX_KEYFRAMES} keyframes.", field="guidance")
    return keyframes


def _keyframe(number: int, cells: list) -> Keyframe:
    at, *scales, segment = cells[:5]
    if _blank(at):
        raise InputError(f"Keyframe row {number}: say where it starts (a step like 12, or a timestep like t950).",
                         field="guidance")  # fmt: skip
    values = [
        None if _blank(v) else inputs.number(v, "guidance", f"Keyframe row {number} {name}", minimum=0, maximum=30)
        for v, name in zip(scales, ("text", "image", "audio"), strict=True)
    ]
    segment = "hold" if _blank(segment) else str(segment).strip().lower()
    at = str(int(at)) if isinstance(at, int | float) and not isinstance(at, bool) and float(at).is_integer() else at
    try:
        return Keyframe(str(at).strip(), *values, segment=segment)
    except InputError as exc:
        raise InputError(f"Keyframe row {number}: {exc}", field="guidance") from None


def add_keyframe(table, at, scale_t=None, scale_i=None, scale_a=None, segment=None) -> list[list]:
    """The table's keyframes with one more, typed in the editor's row of inputs and checked as a job reads it
    (InputError names what to change). Rows are typed into plain inputs: a table cell swallowed the first key."""
    rows = keyframe_rows(parse_keyframes(table))
    if len(rows) >= MAX_KEYFRAMES:
        raise InputError(f"At most {MAX_KEYFRAMES} keyframes.", field="guidance")
    key = _keyframe(len(rows) + 1, [at, scale_t, scale_i, scale_a, segment])
    if key.scale_t is None and key.scale_i is None and key.scale_a is None:
        raise InputError("Give the keyframe at least one scale (text, image or audio).", field="guidance")
    return rows + keyframe_rows([key])


def keyframe_rows(keyframes: Sequence[dict | Keyframe]) -> list[list]:
    """Table rows of keyframes (from a schedule's `source`), blanks where a scale is kept."""
    rows = []
    for key in keyframes:
        key = key if isinstance(key, Keyframe) else Keyframe.from_dict(key)
        rows.append([key.at, key.scale_t, key.scale_i, key.scale_a, key.segment])
    return rows


def read_state(preset, scale_t, scale_i, scale_a, switch, keyframes) -> EditorState:
    """The editor's raw values, checked (the messages say what to change)."""
    preset = inputs.choice(preset, list(guidance_lib.GUIDANCE_PRESETS), "guidance", "Guidance preset", "official")
    scales = {
        name: None if v is None else inputs.number(v, "guidance", SCALE_LABELS[name], minimum=0, maximum=30)
        for name, v in (("scale_t", scale_t), ("scale_i", scale_i), ("scale_a", scale_a))
    }
    switch = None if switch is None else inputs.number(switch, "guidance", "Switch timestep", minimum=0,
                                                        maximum=1000, integer=True)  # fmt: skip
    return EditorState(preset, scales, switch, parse_keyframes(keyframes))


def schedule_of(state: EditorState, variant: str, mode: str, timesteps: Sequence[int]) -> GuidanceSchedule:
    """The engine schedule the editor describes, on this timestep grid (validated)."""
    return guidance_lib.curve_schedule(
        state.preset, variant, mode, timesteps, state.scales, state.keyframes, state.switch
    ).validate()


def stored_schedule(data) -> GuidanceSchedule:
    """The schedule of a stored job (a gallery row's or an mp4's settings: the store edge, where the guidance is its
    `to_dict()`); InputError for a malformed one."""
    return GuidanceSchedule.from_dict(data)


def parse_phases(text, variant: str, mode: str) -> GuidanceSchedule | None:
    """The schedule typed as custom phases (JSON as `--guidance-json` reads it), checked against this job's inputs;
    None when the box is blank (the editor's schedule runs). InputError(field="guidance") says what to change."""
    if _blank(text):
        return None
    text = str(text)
    if len(text) > MAX_PHASES_CHARS:
        raise InputError(f"Custom phases: at most {MAX_PHASES_CHARS:,} characters of JSON.", field="guidance")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"Custom phases are not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
                         "Press 'Edit as phases' for a valid starting point.", field="guidance") from None  # fmt: skip
    schedule = GuidanceSchedule.from_dict(data)
    if len(schedule.phases) > MAX_PHASES:
        raise InputError(f"Custom phases: at most {MAX_PHASES} phases (got {len(schedule.phases)}).", field="guidance")
    for number, phase in enumerate(schedule.phases, start=1):
        for modality, (letter, what) in NEEDS.items():
            if letter not in mode and any(b.has(modality) for b in phase.branches()):
                raise InputError(f"Custom phase {number} uses {what} ({letter}) but this job has none: add it, or "
                                 f"write {'∅' if letter == 'I' else '0'} in that branch.", field="guidance")  # fmt: skip
    return replace(schedule, preset="custom", variant=variant, mode=mode, source=dict(PHASES_SOURCE)).validate()


def phases_text(schedule: GuidanceSchedule) -> str:
    """A schedule as the custom-phases box shows it: its phases and scales, without the editor's `source`."""
    data = {k: v for k, v in schedule.to_dict().items() if k not in ("source", "variant", "mode")}
    return json.dumps({**data, "preset": "custom"}, indent=1, ensure_ascii=False)


def is_phases(schedule: GuidanceSchedule) -> bool:
    return (schedule.source or {}).get("kind") == PHASES_SOURCE["kind"]


def preset_label(schedule: GuidanceSchedule) -> str:
    """'official' while the controls hold a preset exactly; any edit makes it 'custom (from <preset>)'."""
    if is_phases(schedule):
        return "**Schedule: custom phases** (the JSON below; clear it to use the controls above)"
    base = (schedule.source or {}).get("preset", schedule.preset)
    if schedule.preset == "custom":
        return f"**Schedule: custom** (from *{base}*)"
    return f"**Schedule: {schedule.preset}**"


def applicable(preset: str, variant: str, mode: str) -> dict[str, str | None]:
    """For each control, None when it acts on this preset, model and mode, else the reason it does not.
    Read from the preset's own schedule: a scale acts when the schedule derives from it; the switch when a phase
    has one."""
    schedule = guidance_lib.preset_schedule(preset, variant, mode)
    used = set(schedule.scales)
    reasons: dict[str, str | None] = {}
    for name, label in SCALE_LABELS.items():
        if name in used:
            reasons[name] = None
        elif preset == "single pass":
            reasons[name] = f"{label}: unused — *single pass* evaluates one branch, there is nothing to scale."
        elif preset.startswith("distilled +"):
            reasons[name] = (
                f"{label}: unused — *{preset}* keeps only the audio guidance (a step-distill LoRA folded the rest in)."
            )
        elif preset == "faster":
            reasons[name] = f"{label}: unused — *faster* guides every input with the text scale."
        elif name == "scale_i" and "I" in mode:
            reasons[name] = f"{label}: unused — {variant.upper()} guides the image jointly with the text."
        else:
            missing = {"scale_i": "reference image", "scale_a": "voice", "scale_t": "text"}[name]
            reasons[name] = f"{label}: unused — no {missing} in this job ({mode} mode)."
    has_switch = any(p.above is not None for p in schedule.phases)
    reasons["switch"] = None if has_switch else "Switch timestep: only HuMo-17B with image and audio has one."
    return reasons


def disabled_note(reasons: dict[str, str | None]) -> str:
    lines = [r for r in reasons.values() if r]
    return "\n".join(f"- {line}" for line in lines)


# ---------------------------------------------------------------------------------------------- plot
def plot_svg(schedule: GuidanceSchedule, timesteps: Sequence[int], width: int = 560, height: int = 230) -> str:
    """The schedule as it will run: each modality's effective weight per step (lines, left axis), transformer
    passes per step (grey bars, right axis), steps along the bottom with the model's timesteps under them, and a
    legend above the plot area (never clipped by it)."""
    timesteps = [int(t) for t in timesteps]
    weights = schedule.effective_weights(timesteps)
    passes = schedule.passes_per_step(timesteps)
    left, right, top, bottom = 44, 40, 30, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for series in weights.values() for v in series]
    low, high = min(0.0, *values), max(1.0, *values)
    high += (high - low) * 0.05
    steps = len(timesteps)

    def x(i: float) -> float:
        return left + (plot_w * (i / (steps - 1)) if steps > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (high - low))

    most = max(passes)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="Guidance schedule plot" style="width:100%;max-width:{width}px;font:11px sans-serif">']  # fmt: skip
    bar = plot_w / max(1, steps) * 0.7
    for i, n in enumerate(passes):  # passes per step: light bars behind the lines, scaled to the right axis
        h = plot_h * n / (most * 1.15)
        parts.append(f'<rect class="passes" data-passes="{n}" x="{x(i) - bar / 2:.1f}" y="{top + plot_h - h:.1f}" '
                     f'width="{bar:.1f}" height="{h:.1f}" fill="#bbb" fill-opacity="0.35"/>')  # fmt: skip
    for tick in _ticks(low, high):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')  # fmt: skip
    for i in _step_ticks(steps):
        parts.append(f'<text class="step" x="{x(i):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{i + 1}</text>'
                     f'<text class="timestep" x="{x(i):.1f}" y="{top + plot_h + 26}" text-anchor="middle" '
                     f'fill="#777">t={timesteps[i]}</text>')  # fmt: skip
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">step (t = the model\'s '
                 f"timestep)</text>")  # fmt: skip
    parts.append(f'<text x="12" y="{top + plot_h / 2}" transform="rotate(-90 12 {top + plot_h / 2})" '
                 'text-anchor="middle">weight</text>')  # fmt: skip
    parts.append(f'<text x="{width - 4}" y="{top + plot_h / 2}" text-anchor="middle" fill="#777" '
                 f'transform="rotate(90 {width - 4 - 8} {top + plot_h / 2})">passes (max {most})</text>')  # fmt: skip
    for modality, series in weights.items():
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(series))
        parts.append(f'<polyline class="line" data-modality="{modality}" points="{points}" fill="none" '
                     f'stroke="{COLOURS[modality]}" stroke-width="2"/>')  # fmt: skip
    legend_x = left
    for modality in weights:
        parts.append(f'<rect x="{legend_x}" y="8" width="14" height="4" fill="{COLOURS[modality]}"/>'
                     f'<text class="legend" x="{legend_x + 18}" y="14">{modality}</text>')  # fmt: skip
        legend_x += 70
    parts.append(f'<rect x="{legend_x}" y="6" width="10" height="8" fill="#bbb"/>'
                 f'<text class="legend" x="{legend_x + 14}" y="14">passes per step ({sum(passes)} in all)</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _ticks(low: float, high: float) -> list[float]:
    span = high - low
    step = next(s for s in (0.5, 1, 2, 5, 10, 20, 50) if span / s <= 6)
    first = int(low // step) * step
    return [first + k * step for k in range(int(span // step) + 2) if low <= first + k * step <= high]


def _step_ticks(steps: int) -> list[int]:
    """About six labelled steps, first and last included."""
    every = max(1, round(steps / 6))
    ticks = list(range(0, steps, every))
    if ticks[-1] != steps - 1:
        ticks.append(steps - 1)
    return ticks


def describe(schedule: GuidanceSchedule, timesteps: Sequence[int]) -> str:
    """The phases as formulas, with the steps each covers (escaped: it goes into Markdown). A run of phases whose
    weights change by the same amount each step (a linear keyframe ramp, one phase per step) is one line."""
    covered = {id(p): [i + 1 for i, t in enumerate(timesteps) if schedule.phase_for(t) is p] for p in schedule.phases}
    lines = []
    for run in _linear_runs(schedule.phases, covered):
        first, last = run[0], run[-1]
        steps = [s for p in run for s in covered[id(p)]]
        span = f"steps {steps[0]}–{steps[-1]}" if len(steps) > 1 else (f"step {steps[0]}" if steps else
                                                                        "no step on this grid")  # fmt: skip
        when = f"t > {first.above}" if first.above is not None else "else"
        if len(run) == 1:
            lines.append(f"{when} ({span}): {first.formula()}")
        else:
            until = f"t > {last.above}" if last.above is not None else "else"
            lines.append(f"{when} … {until} ({span}): ramps linearly from {first.formula()} to {last.formula()}")
    return html.escape("\n".join(lines))


def _linear_runs(phases, covered: dict) -> list[list]:
    """Consecutive phases, one step each, with the same branches and weights that change by the same amount per
    step, grouped (at least three make a ramp; two stay two lines)."""
    runs: list[list] = []
    for phase in phases:
        run = runs[-1] if runs else None
        if run and _continues(run, phase, covered):
            run.append(phase)
        else:
            runs.append([phase])
    out = []
    for run in runs:  # a "ramp" of two is just two phases
        out.extend([run] if len(run) >= 3 else [[p] for p in run])
    return out


def _continues(run: list, phase, covered: dict) -> bool:
    last = run[-1]
    if len(covered[id(last)]) != 1 or len(covered[id(phase)]) != 1 or covered[id(phase)][0] != covered[id(last)][0] + 1:
        return False
    if last.weights.keys() != phase.weights.keys():
        return False
    if len(run) == 1:
        return True
    step = {b: last.weights[b] - run[-2].weights[b] for b in last.weights}
    return all(abs((phase.weights[b] - last.weights[b]) - d) <= 1e-6 * max(1.0, abs(d)) for b, d in step.items())
