"""Generate tab: inputs, guidance panel, running a job with live progress and Stop.

Layout is built in `build_generate_tab`; every callback is a small function of plain values, tested without a browser.
"""

from __future__ import annotations

import json
import random
import threading

import gradio as gr
import pandas as pd

from engine import guidance as guidance_lib
from engine import registry
from engine.audio import num_video_frames, snap_frames
from engine.errors import InputError
from engine.generate import GenerationRequest
from engine.pipeline import DEFAULT_FRAMES, mode_from_inputs
from engine.schedulers import DEFAULT_SHIFT, official_timesteps
from studio.context import StudioContext
from studio.jobs import JobProgress, JobResult, stream_job

RESOLUTIONS = {
    "480×832 (landscape, official)": (480, 832),
    "832×480 (portrait)": (832, 480),
    "720×1280 (landscape, official)": (720, 1280),
    "1280×720 (portrait)": (1280, 720),
    "64×64 (HuMo-nano, tiny)": (64, 64),
    "128×128 (tiny)": (128, 128),
    "custom": None,
}
PRESETS = list(guidance_lib.GUIDANCE_PRESETS)
LAST_SETTINGS_KEY = "generate.last"
FIELDS = ["prompt", "image", "audio", "height", "width", "num_frames", "steps", "guidance", "seed"]
# The generate action's inputs, in the order of the `/generate` API (prompt, image, audio, then settings).
API_INPUTS = ("prompt", "image", "audio", "negative_prompt", "model", "resolution", "height", "width", "frames",
              "steps", "seed", "preset", "scale_t", "scale_i", "scale_a", "switch", "extra_images", "long_video")  # fmt: skip
# Inputs that have an error box next to them (width errors show under the size row, i.e. the height box).
ERROR_FIELDS = ("prompt", "image", "audio", "height", "num_frames", "steps", "guidance", "seed")


# ---------------------------------------------------------------------------------------------- pure helpers
def audio_summary(audio_path: str | None) -> tuple[str, int | None]:
    """'3.96 s of audio → 97 frames' and the frame count, or a readable error."""
    if not audio_path:
        return "No audio: text + image (TI) mode, frames as set below.", None
    from engine.audio import load_audio

    try:
        waveform = load_audio(audio_path)
    except InputError as exc:
        return f"⚠️ {exc}", None
    seconds = len(waveform) / 16000
    n25 = num_video_frames(len(waveform))
    if n25 < 1:
        return "⚠️ The audio is shorter than one frame (40 ms).", None
    frames = snap_frames(n25)
    return f"{seconds:.2f} s of audio → {frames} frames at 25 fps ({(frames - 1) // 4 + 1} latent frames)", frames


def mode_label(image, extra_images, audio) -> str:
    has_image = bool(image) or bool(extra_images)
    mode = mode_from_inputs(has_image, bool(audio))
    names = {"TIA": "text + image + audio", "TA": "text + audio", "TI": "text + image", "T": "text only"}
    return f"**Mode: {mode}** ({names[mode]})"


def build_schedule(variant: str, mode: str, preset: str, scale_t, scale_i, scale_a, switch_timestep):
    return guidance_lib.preset_schedule(
        preset, variant, mode, scale_t=scale_t, scale_i=scale_i, scale_a=scale_a, switch_timestep=switch_timestep
    ).validate()


def sampling_shift(model_id: str) -> float:
    """The flow shift a model samples with (its timestep grid, on which the schedule's switch step falls)."""
    spec = registry.MODELS.get(model_id)
    return spec.flow_shift if spec else DEFAULT_SHIFT


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


def estimate_text(ctx: StudioContext, model_id: str, schedule, steps: int, frames: int, height: int, width: int) -> str:
    timesteps = official_timesteps(max(1, int(steps)), sampling_shift(model_id))
    passes = schedule.passes_per_step(timesteps)
    total = sum(passes)
    per_step = f"{min(passes)}–{max(passes)}" if min(passes) != max(passes) else str(passes[0])
    text = f"**{per_step} transformer passes per step**, {total} in all"
    measured = ctx.seconds_per_pass.get(model_id)
    if measured:
        seconds_per_pass, tokens = measured
        scale = max(1, frames * height * width) / tokens
        text += f" · estimated {seconds_per_pass * total * scale:.0f} s (measured on this machine)"
    else:
        text += " · time estimate after the first run of this model"
    return text


def guidance_panel(
    ctx, model_id, image, extra_images, audio, preset, scale_t, scale_i, scale_a, switch, steps, frames, height, width
):
    """Plot + passes/estimate for the current guidance settings (called on every change)."""
    mode = mode_from_inputs(bool(image) or bool(extra_images), bool(audio))
    try:
        schedule = build_schedule(_variant(ctx, model_id), mode, preset, scale_t, scale_i, scale_a, switch)
    except InputError as exc:
        return gr.update(), f"⚠️ {exc}"
    plot = guidance_plot_data(schedule, steps, sampling_shift(model_id))
    frames = int(frames) if frames else DEFAULT_FRAMES
    return plot, estimate_text(
        ctx, model_id, schedule, steps, frames, int(height), int(width)
    ) + f"\n\n`{schedule.describe()}`"


def default_steps(model_id: str) -> int:
    """Sampling steps a model is used with: 8 for the untrained tiny, HuMo-nano's evaluated count, else 50."""
    if model_id == "tiny":
        return 8
    if model_id == "humo-nano":
        from engine import nano

        return int(nano.info().get("sample_steps", 30))
    return 50


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
    from engine.registry import MODELS

    spec = MODELS.get(ctx.default_model)
    return guidance_lib.DEFAULT_SCALES[spec.variant if spec else "17b"]


def _variant(ctx: StudioContext, model_id: str | None) -> str:
    from engine.registry import MODELS

    model_id = model_id or ctx.default_model
    if model_id in MODELS:
        return MODELS[model_id].variant
    return ctx.pipeline(model_id).variant


def make_request(ctx, prompt, image, audio, negative_prompt, model, resolution, height, width, frames, steps, seed,
                 preset, scale_t, scale_i, scale_a, switch, extra_images=None, long_video=False) -> GenerationRequest:  # fmt: skip
    """A GenerationRequest from the Generate tab's values (API_INPUTS)."""
    images = ([image] if image else []) + [getattr(f, "name", f) for f in (extra_images or [])]
    model = model or ctx.default_model
    if resolution and RESOLUTIONS.get(resolution):
        height, width = RESOLUTIONS[resolution]
    if not height or not width:  # API calls may leave the size out: the model's default size
        from engine.registry import MODELS

        height, width = MODELS[model].default_size if model in MODELS else (64, 64)
    if not steps:
        steps = default_steps(model)
    mode = mode_from_inputs(bool(images), bool(audio))
    schedule = build_schedule(_variant(ctx, model), mode, preset, scale_t, scale_i, scale_a, switch)
    return GenerationRequest(
        prompt=(prompt or "").strip(),
        images=images,
        audio=audio or None,
        negative_prompt=(negative_prompt or None),
        height=int(height),
        width=int(width),
        num_frames=int(frames) if frames else None,
        num_inference_steps=int(steps),
        seed=None if seed is None or int(seed) < 0 else int(seed),
        guidance=schedule.to_dict(),
        # long videos: windows of the trained length (97 frames) blended at every step (engine/long_video.py)
        window_frames=97 if long_video else None,
    )


def error_updates(field: str | None, message: str) -> dict[str, str]:
    """Which error box shows a message: the one next to the input that caused it."""
    target = field if field in FIELDS else "prompt"
    if target in ("height", "width"):
        target = "height"
    return {name: (f"⚠️ {message}" if name == target else "") for name in ERROR_FIELDS}


def format_progress(event: JobProgress) -> str:
    remaining = f", about {event.remaining_s:.0f} s left" if event.remaining_s is not None else ""
    return f"⏳ Generation #{event.generation_id}: {event.message} · {event.elapsed_s:.1f} s elapsed{remaining}"


def format_result(result: JobResult, demo: bool) -> str:
    if result.status == "done":
        note = " — untrained demo model: the video is noise" if demo else ""
        return f"✅ Generation #{result.generation_id} done (seed {result.settings.get('seed')}){note}"
    if result.status == "stopped":
        return f"⏹️ Generation #{result.generation_id} stopped: {result.error}"
    return f"❌ Generation #{result.generation_id} failed: {result.error}"


# ---------------------------------------------------------------------------------------------- layout
def build_generate_tab(ctx: StudioContext, model_choices: list[str]) -> dict:
    """Builds the tab; returns its components by name (the gallery's "use these settings" fills them)."""
    stop_events: dict[str, threading.Event] = {}
    last = ctx.store.get_setting(LAST_SETTINGS_KEY, {}) or {}
    scales = starting_scales(ctx)
    c: dict = {}
    with gr.Row():
        with gr.Column(scale=5):
            c["prompt"] = gr.Textbox(
                label="Prompt",
                lines=3,
                value=last.get("prompt", ""),
                placeholder="Scene, look and action: a young woman in a red coat sings in a snowy street…",
                elem_id="prompt",
            )
            c["prompt_err"] = gr.Markdown(elem_id="prompt-error")
            with gr.Row():
                c["image"] = gr.Image(label="Reference image (who)", type="filepath", elem_id="image", height=220)
                c["audio"] = gr.Audio(
                    label="Voice (upload or record)", type="filepath", sources=["upload", "microphone"], elem_id="audio"
                )
            c["extra_images"] = gr.File(
                label="More reference images (optional, one slot each)",
                file_count="multiple",
                file_types=["image"],
                elem_id="extra-images",
            )
            c["image_err"] = gr.Markdown(elem_id="image-error")
            c["audio_info"] = gr.Markdown(
                "No audio: text + image (TI) mode, frames as set below.", elem_id="audio-info"
            )
            c["audio_err"] = gr.Markdown(elem_id="audio-error")
            c["mode"] = gr.Markdown(mode_label(None, None, None), elem_id="mode")
            if rows := example_rows():
                gr.Examples(rows, inputs=[c["prompt"], c["image"], c["audio"]], label="Example (made for HuMo-nano)")
            c["negative_prompt"] = gr.Textbox(
                label="Negative prompt (empty: the official Wan negative prompt)",
                lines=2,
                value=last.get("negative_prompt") or "",
            )
            with gr.Row():
                c["model"] = gr.Dropdown(model_choices, value=ctx.default_model, label="Model", elem_id="model")
                small = ctx.is_demo_model or ctx.is_nano_model
                default_res = "64×64 (HuMo-nano, tiny)" if small else "480×832 (landscape, official)"
                c["resolution"] = gr.Dropdown(
                    list(RESOLUTIONS), value=last.get("resolution", default_res), label="Resolution"
                )
                c["height"] = gr.Number(label="Height (custom, ×16)", value=last.get("height", 64), precision=0)
                c["width"] = gr.Number(label="Width (custom, ×16)", value=last.get("width", 64), precision=0)
            c["height_err"] = gr.Markdown(elem_id="size-error")
            with gr.Row():
                c["frames"] = gr.Number(
                    label="Frames (0 = from the audio)", value=last.get("frames", 0), precision=0, elem_id="frames"
                )
                c["steps"] = gr.Slider(
                    1,
                    100,
                    value=last.get("steps", default_steps(ctx.default_model)),
                    step=1,
                    label="Steps",
                    elem_id="steps",
                )
                c["seed"] = gr.Number(
                    label="Seed (-1 = random)", value=last.get("seed", -1), precision=0, elem_id="seed"
                )
                c["random_seed"] = gr.Button("🎲", scale=0, min_width=40)
            c["long_video"] = gr.Checkbox(
                label="Long video: as long as the audio, in 97-frame windows blended at every step",
                value=False,
                elem_id="long-video",
            )
            c["num_frames_err"] = gr.Markdown()
            c["steps_err"] = gr.Markdown()
            c["seed_err"] = gr.Markdown()
            with gr.Accordion("Guidance", open=True):
                c["preset"] = gr.Radio(PRESETS, value=last.get("preset", "official"), label="Preset")
                with gr.Row():
                    c["scale_t"] = gr.Slider(
                        0,
                        15,
                        value=last.get("scale_t", scales["scale_t"]),
                        step=0.5,
                        label="Text scale",
                        elem_id="scale-t",
                    )
                    c["scale_i"] = gr.Slider(
                        0,
                        15,
                        value=last.get("scale_i", scales["scale_i"]),
                        step=0.5,
                        label="Image scale",
                        elem_id="scale-i",
                    )
                    c["scale_a"] = gr.Slider(
                        0,
                        15,
                        value=last.get("scale_a", scales["scale_a"]),
                        step=0.5,
                        label="Audio scale",
                        elem_id="scale-a",
                    )
                    c["switch"] = gr.Slider(
                        900,
                        999,
                        value=last.get("switch", 980),
                        step=1,
                        label="Switch timestep (17B: text-dominant while t >)",
                    )
                c["plot"] = gr.LinePlot(
                    x="step", y="weight", color="modality", label="Effective weight per modality", height=220
                )
                c["estimate"] = gr.Markdown(elem_id="estimate")
                c["guidance_err"] = gr.Markdown()
        with gr.Column(scale=4):
            with gr.Row():
                c["run"] = gr.Button("Generate", variant="primary", elem_id="generate")
                c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop")
            c["status"] = gr.Markdown(elem_id="status")
            c["stop_info"] = gr.Markdown(elem_id="stop-info")  # Stop's answer; the job's own status stays above
            c["preview"] = gr.Image(label="Denoising preview", interactive=False, height=200, elem_id="preview")
            c["video"] = gr.Video(label="Result", interactive=False, elem_id="result-video", autoplay=True)
            c["gallery_id"] = gr.Number(label="Gallery id", interactive=False, precision=0, elem_id="gallery-id")
            c["session"] = gr.State(lambda: str(random.random()))

    inputs = [c[k] for k in API_INPUTS]
    err_boxes = [c[f"{k}_err"] for k in ERROR_FIELDS]
    outputs = [c["video"], c["gallery_id"], c["status"], c["preview"], *err_boxes]

    def on_generate(prompt, image=None, audio=None, negative_prompt="", model=None, resolution=None, height=None,
                    width=None, frames=0, steps=None, seed=-1, preset="official", scale_t=None, scale_i=None,
                    scale_a=None, switch=None, extra_images=None, long_video=False, session=None):  # fmt: skip
        """The generate action (also the `/generate` API; settings after the audio are optional there)."""
        values = {k: v for k, v in locals().items() if k in API_INPUTS}
        session = session or "api"
        stop_events[session] = stop = threading.Event()
        blank = ["" for _ in err_boxes]
        try:
            request = make_request(ctx, **values)
            ctx.store.set_setting(LAST_SETTINGS_KEY, {k: values[k] for k in REMEMBERED})
            for event in stream_job(ctx, request, model_id=values["model"] or ctx.default_model, stop_event=stop):
                if isinstance(event, JobProgress):
                    preview = event.preview if event.preview is not None else gr.update()
                    yield None, event.generation_id, format_progress(event), preview, *blank
                else:
                    errors = error_updates(event.field, event.error) if event.status == "failed" else {}
                    video = str(event.video_path) if event.video_path else None
                    status = format_result(event, ctx.is_demo_model)
                    yield video, event.generation_id, status, gr.update(), *[errors.get(k, "") for k in ERROR_FIELDS]
        except InputError as exc:
            errors = error_updates(exc.field, str(exc))
            yield None, None, f"❌ {exc}", gr.update(), *[errors[k] for k in ERROR_FIELDS]
        finally:
            stop_events.pop(session, None)

    def on_stop(session):
        event = stop_events.get(session)
        if event is None:
            return "Nothing is running in this tab."
        event.set()
        return "⏹️ Stopping at the next step…"

    api_generate = _with_gpu_duration(on_generate, ctx)
    c["run"].click(
        api_generate,
        inputs + [c["session"]],
        outputs,
        api_visibility="private",
        concurrency_id="gpu",
        concurrency_limit=1,
    )
    # The public API: (prompt, image, audio, then optional settings) -> (video, gallery id, status, ...).
    c["api"] = gr.Button(visible=False)
    c["api"].click(api_generate, inputs, outputs, api_name="generate", concurrency_id="gpu", concurrency_limit=1)
    c["stop"].click(on_stop, [c["session"]], [c["stop_info"]], queue=False)
    c["random_seed"].click(lambda: random.randint(0, 2**31 - 1), None, c["seed"], queue=False)

    c["audio"].change(lambda a: audio_summary(a)[0], c["audio"], c["audio_info"], queue=False, show_progress="hidden")
    for comp in (c["image"], c["audio"], c["extra_images"]):
        comp.change(
            mode_label, [c["image"], c["extra_images"], c["audio"]], c["mode"], queue=False, show_progress="hidden"
        )
    panel_inputs = [
        c["model"],
        c["image"],
        c["extra_images"],
        c["audio"],
        c["preset"],
        c["scale_t"],
        c["scale_i"],
        c["scale_a"],
        c["switch"],
        c["steps"],
        c["frames"],
        c["height"],
        c["width"],
    ]
    for comp in panel_inputs:
        comp.change(
            lambda *a: guidance_panel(ctx, *a),
            panel_inputs,
            [c["plot"], c["estimate"]],
            queue=False,
            show_progress="hidden",
        )
    # a preset or a model of the other variant (1.7B vs 17B) starts the sliders from its official scales
    for comp in (c["preset"], c["model"]):
        comp.change(
            lambda p, m, i, e, a: preset_scales(ctx, p, m, i, e, a),
            [c["preset"], c["model"], c["image"], c["extra_images"], c["audio"]],
            [c["scale_t"], c["scale_i"], c["scale_a"]],
            queue=False,
        )
    c["_panel"] = (panel_inputs, [c["plot"], c["estimate"]])
    remembered = [c[k] for k in REMEMBERED]
    c["_restore"] = (lambda: restore_last_settings(ctx), [], remembered)
    return c


REMEMBERED = [k for k in API_INPUTS if k not in ("image", "audio", "model", "extra_images", "long_video")]


def restore_last_settings(ctx: StudioContext) -> list:
    """Values of the last run (kept in the store, so they survive restarts and page reloads)."""
    last = ctx.store.get_setting(LAST_SETTINGS_KEY, {}) or {}
    return [gr.update(value=last[k]) if last.get(k) is not None else gr.update() for k in REMEMBERED]


def preset_scales(ctx, preset, model_id, image, extra_images, audio):
    """The scales a preset starts from, for the sliders."""
    mode = mode_from_inputs(bool(image) or bool(extra_images), bool(audio))
    schedule = guidance_lib.preset_schedule(preset, _variant(ctx, model_id), mode)
    defaults = guidance_lib.DEFAULT_SCALES[schedule.variant]
    scales = {**defaults, **schedule.scales}
    return scales.get("scale_t"), scales.get("scale_i"), scales.get("scale_a")


def _with_gpu_duration(fn, ctx):
    """On a Hugging Face Space with ZeroGPU, request a GPU slot sized to the job; elsewhere, the function itself."""
    from studio.spaces import gpu_wrap

    return gpu_wrap(fn, ctx)


__all__ = [
    "build_generate_tab",
    "audio_summary",
    "mode_label",
    "guidance_plot_data",
    "estimate_text",
    "make_request",
    "error_updates",
]
