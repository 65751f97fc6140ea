"""Generate tab: inputs, guidance panel, running a job with live progress and Stop.

Layout is built in `build_generate_tab`; every callback is a small function of plain values, tested without a browser.
"""

from __future__ import annotations

import functools
import json
import random
import threading
from dataclasses import dataclass, field, fields

import gradio as gr
import pandas as pd

from engine import guidance as guidance_lib
from engine import registry
from engine.audio import latent_frame_count, snap_frames
from engine.errors import InputError
from engine.generate import GenerationRequest
from engine.pipeline import DEFAULT_FRAMES
from engine.plan import MODE_NAMES, mode_of
from engine.schedulers import DEFAULT_SHIFT, official_timesteps
from studio import admission, advanced, guidance_editor, inputs, live_job, loras, queue_view
from studio.context import StudioContext
from studio.eta import sampling_shift
from studio.jobs import JobProgress, JobResult, planned_frames, stream_job
from studio.models import model_choices, model_labels, untrained
from studio.owners import request_owner
from studio.progress import preview_update
from studio.serving import served_copy
from studio.spaces import on_zero_gpu
from studio.store import LOCAL_OWNER

RESOLUTIONS = {
    "480×832 (landscape, official)": (480, 832),
    "832×480 (portrait)": (832, 480),
    "720×1280 (landscape, official)": (720, 1280),
    "1280×720 (portrait)": (1280, 720),
    "64×64 (HuMo-nano, tiny)": (64, 64),
    "128×128 (tiny)": (128, 128),
    "custom": None,
}
LAST_SETTINGS_KEY = "generate.last"
FIELDS = ["prompt", "image", "audio", "height", "width", "num_frames", "steps", "guidance", "seed", "consent"]
# The generate action's inputs, in the order of the `/generate` API (prompt, image, audio, then settings).
API_INPUTS = ("prompt", "image", "audio", "negative_prompt", "model", "resolution", "height", "width", "frames",
              "steps", "seed", "preset", "scale_t", "scale_i", "scale_a", "switch", "extra_images", "long_video",
              "consent")  # fmt: skip
# Inputs that have an error box next to them (width errors show under the size row, i.e. the height box).
ERROR_FIELDS = ("prompt", "image", "audio", "height", "num_frames", "steps", "guidance", "seed", "consent")


# ---------------------------------------------------------------------------------------------- pure helpers
def audio_summary(audio, max_seconds: float | None = None) -> tuple[str, int | None]:
    """'3.96 s of audio → 97 frames' and the frame count, or a readable error; read from the file's header
    (a 2-hour upload is described, and refused, without decoding it)."""
    try:
        voice = inputs.upload(audio, "audio")
        if voice is None:
            return "No audio: the video follows the text (and the image), frames as set below.", None
        from engine.audio import probe_audio

        info = probe_audio(voice[0], display_name=voice[1])
    except InputError as exc:
        return f"⚠ {exc}", None
    seconds = info.duration_s
    n25 = int(seconds * 25)
    if n25 < 1:
        return "⚠ The audio is shorter than one frame (40 ms).", None
    frames = snap_frames(n25)
    text = f"{seconds:.2f} s of audio → {frames} frames at 25 fps ({latent_frame_count(frames)} latent frames)"
    if max_seconds is not None and seconds > max_seconds:
        text = f"⚠ {voice[1]} is {seconds:.1f} s long; this studio takes voices up to {max_seconds:.0f} s: trim it."
    return text, frames


def voice_check(ctx: StudioContext, audio, frames=0) -> tuple[str, dict]:
    """The voice's line under the inputs and the Long video box's state. A public studio warns on upload, in the
    refusal's own words (studio.admission.frame_cap_message), when the voice sets more frames than it makes (unless
    Frames takes its beginning), and greys out Long video where it cannot fit."""
    from engine.plan import run_frames

    opts = ctx.options
    text, voice = audio_summary(audio, opts.audio_cap_s)
    if voice is not None and not text.startswith("⚠"):
        message = admission.frame_cap_message(opts, run_frames(_int(frames) or None, voice))
        text = f"⚠ {message}  \n{text}" if message else text
    return text, long_video_offer(opts, voice)


def long_video_offer(opts, voice_frames: int | None) -> dict:
    """Long video counts against a public studio's frame cap: offered only where a voice longer than one window
    still fits it (greyed out with the reason otherwise)."""
    if not opts.public:
        return gr.update(interactive=True, info=None)
    cap = opts.max_frames_public
    if cap <= DEFAULT_FRAMES:
        why = f"Not here: this public studio makes at most {cap} frames ({cap / 25:.1f} s), one window."
    elif voice_frames is not None and voice_frames > cap:
        why = f"This voice sets {voice_frames} frames; this public studio makes at most {cap}: trim it."
    else:
        return gr.update(interactive=True, info=None)
    return gr.update(interactive=False, value=False, info=why)


def mode_label(image, extra_images, audio) -> str:
    mode = mode_of([image, extra_images], audio)
    return f"**Mode: {mode}** ({MODE_NAMES[mode]})"


def build_schedule(variant: str, mode: str, preset: str, scale_t, scale_i, scale_a, switch_timestep):
    return guidance_lib.preset_schedule(
        preset, variant, mode, scale_t=scale_t, scale_i=scale_i, scale_a=scale_a, switch_timestep=switch_timestep
    ).validate()


def guidance_plot_data(schedule, steps: int, shift: float = DEFAULT_SHIFT) -> pd.DataFrame:
    """Long-format frame (step, weight, modality) of each modality's effective weight over the steps."""
    timesteps = official_timesteps(max(1, int(steps)), shift)
    weights = schedule.effective_weights(timesteps)
    rows = [
        {"step": i + 1, "weight": float(w), "modality": modality}
        for modality, values in weights.items()
        for i, w in enumerate(values)
    ]
    return pd.DataFrame(rows, columns=["step", "weight", "modality"])


def estimate_text(ctx: StudioContext, model_id: str, schedule, steps: int, frames: int, height: int, width: int,
                  window_frames: int | None = None) -> str:  # fmt: skip
    """Passes per step and the job's time from this machine's measured costs (studio/eta.py). The inputs present
    are read off the schedule's branches (a reference image / the audio is used where some branch uses it)."""
    from studio import eta

    timesteps = official_timesteps(max(1, int(steps)), sampling_shift(model_id))
    passes = schedule.passes_per_step(timesteps)
    per_step = f"{min(passes)}–{max(passes)}" if min(passes) != max(passes) else str(passes[0])
    branches = schedule.all_branches(timesteps)
    references = int(any(b.image == "ref" for b in branches))
    audio = any(b.audio == "on" for b in branches)
    est = eta.estimate(ctx, model_id, schedule, steps, frames, height, width, references, audio, window_frames)
    return f"**{per_step} transformer passes per step** · " + eta.describe(est)


def default_steps(model_id: str) -> int:
    """Sampling steps a model is used with: its registry spec's (distilled students 4, the untrained tiny 8,
    HuMo-nano its evaluated count, the official models 50; a fine-tune its base's)."""
    spec = registry.find_spec(model_id)
    return spec.steps() if spec is not None else 50


def example_rows() -> list[list[str]]:
    """[prompt, image, audio] of the bundled example (assets/examples/cases.json "nano"), for gr.Examples."""
    from engine.components import ASSETS

    cases = json.loads((ASSETS / "examples" / "cases.json").read_text())
    case = cases.get("nano")
    if not case:
        return []
    root = ASSETS.parent
    return [[case["prompt"], str(root / case["img_paths"][0]), str(root / case["audio_path"])]]


def starting_scales(ctx: StudioContext) -> dict:
    """The sliders' first values: the official scales of the default model's variant (1.7B and 17B differ, and
    HuMo-nano samples as 1.7B); a trained checkpoint's variant is only known once loaded, so it starts on 17B's."""
    spec = registry.find_spec(ctx.default_model)
    return guidance_lib.DEFAULT_SCALES[spec.variant if spec else "17b"]


def _variant(ctx: StudioContext, model_id: str | None) -> str:
    spec = registry.find_spec(model_id or ctx.default_model)  # a fine-tune's is its base's: no load needed
    return spec.variant if spec is not None else ctx.pipeline(model_id).variant


def make_request(ctx, prompt, image=None, audio=None, negative_prompt="", model=None, resolution=None, height=None,
                 width=None, frames=0, steps=None, seed=-1, preset="official", scale_t=None, scale_i=None, scale_a=None,
                 switch=None, extra_images=None, long_video=False, consent=None, keyframes=None,
                 phases=None) -> tuple[GenerationRequest, dict[str, str]]:  # fmt: skip
    """A GenerationRequest from the Generate tab's raw values (API_INPUTS, and the page's keyframe table and custom
    phases), and the user's file names by path. The guidance is the editor's schedule (`editor_schedule`).

    Raw: numbers may be text, NaN or out of range, files are Gradio file dicts; every value is read by
    `studio.inputs`, so each bad one gets a message that says what to change."""
    opts = ctx.options
    files = [f for f in (inputs.upload(image, "image"), *inputs.uploads(extra_images, "image")) if f]
    voice = inputs.upload(audio, "audio")
    names = {path: name for path, name in (*files, *([voice] if voice else []))}
    model = inputs.choice(model, _model_ids(ctx), "prompt", "Model", ctx.default_model)
    resolution = inputs.choice(resolution, resolution_choices(ctx), "height", "Resolution", "custom")
    side = max_side(ctx)
    if RESOLUTIONS.get(resolution):
        height, width = RESOLUTIONS[resolution]
    elif _blank(height) or _blank(width):  # API calls may leave the size out: the model's default size
        spec = registry.find_spec(model)
        height, width = spec.default_size if spec is not None else (64, 64)
    height = inputs.number(height, "height", "Height", minimum=16, maximum=side, integer=True)
    width = inputs.number(width, "width", "Width", minimum=16, maximum=side, integer=True)
    frames = inputs.number(frames, "num_frames", "Frames", minimum=0, maximum=opts.frame_cap, integer=True, default=0)
    max_steps = opts.max_steps_public if opts.public else 200
    steps = inputs.number(steps, "steps", "Steps", minimum=1, maximum=max_steps, integer=True,
                          default=min(default_steps(model), max_steps))  # fmt: skip
    seed = inputs.number(seed, "seed", "Seed", minimum=-1, maximum=inputs.MAX_SEED, integer=True, default=-1)
    if opts.public and not inputs.flag(consent):
        raise InputError(
            "Tick the box that you have the right to use this face and this voice before generating.", field="consent"
        )
    mode = mode_of([path for path, _ in files], voice)
    schedule = editor_schedule(ctx, model, mode, steps, preset, scale_t, scale_i, scale_a, switch, keyframes, phases)
    request = GenerationRequest(
        prompt=inputs.text(prompt, "prompt", "prompt"),
        images=[path for path, _ in files],
        audio=voice[0] if voice else None,
        negative_prompt=inputs.text(negative_prompt, "prompt", "negative prompt") or None,
        height=int(height),
        width=int(width),
        num_frames=int(frames) or None,
        num_inference_steps=int(steps),
        seed=None if seed < 0 else int(seed),
        guidance=schedule,
        # long videos: windows of the trained length (97 frames) blended at every step (engine/long_video.py)
        window_frames=97 if inputs.flag(long_video) else None,
    )
    return request, names


def _tab(request) -> str:
    """The page (browser tab) a request comes from: Stop there ends the job started there."""
    return getattr(request, "session_hash", None) or "direct"


def max_side(ctx: StudioContext) -> int:
    return 1280 if ctx.options.public else 4096


def resolution_choices(ctx: StudioContext) -> list[str]:
    """The size presets this studio allows (public mode: none above its pixel cap)."""
    cap = ctx.options.max_pixels_public if ctx.options.public else None
    return [k for k, hw in RESOLUTIONS.items() if cap is None or hw is None or hw[0] * hw[1] <= cap]


def _blank(value) -> bool:
    return value is None or value == "" or value == 0


def _model_ids(ctx: StudioContext) -> list[str]:
    """Models a job may name: those present, the studio's default, and (local mode) finished checkpoints."""
    return model_choices(ctx)


def error_updates(field: str | None, message: str) -> dict[str, str]:
    """Which error box shows a message: the one next to the input that caused it."""
    target = field if field in FIELDS else "prompt"
    if target in ("height", "width"):
        target = "height"
    return {name: (f"⚠ {message}" if name == target else "") for name in ERROR_FIELDS}


def format_progress(event: JobProgress) -> str:
    remaining = f", about {event.remaining_s:.0f} s left" if event.remaining_s is not None else ""
    return f"◔ Generation #{event.generation_id}: {event.message} · {event.elapsed_s:.1f} s elapsed{remaining}"


def format_result(result: JobResult, demo: bool) -> str:
    if result.status == "done":
        note = " — untrained test model: the video is noise" if demo else ""
        return f"✔ Generation #{result.generation_id} done (seed {result.settings.get('seed')}){note}"
    if result.status == "stopped":
        return f"■ Generation #{result.generation_id} stopped: {result.error}"
    return f"✖ Generation #{result.generation_id} failed: {result.error}"


# ---------------------------------------------------------------------------------------------- settings <-> form
# Every value "Use these settings", "Load settings from a video" and a reload put back into the form, by form name.
SETTINGS_FIELDS = ("prompt", "negative_prompt", "model", "resolution", "height", "width", "frames", "steps", "seed",
                   "long_video", "preset", "scale_t", "scale_i", "scale_a", "switch", "keyframes", "phases", "lora_scales",
                   "step_cache", "compile", "attention_backend", "memory_mode", "lora_library")  # fmt: skip
MEDIA_FIELDS = ("image", "extra_images", "audio")
# Page-only inputs of the generate event, after API_INPUTS (the /generate API keeps its 19 inputs).
PAGE_INPUTS = ("keyframes", "phases", "variations", *advanced.FIELDS)
MAX_VARIATIONS = 8


def resolution_of(ctx: StudioContext, height, width) -> str:
    """The size preset naming (height, width), else "custom" (so preset and boxes always agree)."""
    for label in resolution_choices(ctx):
        if RESOLUTIONS.get(label) == (height, width):
            return label
    return "custom"


def form_values(ctx: StudioContext, settings: dict, prompt: str | None = None, negative_prompt: str | None = None,
                model: str | None = None, seed: int | None = None,
                owner: str = LOCAL_OWNER) -> tuple[dict, list[str]]:  # fmt: skip
    """Form values (SETTINGS_FIELDS) that reproduce a run from its stored settings (a gallery row's, or an mp4's),
    and notes on what could not be restored. Never trusted: every value is read as the form's own would be, and
    a bad one is left out with a note rather than put into the form."""
    notes: list[str] = []
    values: dict = {}

    def take(name, read):
        try:
            value = read()
        except (InputError, TypeError, ValueError, KeyError) as exc:
            notes.append(f"{name}: {exc}")
            return
        if value is not None:
            values[name] = value

    take("prompt", lambda: inputs.text(prompt if prompt is not None else settings.get("prompt"), "prompt", "prompt"))
    neg = negative_prompt if negative_prompt is not None else settings.get("negative_prompt")
    take("negative_prompt", lambda: inputs.text(neg or "", "prompt", "negative prompt"))
    model = model or settings.get("model_id")
    if model is not None and model not in _model_ids(ctx):
        notes.append(f"model {str(model)[:60]!r} is not in this studio: the current model is kept")
    elif model is not None:
        values["model"] = model
    side = max_side(ctx)
    take("height", lambda: inputs.number(settings.get("height"), "height", "Height", minimum=16, maximum=side,
                                         integer=True))  # fmt: skip
    take("width", lambda: inputs.number(settings.get("width"), "width", "Width", minimum=16, maximum=side,
                                        integer=True))  # fmt: skip
    if "height" in values and "width" in values:
        values["resolution"] = resolution_of(ctx, values["height"], values["width"])
    long_video = bool(settings.get("window_frames"))
    values["long_video"] = long_video
    frames = None if long_video else settings.get("num_frames")  # a long video's length is the voice's
    take("frames", lambda: inputs.number(frames or 0, "num_frames", "Frames", minimum=0,
                                         maximum=ctx.options.frame_cap, integer=True))  # fmt: skip
    take("steps", lambda: inputs.number(settings.get("num_inference_steps"), "steps", "Steps", minimum=1,
                                        maximum=200, integer=True))  # fmt: skip
    seed = seed if seed is not None else settings.get("seed")
    take("seed", lambda: inputs.number(seed, "seed", "Seed", minimum=-1, maximum=inputs.MAX_SEED, integer=True))
    take("guidance", lambda: values.update(guidance_form_values(settings.get("guidance"))))
    take("advanced options", lambda: values.update(advanced.form_values(settings.get("advanced"))))
    values["lora_library"], library_notes = loras.restore(ctx, settings, owner)  # picked again by name + sha256
    notes += library_notes
    uploaded = [x for x in (settings.get("advanced") or {}).get("loras") or [] if isinstance(x, dict)
                and not str(x.get("file", "")).startswith(loras.PREFIX)]  # fmt: skip
    if uploaded:
        notes.append("LoRA files: add them again (their scales are back)")
    return values, notes


def guidance_form_values(data) -> dict:
    """The editor's values (preset, scales, switch, keyframes) of a stored schedule: from its `source` when the
    editor made it; a CLI preset schedule gives its preset, scales and switch; any other schedule (custom phases,
    a `--guidance-json` file) goes into the custom-phases box as it ran."""
    if not data:
        return {}
    schedule = guidance_editor.stored_schedule(data)  # raises InputError for a malformed one
    source = schedule.source or {}
    scales = source.get("scales") or schedule.scales
    switch = source.get("switch_timestep")
    if switch is None and "switch_timestep" not in source:
        switch = next((p.above for p in schedule.phases if p.above is not None), None)
    preset = source.get("preset") or schedule.preset
    if not _editor_can_make(schedule, preset, scales, switch):
        return {"phases": guidance_editor.phases_text(schedule)}
    editor = guidance_editor.read_state(preset, scales.get("scale_t"), scales.get("scale_i"), scales.get("scale_a"),
                                        switch, source.get("keyframes", []) and
                                        guidance_editor.keyframe_rows(source["keyframes"]))  # fmt: skip
    values = {"preset": editor.preset, "keyframes": keyframe_table(editor.keyframes), "phases": ""}
    values.update({k: v for k, v in editor.scales.items() if v is not None})
    if editor.switch is not None:
        values["switch"] = editor.switch
    return values


def _editor_can_make(schedule, preset, scales, switch) -> bool:
    """Whether the editor's controls give this stored schedule again: one it made (its `source` names a preset),
    or a preset schedule whose phases are exactly that preset's with these scales (what the CLI writes)."""
    if preset not in guidance_lib.GUIDANCE_PRESETS or guidance_editor.is_phases(schedule):
        return False
    if schedule.source:
        return True
    if schedule.variant not in guidance_lib.VARIANTS or schedule.mode not in guidance_lib.MODES:
        return False
    try:
        again = guidance_lib.preset_schedule(preset, schedule.variant, schedule.mode, switch_timestep=switch,
                                             **{k: v for k, v in scales.items() if k in SCALE_NAMES})  # fmt: skip
    except (InputError, TypeError):
        return False
    return [(p.above, p.weights) for p in again.phases] == [(p.above, p.weights) for p in schedule.phases]


SCALE_NAMES = ("scale_t", "scale_i", "scale_a")


def keyframe_table(keyframes) -> list[list]:
    """The keyframe table's value: the rows, or one empty row to type into (an empty table shows no cells)."""
    return guidance_editor.keyframe_rows(keyframes) or [list(EMPTY_KEYFRAME)]


def settings_from_video(ctx: StudioContext, value, owner: str = LOCAL_OWNER) -> tuple[dict, str]:
    """Form values from an mp4 made by this studio or the CLI (its embedded settings), and what was done."""
    from engine.media import read_settings

    try:
        upload = inputs.upload(value, "file")
        if upload is None:
            return {}, ""
        settings = read_settings(upload[0])
    except InputError as exc:
        return {}, f"Could not read that file: {exc}"
    except Exception as exc:  # not a media file ffmpeg can open: say so, never a traceback
        return {}, f"Could not read {upload[1]!r} as a video ({type(exc).__name__})."
    if not settings:
        return {}, f"{upload[1]} has no HuMo settings in it (only videos made by HuMo Studio or its CLI do)."
    values, notes = form_values(ctx, settings, owner=owner)
    text = f"Settings of {upload[1]} loaded (seed {values.get('seed', '?')}); add its image and voice again."
    return values, text + "".join(f"\n- Not restored: {n}" for n in notes)


def form_updates(values: dict, names=SETTINGS_FIELDS) -> list:
    """gr.update()s for `names` in order: a value where one is given, untouched otherwise."""
    return [gr.update(value=values[n]) if n in values else gr.update() for n in names]


# ---------------------------------------------------------------------------------------------- guidance panel
def _grid(ctx: StudioContext, model_id, steps) -> list[int]:
    return [int(t) for t in official_timesteps(max(1, int(steps)), sampling_shift(model_id or ctx.default_model))]


def editor_schedule(ctx, model_id, mode, steps, preset, scale_t, scale_i, scale_a, switch, keyframes, phases=None):
    """The schedule the editor's raw values describe, on the model's timestep grid (InputError if bad); typed
    custom phases, when there are any, instead."""
    steps = inputs.number(steps, "steps", "Steps", minimum=1, maximum=1000, integer=True)
    custom = guidance_editor.parse_phases(phases, _variant(ctx, model_id), mode)
    if custom is not None:
        return custom
    state = guidance_editor.read_state(preset, scale_t, scale_i, scale_a, switch, keyframes)
    return guidance_editor.schedule_of(state, _variant(ctx, model_id), mode, _grid(ctx, model_id, steps))


def guidance_view(ctx, model_id, image, extra_images, audio, preset, scale_t, scale_i, scale_a, switch, keyframes,
                  steps, frames, height, width, phases=None, long_video=False) -> tuple:  # fmt: skip
    """(plot SVG, estimate + formulas, preset label) for the editor's raw values; a bad value leaves the plot and
    says what to change."""
    mode = mode_of([image, extra_images], audio)
    try:
        schedule = editor_schedule(ctx, model_id, mode, steps, preset, scale_t, scale_i, scale_a, switch, keyframes,
                                   phases)  # fmt: skip
        frames = inputs.number(frames, "num_frames", "Frames", minimum=0, maximum=100_000, integer=True, default=0)
        height = inputs.number(height, "height", "Height", minimum=16, maximum=8192, integer=True, default=64)
        width = inputs.number(width, "width", "Width", minimum=16, maximum=8192, integer=True, default=64)
    except InputError as exc:
        return gr.update(), f"⚠ {exc}", gr.update()
    grid = _grid(ctx, model_id, steps)
    plot = guidance_editor.plot_svg(schedule, grid)
    frames, window = planned_frames_of(audio, frames, long_video)
    text = estimate_text(ctx, model_id, schedule, len(grid), frames, height, width, window)
    formulas = guidance_editor.describe(schedule, grid).replace("\n", "  \n")
    return plot, f"{text}\n\n{formulas}", guidance_editor.preset_label(schedule)


def planned_frames_of(audio, frames: int, long_video) -> tuple[int, int | None]:
    """(frames, window_frames) the job will run, as engine.plan counts them: Frames 0 -> the voice's whole length
    (97 without one); Long video -> windows of the trained 97 frames."""
    from engine.plan import header_voice_frames, run_frames

    voice = None
    try:
        upload = inputs.upload(audio, "audio")
        voice = header_voice_frames(upload[0]) if upload else None  # the page's estimate never decodes a voice
    except InputError:  # a bad voice is said next to the audio input; the estimate plans without it
        pass
    return run_frames(int(frames) or None, voice), (DEFAULT_FRAMES if inputs.flag(long_video) else None)


def phases_from_editor(ctx, model_id, image, extra_images, audio, preset, scale_t, scale_i, scale_a, switch, keyframes,
                       steps) -> str:  # fmt: skip
    """The editor's current schedule as custom-phases JSON (the starting point of an edit the controls cannot make)."""
    mode = mode_of([image, extra_images], audio)
    try:
        schedule = editor_schedule(ctx, model_id, mode, steps, preset, scale_t, scale_i, scale_a, switch, keyframes)
    except InputError:
        schedule = guidance_lib.preset_schedule("official", _variant(ctx, model_id), mode)
    return guidance_editor.phases_text(schedule)


def guidance_controls(ctx, preset, model_id, image, extra_images, audio) -> tuple:
    """Sliders that act on this preset, model and mode are live; the others are disabled, with the reason shown."""
    mode = mode_of([image, extra_images], audio)
    try:
        reasons = guidance_editor.applicable(preset or "official", _variant(ctx, model_id), mode)
    except InputError as exc:
        return *(gr.update() for _ in range(4)), f"⚠ {exc}"
    sliders = [gr.update(interactive=reasons[k] is None) for k in ("scale_t", "scale_i", "scale_a", "switch")]
    return *sliders, guidance_editor.disabled_note(reasons)


def guidance_panel(ctx, model_id, image, extra_images, audio, preset, scale_t, scale_i, scale_a, switch, steps,
                   frames, height, width, keyframes=None):  # fmt: skip
    """(plot, estimate) as before the editor (kept for callers that do not show the preset label)."""
    plot, text, _ = guidance_view(ctx, model_id, image, extra_images, audio, preset, scale_t, scale_i, scale_a,
                                  switch, keyframes, steps, frames, height, width)  # fmt: skip
    return plot, text


# ---------------------------------------------------------------------------------------------- layout
# Ctrl+Enter (Cmd+Enter) anywhere on the page presses Generate; a Blocks `js` snippet (runs once on load).
SHORTCUT_JS = """() => { document.addEventListener('keydown', (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
    const button = document.querySelector('#generate'); if (button) { e.preventDefault(); button.click(); } } }); }"""
EXAMPLE_SEED = 0  # the seed of the README's example result
EMPTY_KEYFRAME = ["", None, None, None, ""]  # the table shows one row to type into; blank rows are skipped


@dataclass
class JobInputs:
    """The inputs of one job, by their API names (API_INPUTS) plus the page-only ones."""

    prompt: gr.Textbox
    image: gr.Image
    audio: gr.Audio
    extra_images: gr.File
    negative_prompt: gr.Textbox
    model: gr.Dropdown
    resolution: gr.Dropdown
    height: gr.Number
    width: gr.Number
    frames: gr.Number
    steps: gr.Slider
    seed: gr.Number
    long_video: gr.Checkbox
    consent: gr.Checkbox
    preset: gr.Radio
    scale_t: gr.Slider
    scale_i: gr.Slider
    scale_a: gr.Slider
    switch: gr.Slider
    keyframes: gr.Dataframe
    phases: gr.Code
    variations: gr.Number
    lora_files: gr.File
    lora_scales: gr.Textbox
    step_cache: gr.Number
    compile: gr.Checkbox
    attention_backend: gr.Dropdown
    memory_mode: gr.Dropdown
    lora_partial: gr.Checkbox
    lora_library: gr.Dropdown  # LoRAs picked by name from the owner's library (studio/loras.py)

    def get(self, names) -> list:
        return [getattr(self, n) for n in names]


@dataclass
class GuidanceView:
    label: gr.Markdown
    notes: gr.Markdown
    plot: gr.HTML
    estimate: gr.Markdown
    to_phases: gr.Button


@dataclass
class ResultView:
    run: gr.Button
    stop: gr.Button
    status: gr.Markdown
    stop_info: gr.Markdown
    preview: gr.Video
    video: gr.Video
    gallery_id: gr.Number
    live: gr.Button | None = None  # Generate live (studio/live_job.py), shown for models measured fast enough
    live_video: gr.Video | None = None  # the live result: chunks play as they are made


@dataclass
class FormHelpers:
    mode: gr.Markdown
    audio_info: gr.Markdown
    random_seed: gr.Button
    last_seed: gr.Button
    settings_file: gr.File
    settings_info: gr.Markdown
    restore_info: gr.Markdown
    lora_report: gr.Markdown


@dataclass
class QueueView:
    """The queue list beside the result: the owner's jobs by gallery number; a row clicked is the selected job,
    which the buttons cancel (waiting), stop (running) or move among the owner's waiting jobs."""

    table: gr.Dataframe
    job: gr.Textbox  # the selected job ("#12"; "new 3" before it has a number), filled by clicking a row
    cancel: gr.Button
    stop: gr.Button
    up: gr.Button
    down: gr.Button
    info: gr.Markdown
    timer: gr.Timer


@dataclass
class GenerateTab:
    """The Generate tab's components by role; the app and the gallery wire through these, never by key strings."""

    form: JobInputs
    guidance: GuidanceView
    result: ResultView
    helpers: FormHelpers
    queue: QueueView
    errors: dict[str, gr.Markdown]  # by ERROR_FIELDS
    job_events: list = field(default_factory=list)  # generate events: the gallery refreshes after each
    keys: dict = field(default_factory=dict)  # the keyframe editor's row of inputs and buttons (_keyframe_editor)
    on_load: list = field(default_factory=list)  # (fn, inputs, outputs) the page runs once it has loaded
    runner: JobRunner | None = None
    sweep: dict = field(default_factory=dict)  # the Sweep accordion's components (`_sweep_panel`)
    lora_box: dict = field(default_factory=dict)  # the LoRA library's add/remove components (studio/loras.py)

    def settings_outputs(self) -> list:
        """Components of SETTINGS_FIELDS then MEDIA_FIELDS (what reuse fills)."""
        return self.form.get(SETTINGS_FIELDS + MEDIA_FIELDS)


def _media_inputs(ctx: StudioContext) -> dict:
    c = {"prompt": gr.Textbox(label="Prompt", lines=3, value="", elem_id="prompt",
                              placeholder="Scene, look and action: a young woman in a red coat sings in a snowy street…")}  # fmt: skip
    c["prompt_err"] = gr.Markdown(elem_id="prompt-error")
    with gr.Row():
        c["image"] = gr.Image(label="Reference image (who)", type="filepath", elem_id="image", height=200)
        c["audio"] = gr.Audio(label="Voice (upload or record)", type="filepath", sources=["upload", "microphone"],
                              elem_id="audio")  # fmt: skip
    c["image_err"] = gr.Markdown(elem_id="image-error")
    c["audio_err"] = gr.Markdown(elem_id="audio-error")
    # One line states the mode the inputs give (and what the voice sets); it is filled from the inputs on load.
    c["mode"] = gr.Markdown(mode_line(ctx, None, None, None), elem_id="mode")
    c["audio_info"] = gr.Markdown("", elem_id="audio-info")
    c["restore_info"] = gr.Markdown(elem_id="restore-info")
    return c


def _generate_bar(ctx: StudioContext) -> dict:
    with gr.Row(elem_id="generate-bar"):
        run = gr.Button("Generate (Ctrl+Enter)", variant="primary", elem_id="generate", scale=3)
        live = gr.Button("Generate live", elem_id="generate-live", scale=2,
                         visible=live_job.live_offered(ctx.default_model, live_job.studio_device(ctx)))  # fmt: skip
        stop = gr.Button("Stop", variant="stop", elem_id="stop", scale=1)
    return {"run": run, "stop": stop, "live": live}


def _result_column() -> dict:
    c = {"status": gr.Markdown(elem_id="status"), "stop_info": gr.Markdown(elem_id="stop-info")}
    c["video"] = gr.Video(label="Result", interactive=False, elem_id="result-video", autoplay=True)
    c["queue"] = _queue_panel()  # right under the result, where the user looks (on a phone too)
    # Generate live: each finished chunk (a short mp4 with its voice) is appended while the job runs
    c["live_video"] = gr.Video(label="Live: plays while it is made", streaming=True, autoplay=True,
                               interactive=False, elem_id="live-video")  # fmt: skip
    # the model's predicted clean video while the job runs, with what previews cost (studio/progress.py)
    c["preview"] = gr.Video(label="Denoising preview", interactive=False, height=200, autoplay=True, loop=True,
                            elem_id="preview")  # fmt: skip
    c["gallery_id"] = gr.Number(label="Gallery id", interactive=False, precision=0, elem_id="gallery-id")
    return c


def _size_and_run_settings(ctx: StudioContext, model_choices: list[str]) -> dict:
    c = {}
    with gr.Row():
        c["model"] = gr.Dropdown(model_labels(model_choices), value=ctx.default_model, label="Model", elem_id="model")
        size = start_defaults(ctx).size  # the default model's own (HuMo-nano's 64x64)
        default_res = resolution_of(ctx, *size)
        c["resolution"] = gr.Dropdown(resolution_choices(ctx), value=default_res, label="Resolution",
                                      elem_id="resolution")  # fmt: skip
        side = max_side(ctx)
        c["height"] = gr.Number(label="Height (×16)", value=size[0], precision=0, minimum=16, maximum=side,
                                elem_id="height")  # fmt: skip
        c["width"] = gr.Number(label="Width (×16)", value=size[1], precision=0, minimum=16, maximum=side,
                               elem_id="width")  # fmt: skip
    c["height_err"] = gr.Markdown(elem_id="size-error")
    with gr.Row():
        c["frames"] = gr.Number(label=f"Frames (0 = from the audio; at most {ctx.options.frame_cap})", value=0,
                                precision=0, minimum=0, maximum=ctx.options.frame_cap, elem_id="frames")  # fmt: skip
        c["steps"] = gr.Slider(1, ctx.options.max_steps_public if ctx.options.public else 100, step=1, label="Steps",
                               value=default_steps(ctx.default_model), elem_id="steps")  # fmt: skip
    with gr.Row():
        c["seed"] = gr.Number(label="Seed (-1 = random)", value=-1, precision=0, elem_id="seed")
        c["random_seed"] = gr.Button("Random seed", scale=0, min_width=110, elem_id="random-seed")
        c["last_seed"] = gr.Button("Last seed", scale=0, min_width=100, elem_id="last-seed")
        c["variations"] = gr.Number(label=f"Variations (seeds s, s+1, …; at most {MAX_VARIATIONS})", value=1,
                                    precision=0, minimum=1, maximum=MAX_VARIATIONS, elem_id="variations",
                                    visible=not ctx.options.public)  # fmt: skip
    offer = long_video_offer(ctx.options, None)  # a public studio's frame cap may leave no room for it
    c["long_video"] = gr.Checkbox(label="Long video: as long as the audio, in 97-frame windows blended at every step",
                                  value=False, elem_id="long-video", interactive=offer.get("interactive", True),
                                  info=offer.get("info"))  # fmt: skip
    c["negative_prompt"] = gr.Textbox(label="Negative prompt (empty: the official Wan negative prompt)", lines=2,
                                      value="", elem_id="negative-prompt")  # fmt: skip
    c["extra_images"] = gr.File(label="More reference images (optional, one slot each)", file_count="multiple",
                                file_types=["image"], elem_id="extra-images")  # fmt: skip
    for name in ("num_frames_err", "steps_err", "seed_err"):
        c[name] = gr.Markdown()
    return c


def _guidance_editor(ctx: StudioContext) -> dict:
    scales = starting_scales(ctx)
    c = {
        "preset": gr.Radio(
            list(guidance_lib.GUIDANCE_PRESETS),
            value=start_defaults(ctx).guidance_preset,
            label="Formula (preset)",
            elem_id="preset",
        )
    }
    c["label"] = gr.Markdown("**Schedule: official**", elem_id="schedule-label")
    with gr.Row():
        for name, label, elem in (("scale_t", "Text scale", "scale-t"), ("scale_i", "Image scale", "scale-i"),
                                  ("scale_a", "Audio scale", "scale-a")):  # fmt: skip
            c[name] = gr.Slider(0, 15, value=scales[name], step=0.5, label=f"{label} (at step 1)", elem_id=elem)
        c["switch"] = gr.Slider(900, 999, value=980, step=1, label="Switch timestep (17B: text-dominant while t >)",
                                elem_id="switch")  # fmt: skip
    c["notes"] = gr.Markdown(elem_id="guidance-notes")
    c.update(_keyframe_editor())
    with gr.Accordion("Custom phases (JSON: any schedule the engine runs, as --guidance-json)", open=False):
        c["to_phases"] = gr.Button("Edit as phases (copy the schedule above here)", size="sm", elem_id="to-phases")
        c["phases"] = gr.Code(language="json", value="", interactive=True, elem_id="phases",
                              label="Phases, first match wins: {\"phases\": [{\"above\": t or null, \"weights\": "
                                    "{\"T·I·A\": w, ...}}]}; weights sum to 1; empty = the controls above")  # fmt: skip
    c["plot"] = gr.HTML(elem_id="guidance-plot")
    c["estimate"] = gr.Markdown(elem_id="estimate")
    c["guidance_err"] = gr.Markdown(elem_id="guidance-error")
    return c


def _keyframe_editor() -> dict:
    """The keyframes (a table the page shows) and the row of plain inputs they are typed into, with Add: a user
    types `t950` and gets t950 (a table cell swallowed the first key)."""
    with gr.Group(elem_id="keyframe-editor"):
        c = {"keyframes": gr.Dataframe(
            headers=guidance_editor.KEYFRAME_HEADERS, datatype=["str", "number", "number", "number", "str"],
            value=[EMPTY_KEYFRAME], interactive=False, elem_id="keyframes",
            label="Keyframes: from this step (12) or timestep (t950) on, these scales; blank = keep; 'linear' "
                  "ramps from the previous keyframe. Type one in the row below and press Add")}  # fmt: skip
        with gr.Row(equal_height=True):
            c["key_at"] = gr.Textbox(label="at: step (12) or timestep (t950)", elem_id="key-at", min_width=130)
            for name, label in (("key_t", "text"), ("key_i", "image"), ("key_a", "audio")):
                # text boxes: a blank one keeps the scale (a blank number box sends 0)
                c[name] = gr.Textbox(label=f"{label} scale", placeholder="keep", elem_id=name.replace("_", "-"),
                                     min_width=80)  # fmt: skip
            c["key_segment"] = gr.Dropdown(["hold", "linear"], value="hold", label="from the previous",
                                           elem_id="key-segment", min_width=90)  # fmt: skip
        with gr.Row():
            c["key_add"] = gr.Button("Add keyframe", elem_id="key-add", size="sm", variant="secondary")
            c["key_remove"] = gr.Button("Remove last", elem_id="key-remove", size="sm")
            c["key_clear"] = gr.Button("Clear keyframes", elem_id="key-clear", size="sm")
        c["key_info"] = gr.Markdown(elem_id="key-info")
    return c


def add_keyframe_row(table, at, scale_t, scale_i, scale_a, segment) -> tuple:
    """Add pressed: (table, the inputs emptied, message); a bad row keeps what was typed and says what to change."""
    try:
        rows = guidance_editor.add_keyframe(table, at, scale_t, scale_i, scale_a, segment)
    except InputError as exc:
        return (gr.update(),) * 5 + (f"⚠ {exc}",)
    return rows, "", "", "", "", f"Keyframe {rows[-1][0]} added."


def remove_last_keyframe(table) -> tuple:
    try:
        rows = guidance_editor.keyframe_rows(guidance_editor.parse_keyframes(table))
    except InputError:
        rows = []
    return keyframe_table(rows[:-1]), ""


def _advanced_options(ctx: StudioContext) -> dict:
    """The CLI's speed and LoRA options (studio/advanced.py); a public studio shows none."""
    c = {"lora_files": gr.File(label="LoRA files (.safetensors)", file_count="multiple", file_types=[".safetensors"],
                               elem_id="lora-files")}  # fmt: skip
    c["lora_library"] = gr.Dropdown([], value=[], multiselect=True, label="LoRAs from your library (by name)",
                                    elem_id="lora-library")  # fmt: skip
    c["lora_scales"] = gr.Textbox(label="LoRA scales (one per file, or one for all; files first, then library LoRAs; "
                                  "blank = 1)", elem_id="lora-scales")  # fmt: skip
    c["lora_box"] = {} if ctx.options.public else loras.library_layout()
    c["lora_report"] = gr.Markdown(elem_id="lora-report")  # how much of each file fits the model
    c["lora_partial"] = gr.Checkbox(label="Load LoRAs that only partly apply (the modules that fit)",
                                    elem_id="lora-partial")  # fmt: skip
    with gr.Row():
        c["step_cache"] = gr.Number(label="Step cache threshold (0 = off; 0.05 skips near-repeat steps)", value=0,
                                    minimum=0, maximum=1, elem_id="step-cache")  # fmt: skip
        c["compile"] = gr.Checkbox(label="torch.compile the transformer blocks (first run slower)", elem_id="compile")
    with gr.Row():
        c["attention_backend"] = gr.Dropdown(advanced.backend_choices(ctx.options.device), value="native",
                                             label="Attention backend", elem_id="attention-backend")  # fmt: skip
        c["memory_mode"] = gr.Dropdown(list(advanced.MEMORY_MODES), value="auto", elem_id="memory-mode",
                                       label="Memory mode (auto: chosen from free memory)")  # fmt: skip
    return c


def _sweep_panel() -> dict:
    """The Sweep accordion: one or two settings and their values; Run sweep queues the grid (studio/sweeps.py)."""
    from studio import sweeps

    c = {}
    with gr.Row():
        c["x_axis"] = gr.Dropdown(sweeps.AXIS_CHOICES[1:], value="Audio scale", label="X axis", elem_id="sweep-x-axis")
        c["x_values"] = gr.Textbox(label="X values (comma-separated, e.g. 3, 5, 7.5; prompts: one per line)",
                                   lines=1, elem_id="sweep-x-values")  # fmt: skip
    with gr.Row():
        c["y_axis"] = gr.Dropdown(sweeps.AXIS_CHOICES, value=sweeps.NO_AXIS, label="Y axis", elem_id="sweep-y-axis")
        c["y_values"] = gr.Textbox(label="Y values", lines=1, elem_id="sweep-y-values")
    c["run"] = gr.Button("Run sweep (each cell is a job; then a grid video)", elem_id="sweep-run")
    return c


def _queue_panel() -> dict:
    """The queue list and the buttons that act on the job clicked in it (a Dataframe cannot hold buttons)."""
    with gr.Group(elem_id="queue-panel"):
        c = {"table": gr.Dataframe(headers=queue_view.QUEUE_HEADERS, value=[], interactive=False, wrap=True,
                                   elem_id="queue-table", label="Queue: your jobs by gallery number (click one to "
                                   "cancel, stop or move it)")}  # fmt: skip
        with gr.Row(equal_height=True):
            c["job"] = gr.Textbox(label="Selected job", interactive=False, elem_id="queue-job", scale=1, min_width=90)
            c["cancel"] = gr.Button("Cancel", elem_id="queue-cancel", size="sm", min_width=70)
            c["stop"] = gr.Button("Stop", elem_id="queue-stop", variant="stop", size="sm", min_width=60)
            c["up"] = gr.Button("▲ Up", elem_id="queue-up", size="sm", min_width=60)
            c["down"] = gr.Button("▼ Down", elem_id="queue-down", size="sm", min_width=60)
        c["info"] = gr.Markdown(elem_id="queue-info")
    c["timer"] = gr.Timer(2.0)
    return c


def layout(ctx: StudioContext, model_choices: list[str]) -> GenerateTab:
    """The tab's components, top to bottom: prompt and media, consent (public) and Generate, the result and the
    queue (beside them on wide screens), then the settings, the guidance editor and loading settings from a video."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            media = _media_inputs(ctx)
            # the consent box right above Generate: every visitor's first click needs it (public mode)
            consent = gr.Checkbox(label="I have the right to use this face and this voice (required here; recorded "
                                  "with the video)", value=False, visible=ctx.options.public, elem_id="consent")  # fmt: skip
            consent_err = gr.Markdown(elem_id="consent-error")
            bar = _generate_bar(ctx)
            example_slot = gr.Column()  # filled once the seed box exists (the example sets it too)
        with gr.Column(scale=4, elem_id="result-column"):
            result = _result_column()
            queue = result["queue"]
    with gr.Accordion("Settings", open=True):
        settings = _size_and_run_settings(ctx, model_choices)
    with gr.Accordion("Guidance schedule", open=True):
        guidance = _guidance_editor(ctx)
    with gr.Accordion("Sweep: compare settings side by side (X/Y grid)", open=False, elem_id="sweep"):
        sweep = _sweep_panel()
    with gr.Accordion("Advanced options", open=False, visible=not ctx.options.public):
        options = _advanced_options(ctx)
    with gr.Accordion("Load settings from a video made here", open=False):
        settings_file = gr.File(label="Drop an mp4 from this studio or the CLI", file_types=[".mp4"],
                                elem_id="settings-file")  # fmt: skip
        settings_info = gr.Markdown(elem_id="settings-info")
    all_c = {**media, **settings, **guidance, **options, "consent": consent, "consent_err": consent_err}
    form = JobInputs(**{f.name: all_c[f.name] for f in fields(JobInputs)})
    tab = GenerateTab(
        form=form,
        guidance=GuidanceView(
            guidance["label"], guidance["notes"], guidance["plot"], guidance["estimate"], guidance["to_phases"]
        ),
        result=ResultView(
            bar["run"],
            bar["stop"],
            result["status"],
            result["stop_info"],
            result["preview"],
            result["video"],
            result["gallery_id"],
            bar["live"],
            result["live_video"],
        ),  # fmt: skip
        helpers=FormHelpers(
            media["mode"],
            media["audio_info"],
            settings["random_seed"],
            settings["last_seed"],
            settings_file,
            settings_info,
            media["restore_info"],
            options["lora_report"],
        ),  # fmt: skip
        queue=QueueView(
            queue["table"],
            queue["job"],
            queue["cancel"],
            queue["stop"],
            queue["up"],
            queue["down"],
            queue["info"],
            queue["timer"],
        ),
        errors={k: all_c[f"{k}_err"] for k in ERROR_FIELDS},
        sweep=sweep,
        lora_box=options["lora_box"],
        keys={k: v for k, v in guidance.items() if k.startswith("key_")},
    )
    if rows := example_rows():  # the README's example result is seed 0: clicking the example sets it
        with example_slot:
            examples = gr.Examples(rows, inputs=[form.prompt, form.image, form.audio], api_visibility="private",
                                   label=f"Example (made for HuMo-nano; seed {EXAMPLE_SEED} as in the README)")  # fmt: skip
            examples.dataset.click(lambda: EXAMPLE_SEED, None, form.seed, **PRIVATE)
    return tab


# ---------------------------------------------------------------------------------------------- wiring
PRIVATE = {"queue": False, "api_visibility": "private"}
RAW = {**PRIVATE, "show_progress": "hidden", "preprocess": False}  # form helpers read raw values, like the job


class JobRunner:
    """The generate action and its helpers: a job per click (or per variation), admission, Stop and the queue."""

    def __init__(self, ctx: StudioContext, tab: GenerateTab):
        self.ctx, self.tab = ctx, tab
        # tab -> [(owner, stop event)] of its jobs, running and waiting in the turn line (several per tab now)
        self.stop_events: dict[str, list[tuple[str, threading.Event]]] = {}
        self.gpu_job_stream = _with_gpu_duration(self.job_stream, ctx)

    # -------------------------------------------------------------- one job
    def job_stream(self, tab_id, prompt, image=None, audio=None, negative_prompt="", model=None, resolution=None,
                   height=None, width=None, frames=0, steps=None, seed=-1, preset="official", scale_t=None,
                   scale_i=None, scale_a=None, switch=None, extra_images=None, long_video=False, consent=False,
                   owner=LOCAL_OWNER, keyframes=None, phases=None, options=None, live=False):  # fmt: skip
        """One job of `owner`, as (video, id, status, preview, *errors) updates. On a ZeroGPU Space this runs in a
        forked GPU worker (`_with_gpu_duration`): only picklable values cross, and its Stop is the event's cancel.
        `live`: chunk by chunk (studio/live_job.py); the video updates are then the chunks' segments, for a streaming
        video output, and the finished clip is in the gallery."""
        ctx = self.ctx
        values = dict(zip(API_INPUTS, (prompt, image, audio, negative_prompt, model, resolution, height, width,
                                       frames, steps, seed, preset, scale_t, scale_i, scale_a, switch, extra_images,
                                       long_video, consent), strict=True))  # fmt: skip
        blank = ["" for _ in ERROR_FIELDS]
        if on_zero_gpu():  # a forked worker must never reuse the parent's pooled connections
            ctx.store.engine.dispose(close=False)
        stop = threading.Event()
        mine = (owner, stop)
        self.stop_events.setdefault(tab_id, []).append(mine)  # Stop in this tab, by this owner, ends it when it runs
        try:
            job_request, names = make_request(ctx, **values, keyframes=keyframes, phases=phases)
            options, library_names = loras.with_library(ctx, options, owner)  # picked by name: files
            extra, lora_names = advanced.read_options(ctx.options.public, **options)
            lora_names.update(library_names)
            if ctx.pool is None:  # a Ray worker's machine is not this one: it says so itself
                advanced.check_backend(extra, ctx.options.device)
            remembered = {k: values[k] for k in REMEMBERED if k in values}
            remembered["keyframes"] = keyframe_table(guidance_editor.parse_keyframes(keyframes))
            remembered["phases"] = phases if isinstance(phases, str) else ""
            ctx.store.set_setting(LAST_SETTINGS_KEY, remembered, owner=owner)  # values make_request accepted
            model_id = values["model"] or ctx.default_model
            job = {"owner": owner, "names": {**names, **lora_names}, "consent": True if ctx.options.public else None,
                   "advanced": None if extra.is_default() else extra}  # fmt: skip
            run, chunk_line = (live_job.run_live_job if live else None), ""
            for event in stream_job(ctx, job_request, model_id=model_id, stop_event=stop, run=run,
                                    alive=admission.page_alive(ctx, tab_id), **job):  # fmt: skip
                if isinstance(event, live_job.ChunkReady):
                    chunk_line = event.message + " · "  # kept in front of the next chunk's step progress
                    yield str(event.segment), event.generation_id, event.message, gr.update(), *blank
                elif isinstance(event, JobProgress):
                    ctx.board.progress(tab_id, event.remaining_s)  # the queue list's time for this job
                    ctx.line.progress(event.generation_id, event.remaining_s)
                    preview = preview_update(event)
                    yield None, event.generation_id, chunk_line + format_progress(event), preview, *blank
                else:
                    errors = error_updates(event.field, event.error) if event.status == "failed" else {}
                    video = served_copy(event.video_path) if event.video_path and not live else None
                    status = format_result(event, untrained(model_id))
                    yield video, event.generation_id, status, gr.update(), *[errors.get(k, "") for k in ERROR_FIELDS]
        except InputError as exc:
            yield refusal(exc)
        finally:
            jobs = self.stop_events.get(tab_id, [])
            if mine in jobs:
                jobs.remove(mine)
            if not jobs:
                self.stop_events.pop(tab_id, None)

    # -------------------------------------------------------------- the event
    def on_generate(self, request: gr.Request, prompt, image=None, audio=None, negative_prompt="", model=None,
                    resolution=None, height=None, width=None, frames=0, steps=None, seed=-1, preset="official",
                    scale_t=None, scale_i=None, scale_a=None, switch=None, extra_images=None, long_video=False,
                    consent=False, *page):  # fmt: skip
        """The generate action (also the `/generate` API; settings after the audio are optional there).
        Raw values (the event runs with preprocess=False): `make_request` reads and checks them. `request` comes
        first: Gradio inserts it by position, and the API call has fewer inputs than the page's (`page`: the
        page-only inputs, then the visitor). The visitor's admission ticket (taken by `admit_job`) is given back
        here, in the studio's own process. N variations run as N jobs, seeds s, s+1, …"""
        keyframes, phases, variations, options, visitor = _page_values(page)

        def jobs(owner, entry):
            try:
                seeds = variation_seeds(seed, variations, self.ctx.options.public)
            except InputError as exc:
                yield refusal(exc)
                return
            for index, job_seed in enumerate(seeds):
                if index and self.ctx.board.cancelled(entry):
                    break
                if entry is not None:
                    entry.done = index
                yield from self.gpu_job_stream(_tab(request), prompt, image, audio, negative_prompt, model,
                                               resolution, height, width, frames, steps, job_seed, preset, scale_t,
                                               scale_i, scale_a, switch, extra_images, long_video, consent,
                                               owner=owner, keyframes=keyframes, phases=phases,
                                               options=options)  # fmt: skip

        yield from self.listed(request, visitor, jobs)

    def on_live(self, request: gr.Request, *args):
        """Generate live (also the `/generate_live` API): one job, made chunk by chunk, whose chunks reach the page
        (a streaming video) as they finish; same inputs and admission as Generate, no variations."""
        values, page = args[: len(API_INPUTS)], args[len(API_INPUTS) :]
        keyframes, phases, _, options, visitor = _page_values(page)

        def job(owner, entry):
            yield from self.gpu_job_stream(_tab(request), *values, owner=owner, keyframes=keyframes, phases=phases,
                                           options=options, live=True)  # fmt: skip

        yield from self.listed(request, visitor, job)

    def listed(self, request: gr.Request, visitor, body):
        """The frame every job button's event shares (Generate, Generate live, Run sweep): who the visitor is (an
        id the studio did not issue is refused), the job on the queue list (cancelled while it waited: it ends
        here), and whatever happens, its entry off the list and the visitor's admission ticket back.
        `body(owner, entry)` yields the event's outputs."""
        ctx = self.ctx
        try:
            owner = request_owner(ctx.options.public, request, visitor, ctx.visitor_key)
        except InputError as exc:
            yield refusal(exc)
            return
        entry = ctx.board.start(owner, getattr(request, "session_hash", None))
        try:
            if ctx.board.cancelled(entry):
                yield None, None, "Your job was cancelled before it started.", gr.update(), *_blank_errors()
                return
            yield from body(owner, entry)
        finally:
            ctx.board.finish(entry)
            admission.release(ctx, owner)

    def admit_job(self, request: gr.Request, *args):
        """Runs when the request arrives, before it waits in the queue (public mode: one job per visitor); notes
        the job on the board so the page lists it while it waits."""
        ctx = self.ctx
        keyframes, phases, variations, _, visitor = _page_values(args[len(API_INPUTS) :])
        session = getattr(request, "session_hash", None)
        try:
            owner = request_owner(ctx.options.public, request, visitor, ctx.visitor_key)
            address = admission.client_address(request, ctx.options.trusted_proxies)
            refusal_text = admission.admit(ctx, owner, address, session)
        except InputError as exc:
            refusal_text = str(exc)
        checks = [gr.validate(True, "") for _ in args]
        if refusal_text and checks:
            checks[0] = gr.validate(False, refusal_text)
        elif checks:
            prompt = args[0] if isinstance(args[0], str) else ""
            count = variations if isinstance(variations, int) and 1 <= variations <= MAX_VARIATIONS else 1
            values = dict(zip(API_INPUTS, args, strict=False))
            ctx.board.arrive(owner, session, prompt, count, seconds=waiting_estimate(ctx, values, keyframes, phases))
        return checks

    def on_stop(self, request: gr.Request, visitor=None):
        """Stop this tab's job: only its owner's Stop counts (a session hash alone stops nothing of anyone's)."""
        try:
            owner = self.owner(request, visitor)
        except InputError as exc:
            return f"✖ {exc}"
        running = self.ctx.line.running
        jobs = [e for o, e in self.stop_events.get(_tab(request), []) if o == owner]
        if self.ctx.pool is not None or on_zero_gpu():  # no turn line here: this tab's job is the one it runs
            event = jobs[0] if jobs else None
        else:  # the tab's job that holds the turn; its waiting ones are cancelled from the queue list
            event = next((e for e in jobs if running is not None and running.stop_event is e), None)
        if event is None:
            return "Nothing is running in this tab (a waiting job is cancelled from the queue list)."
        self.ctx.board.stop_running(getattr(request, "session_hash", None))  # and no further variation
        event.set()
        return "■ Stopping at the next step…"

    # -------------------------------------------------------------- queue list
    def owner(self, request, visitor) -> str:
        return request_owner(self.ctx.options.public, request, visitor, self.ctx.visitor_key)

    def queue_rows(self, request: gr.Request, visitor=None):
        self.ctx.board.prune(self.ctx.session_in_queue)
        ctx = self.ctx
        return queue_view.queue_rows(ctx.line, ctx.board, ctx.store, self.owner(request, visitor))

    def select_job(self, evt: gr.SelectData, request: gr.Request, visitor=None):
        """A row clicked in the queue list: its job is the one the buttons act on (named on them)."""
        row = getattr(evt, "row_value", None) or []
        job = str(row[0]) if row else ""
        if queue_view.job_key(job) is None:
            return "", gr.update(value="Cancel"), gr.update(value="Stop"), ""
        running = len(row) > 4 and row[4] == "running"
        label = job if job.startswith("#") else "it"
        return (job, gr.update(value=f"Cancel {label}"), gr.update(value=f"Stop {label}"),
                f"Selected {job}: {'running, Stop ends it' if running else 'Cancel, ▲ or ▼ acts on it'}.")  # fmt: skip

    def queue_action(self, action: str, request: gr.Request, job, visitor=None):
        """Cancel (waiting), Stop (running), up or down (among the owner's waiting jobs) on the selected job; only
        the owner's own jobs are found (another's number reads as unknown). Returns (message, the list)."""
        ctx = self.ctx
        owner = self.owner(request, visitor)
        key = queue_view.job_key(job)
        if key is None:
            message = "Click a job of yours in the list first."
        elif key[0] == "new":  # not checked yet (no gallery number): only Cancel applies
            message = ctx.board.cancel(owner, key[1]) if action == "cancel" else "That job has no number yet."
            if message.endswith("it will not run.") and ctx.options.public:
                admission.release(ctx, owner)  # its slot is free now; the event ends at once when it starts
        elif action == "cancel":
            message = ctx.line.cancel(owner, key[1])
        elif action == "stop":
            message = ctx.line.stop(owner, key[1])
        else:
            message = ctx.line.move(owner, key[1], -1 if action == "up" else 1)
        return message, queue_view.queue_rows(ctx.line, ctx.board, ctx.store, owner)

    def last_seed(self, request: gr.Request, visitor=None):
        rows, _ = self.ctx.store.list_generations(page=1, page_size=1, owner=self.owner(request, visitor))
        return rows[0].seed if rows and rows[0].seed is not None else gr.update()


def _page_values(page) -> tuple:
    """(keyframes, phases, variations, advanced options by name, visitor) from the values after API_INPUTS: the
    page sends PAGE_INPUTS and the visitor, the API none of them."""
    page = list(page) + [None] * (len(PAGE_INPUTS) + 1 - len(page))
    values = dict(zip(PAGE_INPUTS, page, strict=False))
    keyframes, phases, variations, visitor = (values["keyframes"], values["phases"], values["variations"],
                                              page[len(PAGE_INPUTS)])  # fmt: skip
    options = {k: values[k] for k in advanced.FIELDS}
    try:
        count = inputs.number(variations, "seed", "Variations", minimum=1, maximum=MAX_VARIATIONS, integer=True,
                              default=1)  # fmt: skip
    except InputError:
        count = variations  # variation_seeds says what is wrong, next to the seed
    return keyframes, phases, count, options, visitor


def waiting_estimate(ctx: StudioContext, values: dict, keyframes, phases) -> float | None:
    """Seconds one job of these raw values will take, for the queue list while it waits: measured costs only (no
    model work in a validator), None when this model has not run here yet or a value is bad (the job says so)."""
    from studio import eta

    model_id = values.get("model") or ctx.default_model
    if not isinstance(model_id, str) or eta.costs_of(ctx, model_id) is None:
        return None
    try:
        request, _ = make_request(ctx, **values, keyframes=keyframes, phases=phases)
        return eta.estimate_request(ctx, request, planned_frames(request, from_header=True), model_id).total_s
    except Exception:  # an estimate never refuses a job: validate_request does, with its message
        return None


def variation_seeds(seed, variations, public: bool = False) -> list:
    """Seeds of N variations: s, s+1, …; a random s (-1) is drawn once here so the N videos differ only by it.
    A public studio admits one job per visitor, so one click makes one video there."""
    count = inputs.number(variations, "seed", "Variations", minimum=1, maximum=MAX_VARIATIONS, integer=True,
                          default=1)  # fmt: skip
    if public and count > 1:
        raise InputError("This public studio makes one video per job: set Variations to 1.", field="seed")
    if count == 1:
        return [seed]
    start = inputs.number(seed, "seed", "Seed", minimum=-1, maximum=inputs.MAX_SEED - MAX_VARIATIONS, integer=True,
                          default=-1)  # fmt: skip
    start = random.randint(0, 2**31 - 1) if start < 0 else start
    return [start + i for i in range(count)]


def _blank_errors() -> list:
    return ["" for _ in ERROR_FIELDS]


def refusal(exc: InputError) -> tuple:
    errors = error_updates(exc.field, str(exc))
    return None, None, f"✖ {exc}", gr.update(), *[errors[k] for k in ERROR_FIELDS]


def wire_generate(runner: JobRunner, tab: GenerateTab, visitor: gr.BrowserState) -> None:
    """Generate (page, with the page-only inputs and the visitor), the hidden `/generate` API, and Stop."""
    api_inputs = tab.form.get(API_INPUTS)
    outputs = [tab.result.video, tab.result.gallery_id, tab.result.status, tab.result.preview,
               *[tab.errors[k] for k in ERROR_FIELDS]]  # fmt: skip
    from studio.pool import job_slots  # issue 31: with --ray many jobs go on to the pool at once

    job = {**job_concurrency(runner.ctx, job_slots(runner.ctx)), "preprocess": False,
           "validator": runner.admit_job}  # fmt: skip
    # trigger_mode="multiple": a second click queues a second job (listed below) instead of being ignored
    run_event = tab.result.run.click(runner.on_generate, api_inputs + tab.form.get(PAGE_INPUTS) + [visitor],
                                     outputs, api_visibility="private", trigger_mode="multiple", **job)  # fmt: skip
    # The public API: (prompt, image, audio, then optional settings) -> (video, gallery id, status, ...).
    # An API client is its own visitor (its session), so it sees only what it made.
    api = gr.Button(visible=False)
    api_event = api.click(runner.on_generate, api_inputs, outputs, api_name="generate", **job)
    # Generate live: the same inputs and admission, its chunks into the streaming video (page and `/generate_live`)
    live_outputs = [tab.result.live_video, *outputs[1:]]
    live_event = tab.result.live.click(runner.on_live, api_inputs + tab.form.get(PAGE_INPUTS) + [visitor],
                                       live_outputs, api_name="generate_live", **job)  # fmt: skip
    device = live_job.studio_device(runner.ctx)
    tab.form.model.change(lambda m: gr.update(visible=live_job.live_offered(m, device)), tab.form.model,
                          tab.result.live, **PRIVATE)  # fmt: skip
    tab.job_events += [run_event, api_event, live_event]
    for button in (tab.result.run, tab.result.live):  # a new job: an old "Stopping…" line no longer applies
        button.click(lambda: "", None, tab.result.stop_info, **PRIVATE)
    for event in tab.job_events:
        event.then(lambda: "", None, tab.result.stop_info, **PRIVATE)
    # Stop sets the job's event (next step); under ZeroGPU the job runs in a forked worker, so Stop also cancels
    # the event, which closes the generator and ends the worker.
    tab.result.stop.click(runner.on_stop, [visitor], [tab.result.stop_info], cancels=[run_event] if on_zero_gpu() else None,
                          **PRIVATE)  # fmt: skip


def job_concurrency(ctx: StudioContext, pool_slots: int) -> dict:
    """How many generate events run their callback at once. In this process: up to LINE_SLOTS, so a waiting job
    has its gallery row (its number) and waits in the studio's turn line, which the queue list shows and an owner
    reorders; the turn still runs one job at a time. A ZeroGPU Space asks a GPU slot per running callback: one.
    With a Ray pool: the pool's slots."""
    if ctx.pool is not None:
        return {"concurrency_id": "pool", "concurrency_limit": pool_slots}
    if on_zero_gpu():
        return {"concurrency_id": "gpu", "concurrency_limit": 1}
    return {"concurrency_id": "jobs", "concurrency_limit": LINE_SLOTS}


LINE_SLOTS = 8  # jobs that wait in the turn line with their number; each holds two threads of Gradio's 40


def wire_queue(runner: JobRunner, tab: GenerateTab, visitor: gr.BrowserState) -> None:
    q = tab.queue
    outputs = [q.info, q.table]
    q.timer.tick(runner.queue_rows, [visitor], [q.table], show_progress="hidden", **PRIVATE)
    q.table.select(runner.select_job, [visitor], [q.job, q.cancel, q.stop, q.info], **PRIVATE)
    for button, action in ((q.cancel, "cancel"), (q.stop, "stop"), (q.up, "up"), (q.down, "down")):
        button.click(_queue_button(runner, action), [q.job, visitor], outputs, **PRIVATE)
    for event in tab.job_events:
        event.then(runner.queue_rows, [visitor], [q.table], **PRIVATE)


def _queue_button(runner: JobRunner, action: str):
    """A queue button's callback (its own signature: Gradio finds the request by annotation, not in a partial)."""

    def act(request: gr.Request, job, visitor=None):
        return runner.queue_action(action, request, job, visitor)

    return act


def wire_form(ctx: StudioContext, runner: JobRunner, tab: GenerateTab, visitor: gr.BrowserState) -> None:
    """Helpers that keep the form consistent: mode line, audio length, size preset <-> boxes, seeds, mp4 load."""
    f, h = tab.form, tab.helpers
    media = [f.image, f.extra_images, f.audio]
    for comp in media:
        comp.change(lambda i, e, a: mode_line(ctx, i, e, a), media, h.mode, **RAW)
    for comp in (f.image, f.audio):
        comp.change(restore_note, [f.image, f.audio], h.restore_info, **RAW)
    for comp in (f.audio, f.frames):  # the voice's line (and its public-cap warning) before Generate is pressed
        comp.change(lambda a, n: voice_check(ctx, a, n), [f.audio, f.frames], [h.audio_info, f.long_video], **RAW)
    # user edits only (.input): values put in by reuse or a reload must not be overwritten by these
    f.resolution.input(lambda r: size_of(r), f.resolution, [f.height, f.width], **RAW)
    for box in (f.height, f.width):
        box.input(lambda hh, ww: resolution_of(ctx, _int(hh), _int(ww)), [f.height, f.width], f.resolution, **RAW)
    h.random_seed.click(lambda: random.randint(0, 2**31 - 1), None, f.seed, **PRIVATE)
    f.lora_files.change(lambda files, model: advanced.lora_report_text(ctx.pipeline(model or None), files) if files
                        else "", [f.lora_files, f.model], h.lora_report, **RAW)  # fmt: skip
    h.last_seed.click(runner.last_seed, [visitor], f.seed, **PRIVATE)

    def load_video(request: gr.Request, value):
        owner = LOCAL_OWNER if ctx.options.public else request_owner(False, request)  # the library's owner
        values, text = settings_from_video(ctx, value, owner)
        return *form_updates(values), text

    h.settings_file.upload(load_video, h.settings_file, [*f.get(SETTINGS_FIELDS), h.settings_info], **RAW)


def wire_guidance(ctx: StudioContext, tab: GenerateTab) -> list:
    """The plot, estimate and preset label follow every editor, model, media and size change; a preset or model
    picked by the user puts its scales on the sliders. Returns (fn, inputs, outputs) for the page load."""
    f, g = tab.form, tab.guidance
    view_inputs = [f.model, f.image, f.extra_images, f.audio, f.preset, f.scale_t, f.scale_i, f.scale_a, f.switch,
                   f.keyframes, f.steps, f.frames, f.height, f.width, f.phases, f.long_video]  # fmt: skip
    view_outputs = [g.plot, g.estimate, g.label]

    def view(*a):
        return guidance_view(ctx, *a)

    for comp in view_inputs:
        comp.change(view, view_inputs, view_outputs, **RAW)
    g.to_phases.click(lambda *a: phases_from_editor(ctx, *a), view_inputs[:11], f.phases, **RAW)
    k = tab.keys
    k["key_add"].click(add_keyframe_row, [f.keyframes, k["key_at"], k["key_t"], k["key_i"], k["key_a"],
                                          k["key_segment"]],
                       [f.keyframes, k["key_at"], k["key_t"], k["key_i"], k["key_a"], k["key_info"]], **RAW)  # fmt: skip
    k["key_at"].submit(add_keyframe_row, [f.keyframes, k["key_at"], k["key_t"], k["key_i"], k["key_a"],
                                          k["key_segment"]],
                       [f.keyframes, k["key_at"], k["key_t"], k["key_i"], k["key_a"], k["key_info"]], **RAW)  # fmt: skip
    k["key_remove"].click(remove_last_keyframe, f.keyframes, [f.keyframes, k["key_info"]], **RAW)
    k["key_clear"].click(lambda: (keyframe_table([]), ""), None, [f.keyframes, k["key_info"]], **PRIVATE)
    for event in tab.job_events:  # after a run the estimate is this run's measured costs (wire_generate came first)
        event.then(view, view_inputs, view_outputs, **RAW)
    control_inputs = [f.preset, f.model, f.image, f.extra_images, f.audio]
    control_outputs = [f.scale_t, f.scale_i, f.scale_a, f.switch, g.notes]
    for comp in control_inputs:
        comp.change(lambda *a: guidance_controls(ctx, *a), control_inputs, control_outputs, **RAW)
    # .input: a restored preset keeps its restored scales (the old reuse bug)
    f.preset.input(lambda p, m, i, e, a: preset_scales(ctx, p, m, i, e, a), control_inputs,
                   [f.scale_t, f.scale_i, f.scale_a], **RAW)  # fmt: skip
    # a model picked by the user brings its own steps, preset (and its scales) and size
    f.model.input(lambda m, i, e, a: model_defaults(ctx, m, i, e, a), [f.model, f.image, f.extra_images, f.audio],
                  [f.steps, f.preset, f.scale_t, f.scale_i, f.scale_a, f.resolution, f.height, f.width], **RAW)  # fmt: skip
    return [(view, view_inputs, view_outputs), (lambda *a: guidance_controls(ctx, *a), control_inputs, control_outputs)]


def build_generate_tab(ctx: StudioContext, model_choices: list[str], visitor: gr.BrowserState,
                       more_jobs=()) -> GenerateTab:  # fmt: skip
    """Builds and wires the tab. `visitor`: the page's anonymous visitor id (public mode). The form starts empty
    for everyone; each visitor's own last settings are filled in on page load (`wire_page_load`). `more_jobs`:
    wire functions of other job buttons on this tab (the Sweep, studio/tab_sweep.py), wired before the queue and
    the form so their events refresh what Generate's do."""
    tab = layout(ctx, model_choices)
    runner = JobRunner(ctx, tab)
    wire_generate(runner, tab, visitor)
    for wire in more_jobs:
        wire(runner, tab, visitor)
    wire_queue(runner, tab, visitor)
    wire_form(ctx, runner, tab, visitor)
    tab.on_load = wire_guidance(ctx, tab)  # the panel's first draw
    tab.runner = runner
    return tab


def wire_page_load(ctx: StudioContext, tab: GenerateTab, opened, visitor: gr.BrowserState) -> None:
    """After the page has its visitor id: the owner's last settings (and inputs), then the panel's first draw."""
    outputs = [*tab.form.get(REMEMBERED), *tab.form.get(MEDIA_FIELDS), tab.helpers.restore_info]

    def restore(request: gr.Request, visitor=None):
        return restore_last_settings(ctx, request_owner(ctx.options.public, request, visitor, ctx.visitor_key))

    restored = opened.then(restore, [visitor], outputs, **PRIVATE)
    if tab.lora_box and not ctx.options.public:  # the owner's LoRA library
        loras.wire_library(ctx, tab.lora_box, tab.form.lora_library, opened)
    for fn, fn_inputs, fn_outputs in tab.on_load:
        restored.then(fn, fn_inputs, fn_outputs, preprocess=False, **PRIVATE)
    f = tab.form
    restored.then(lambda i, e, a: mode_line(ctx, i, e, a), [f.image, f.extra_images, f.audio], tab.helpers.mode,
                  preprocess=False, **PRIVATE)  # fmt: skip


def mode_line(ctx: StudioContext, image, extra_images, audio) -> str:
    """The one line that states the mode from the inputs (the voice's length and frames show under it). A voice
    that cannot be read (from its header) is no voice: the line never says TIA for it."""
    unreadable = bool(audio) and audio_summary(audio)[1] is None
    label = mode_label(image, extra_images, None if unreadable else audio)
    if unreadable:
        return f"{label} · ⚠ the voice could not be read (see under the inputs): replace it"
    return label if audio else f"{label} · no voice: the frames are set below"


def restore_note(image, audio):
    """The reload's "add the reference image and the voice again" goes once both are there again."""
    return "" if image and audio else gr.update()


def size_of(resolution) -> tuple:
    hw = RESOLUTIONS.get(resolution) if isinstance(resolution, str) else None
    return (hw[0], hw[1]) if hw else (gr.update(), gr.update())


def _int(value):
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


REMEMBERED = [k for k in API_INPUTS if k not in ("image", "audio", "model", "extra_images", "long_video", "consent")]
REMEMBERED += ["keyframes", "phases"]


def restore_last_settings(ctx: StudioContext, owner: str) -> list:
    """Values of `owner`'s last run (kept in the store, so they survive restarts and page reloads), its inputs
    when its newest gallery row is that run, and a line that says what was (not) put back."""
    last = ctx.store.get_setting(LAST_SETTINGS_KEY, {}, owner=owner) or {}
    settings = [gr.update(value=last[k]) if last.get(k) is not None else gr.update() for k in REMEMBERED]
    media, note = [gr.update() for _ in MEDIA_FIELDS], ""
    if last:
        rows, _ = ctx.store.list_generations(page=1, page_size=1, owner=owner)
        files = _served_inputs(ctx, rows[0]) if rows and rows[0].prompt == (last.get("prompt") or "").strip() else {}
        if files:
            media = [gr.update(value=files.get(k)) for k in MEDIA_FIELDS]
            note = "Your last settings and inputs are back."
        else:
            note = "Your last settings are back; add the reference image and the voice again."
    return [*settings, *media, note]


def _served_inputs(ctx: StudioContext, row) -> dict:
    """{"image", "extra_images", "audio"} of a gallery row's stored inputs, as copies the page may show."""
    from studio.serving import served_copy

    paths = [served_copy(ctx.store.abs_path(p)) for p in (row.input_paths or [])]
    paths = [p for p in paths if p]
    audio_ext = (".wav", ".mp3", ".m4a", ".flac", ".ogg", ".mp4", ".aac", ".webm")
    images = [p for p in paths if not p.lower().endswith(audio_ext)]
    audio = next((p for p in paths if p.lower().endswith(audio_ext)), None)
    return {"image": images[0] if images else None, "extra_images": images[1:] or None, "audio": audio}


def start_defaults(ctx: StudioContext):
    """The default model's sampling defaults (engine.defaults.SamplingDefaults): the form's first values."""
    from engine.defaults import SamplingDefaults

    spec = registry.find_spec(ctx.default_model)
    return spec.sampling_defaults() if spec is not None else SamplingDefaults()


def model_defaults(ctx, model_id, image, extra_images, audio) -> tuple:
    """The controls a picked model puts its own defaults in: (steps, preset, scale_t, scale_i, scale_a, resolution,
    height, width): its steps (a student's 4), its guidance preset with that preset's scales for the mode (a
    student's single pass), its size (HuMo-nano's 64x64). What `pipe(...)` would use for what the form leaves out."""
    spec = registry.find_spec(model_id or ctx.default_model)
    if spec is None:
        return (gr.update(),) * 8
    defaults = spec.sampling_defaults()
    steps = min(defaults.num_inference_steps, ctx.options.max_steps_public if ctx.options.public else 100)
    scales = preset_scales(ctx, defaults.guidance_preset, model_id, image, extra_images, audio)
    height, width = defaults.size
    return steps, defaults.guidance_preset, *scales, resolution_of(ctx, height, width), height, width


def preset_scales(ctx, preset, model_id, image, extra_images, audio):
    """The scales a preset starts from, for the sliders."""
    mode = mode_of([image, extra_images], audio)
    schedule = guidance_lib.preset_schedule(preset, _variant(ctx, model_id), mode)
    defaults = guidance_lib.DEFAULT_SCALES[schedule.variant]
    scales = {**defaults, **schedule.scales}
    return scales.get("scale_t"), scales.get("scale_i"), scales.get("scale_a")


def job_gpu_seconds(ctx: StudioContext, *args, **kwargs) -> int:
    """The ZeroGPU slot for one call of the generate action (same arguments): sized from the job's real frames
    (the audio's, from its header), guidance passes, windows and size; InputError when no slot is long enough."""
    from studio.jobs import job_cost
    from studio.spaces import gpu_seconds

    values = {**dict(zip(("tab", *API_INPUTS), args)), **kwargs}
    job, _ = make_request(ctx, **{k: values[k] for k in (*API_INPUTS, "keyframes", "phases") if k in values})
    model_id = values.get("model") or ctx.default_model
    return gpu_seconds(job_cost(ctx, job, planned_frames(job), model_id))


def _with_gpu_duration(fn, ctx):
    """On a Hugging Face Space with ZeroGPU, request a GPU slot sized to the job; elsewhere, the function itself."""
    from studio.spaces import gpu_wrap

    return gpu_wrap(fn, functools.partial(job_gpu_seconds, ctx))


__all__ = [
    "build_generate_tab",
    "wire_page_load",
    "GenerateTab",
    "form_values",
    "settings_from_video",
    "audio_summary",
    "mode_label",
    "guidance_plot_data",
    "estimate_text",
    "make_request",
    "error_updates",
]
