"""Generate tab: inputs, guidance panel, running a job with live progress and Stop.

Layout is built in `build_generate_tab`; every callback is a small function of plain values, tested without a browser.
"""

from __future__ import annotations

import functools
import json
import random
import threading

import gradio as gr
import pandas as pd

from engine import guidance as guidance_lib
from engine import registry
from engine.audio import snap_frames
from engine.errors import InputError
from engine.generate import GenerationRequest
from engine.pipeline import DEFAULT_FRAMES, mode_from_inputs
from engine.schedulers import DEFAULT_SHIFT, official_timesteps
from studio import admission, inputs
from studio.context import StudioContext
from studio.jobs import JobProgress, JobResult, stream_job
from studio.owners import request_owner
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
PRESETS = list(guidance_lib.GUIDANCE_PRESETS)
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
        return f"⚠️ {exc}", None
    seconds = info.duration_s
    n25 = int(seconds * 25)
    if n25 < 1:
        return "⚠️ The audio is shorter than one frame (40 ms).", None
    frames = snap_frames(n25)
    text = f"{seconds:.2f} s of audio → {frames} frames at 25 fps ({(frames - 1) // 4 + 1} latent frames)"
    if max_seconds is not None and seconds > max_seconds:
        text = f"⚠️ {voice[1]} is {seconds:.1f} s long; this studio takes voices up to {max_seconds:.0f} s: trim it."
    return text, frames


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
    """Plot + passes/estimate for the current guidance settings (called on every change, with raw values)."""
    mode = mode_from_inputs(bool(image) or bool(extra_images), bool(audio))
    try:
        steps = inputs.number(steps, "steps", "Steps", minimum=1, maximum=1000, integer=True)
        frames = inputs.number(frames, "num_frames", "Frames", minimum=0, maximum=100_000, integer=True, default=0)
        height = inputs.number(height, "height", "Height", minimum=16, maximum=8192, integer=True, default=64)
        width = inputs.number(width, "width", "Width", minimum=16, maximum=8192, integer=True, default=64)
        scales = [inputs.number(v, "guidance", "Scale", minimum=0, maximum=30) for v in (scale_t, scale_i, scale_a)]
        switch = inputs.number(switch, "guidance", "Switch timestep", minimum=0, maximum=1000)
        schedule = build_schedule(_variant(ctx, model_id), mode, preset, *scales, switch)
    except InputError as exc:
        return gr.update(), f"⚠️ {exc}"
    plot = guidance_plot_data(schedule, steps, sampling_shift(model_id))
    frames = frames or DEFAULT_FRAMES
    return plot, estimate_text(ctx, model_id, schedule, steps, frames, height, width) + f"\n\n`{schedule.describe()}`"


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


def make_request(ctx, prompt, image=None, audio=None, negative_prompt="", model=None, resolution=None, height=None,
                 width=None, frames=0, steps=None, seed=-1, preset="official", scale_t=None, scale_i=None, scale_a=None,
                 switch=None, extra_images=None, long_video=False,
                 consent=None) -> tuple[GenerationRequest, dict[str, str]]:  # fmt: skip
    """A GenerationRequest from the Generate tab's raw values (API_INPUTS), and the user's file names by path.

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
        height, width = registry.MODELS[model].default_size if model in registry.MODELS else (64, 64)
    height = inputs.number(height, "height", "Height", minimum=16, maximum=side, integer=True)
    width = inputs.number(width, "width", "Width", minimum=16, maximum=side, integer=True)
    frames = inputs.number(frames, "num_frames", "Frames", minimum=0, maximum=opts.frame_cap, integer=True, default=0)
    max_steps = opts.max_steps_public if opts.public else 200
    steps = inputs.number(steps, "steps", "Steps", minimum=1, maximum=max_steps, integer=True,
                          default=min(default_steps(model), max_steps))  # fmt: skip
    seed = inputs.number(seed, "seed", "Seed", minimum=-1, maximum=inputs.MAX_SEED, integer=True, default=-1)
    preset = inputs.choice(preset, PRESETS, "guidance", "Guidance preset", "official")
    scales = [
        None if v is None else inputs.number(v, "guidance", label, minimum=0, maximum=30)
        for v, label in ((scale_t, "Text scale"), (scale_i, "Image scale"), (scale_a, "Audio scale"))
    ]
    switch = None if switch is None else inputs.number(switch, "guidance", "Switch timestep", minimum=0, maximum=1000)
    if opts.public and not inputs.flag(consent):
        raise InputError(
            "Tick the box that you have the right to use this face and this voice before generating.", field="consent"
        )
    mode = mode_from_inputs(bool(files), bool(voice))
    schedule = build_schedule(_variant(ctx, model), mode, preset, *scales, switch)
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
        guidance=schedule.to_dict(),
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
    from studio.app import model_choices

    return model_choices(ctx)


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
def build_generate_tab(ctx: StudioContext, model_choices: list[str], visitor: gr.BrowserState) -> dict:
    """Builds the tab; returns its components by name (the gallery's "use these settings" fills them).

    `visitor`: the page's anonymous visitor id (public mode). The form starts empty for everyone; each
    visitor's own last settings are filled in on page load (`restore_last_settings`)."""
    stop_events: dict[str, threading.Event] = {}
    scales = starting_scales(ctx)
    c: dict = {}
    with gr.Row():
        with gr.Column(scale=5):
            c["prompt"] = gr.Textbox(
                label="Prompt",
                lines=3,
                value="",
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
                gr.Examples(
                    rows,
                    inputs=[c["prompt"], c["image"], c["audio"]],
                    label="Example (made for HuMo-nano)",
                    api_visibility="private",
                )
            c["negative_prompt"] = gr.Textbox(
                label="Negative prompt (empty: the official Wan negative prompt)",
                lines=2,
                value="",
            )
            with gr.Row():
                c["model"] = gr.Dropdown(model_choices, value=ctx.default_model, label="Model", elem_id="model")
                small = ctx.is_demo_model or ctx.is_nano_model
                default_res = "64×64 (HuMo-nano, tiny)" if small else "480×832 (landscape, official)"
                c["resolution"] = gr.Dropdown(resolution_choices(ctx), value=default_res, label="Resolution")
                side = max_side(ctx)
                c["height"] = gr.Number(label="Height (custom, ×16)", value=64, precision=0, minimum=16, maximum=side)
                c["width"] = gr.Number(label="Width (custom, ×16)", value=64, precision=0, minimum=16, maximum=side)
            c["height_err"] = gr.Markdown(elem_id="size-error")
            with gr.Row():
                c["frames"] = gr.Number(
                    label=f"Frames (0 = from the audio; at most {ctx.options.frame_cap})",
                    value=0,
                    precision=0,
                    minimum=0,
                    maximum=ctx.options.frame_cap,
                    elem_id="frames",
                )
                c["steps"] = gr.Slider(
                    1,
                    ctx.options.max_steps_public if ctx.options.public else 100,
                    value=default_steps(ctx.default_model),
                    step=1,
                    label="Steps",
                    elem_id="steps",
                )
                c["seed"] = gr.Number(label="Seed (-1 = random)", value=-1, precision=0, elem_id="seed")
                c["random_seed"] = gr.Button("🎲", scale=0, min_width=40)
            c["long_video"] = gr.Checkbox(
                label="Long video: as long as the audio, in 97-frame windows blended at every step",
                value=False,
                elem_id="long-video",
            )
            c["consent"] = gr.Checkbox(
                label="I have the right to use this face and this voice (required here; recorded with the video)",
                value=False,
                visible=ctx.options.public,
                elem_id="consent",
            )
            c["consent_err"] = gr.Markdown(elem_id="consent-error")
            c["num_frames_err"] = gr.Markdown()
            c["steps_err"] = gr.Markdown()
            c["seed_err"] = gr.Markdown()
            with gr.Accordion("Guidance", open=True):
                c["preset"] = gr.Radio(PRESETS, value="official", label="Preset")
                with gr.Row():
                    c["scale_t"] = gr.Slider(
                        0,
                        15,
                        value=scales["scale_t"],
                        step=0.5,
                        label="Text scale",
                        elem_id="scale-t",
                    )
                    c["scale_i"] = gr.Slider(
                        0,
                        15,
                        value=scales["scale_i"],
                        step=0.5,
                        label="Image scale",
                        elem_id="scale-i",
                    )
                    c["scale_a"] = gr.Slider(
                        0,
                        15,
                        value=scales["scale_a"],
                        step=0.5,
                        label="Audio scale",
                        elem_id="scale-a",
                    )
                    c["switch"] = gr.Slider(
                        900,
                        999,
                        value=980,
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

    inputs = [c[k] for k in API_INPUTS]
    err_boxes = [c[f"{k}_err"] for k in ERROR_FIELDS]
    outputs = [c["video"], c["gallery_id"], c["status"], c["preview"], *err_boxes]

    def job_stream(tab, prompt, image=None, audio=None, negative_prompt="", model=None, resolution=None, height=None,
                   width=None, frames=0, steps=None, seed=-1, preset="official", scale_t=None, scale_i=None,
                   scale_a=None, switch=None, extra_images=None, long_video=False, consent=False,
                   owner=LOCAL_OWNER):  # fmt: skip
        """One job of `owner`, as (video, id, status, preview, *errors) updates. On a ZeroGPU Space this runs in a
        forked GPU worker (`_with_gpu_duration`): only picklable values cross, and its Stop is the event's cancel."""
        values = dict(zip(API_INPUTS, (prompt, image, audio, negative_prompt, model, resolution, height, width,
                                       frames, steps, seed, preset, scale_t, scale_i, scale_a, switch, extra_images,
                                       long_video, consent), strict=True))  # fmt: skip
        blank = ["" for _ in err_boxes]
        if on_zero_gpu():  # a forked worker must never reuse the parent's pooled connections
            ctx.store.engine.dispose(close=False)
        stop_events[tab] = stop = threading.Event()  # Stop in this tab ends this job
        try:
            job_request, names = make_request(ctx, **values)
            remembered = {k: values[k] for k in REMEMBERED}
            ctx.store.set_setting(LAST_SETTINGS_KEY, remembered, owner=owner)  # values make_request accepted
            model_id = values["model"] or ctx.default_model
            job = {"owner": owner, "names": names, "consent": True if ctx.options.public else None}
            for event in stream_job(ctx, job_request, model_id=model_id, stop_event=stop, **job):
                if isinstance(event, JobProgress):
                    preview = event.preview if event.preview is not None else gr.update()
                    yield None, event.generation_id, format_progress(event), preview, *blank
                else:
                    errors = error_updates(event.field, event.error) if event.status == "failed" else {}
                    video = served_copy(event.video_path) if event.video_path else None
                    status = format_result(event, ctx.is_demo_model)
                    yield video, event.generation_id, status, gr.update(), *[errors.get(k, "") for k in ERROR_FIELDS]
        except InputError as exc:
            yield refusal(exc)
        finally:
            stop_events.pop(tab, None)

    def refusal(exc: InputError) -> tuple:
        errors = error_updates(exc.field, str(exc))
        return None, None, f"❌ {exc}", gr.update(), *[errors[k] for k in ERROR_FIELDS]

    gpu_job_stream = _with_gpu_duration(job_stream, ctx)

    def on_generate(request: gr.Request, prompt, image=None, audio=None, negative_prompt="", model=None, resolution=None, height=None,
                    width=None, frames=0, steps=None, seed=-1, preset="official", scale_t=None, scale_i=None,
                    scale_a=None, switch=None, extra_images=None, long_video=False, consent=False, visitor=None):  # fmt: skip
        """The generate action (also the `/generate` API; settings after the audio are optional there).
        Raw values (the event runs with preprocess=False): `make_request` reads and checks them. `request` comes
        first: Gradio inserts it by position, and the API call has fewer inputs than the page's. The visitor's
        admission ticket (taken by `admit_job`) is given back here, in the studio's own process."""
        try:
            owner = request_owner(ctx.options.public, request, visitor)
        except InputError as exc:
            yield refusal(exc)
            return
        try:
            yield from gpu_job_stream(_tab(request), prompt, image, audio, negative_prompt, model, resolution, height,
                                      width, frames, steps, seed, preset, scale_t, scale_i, scale_a, switch,
                                      extra_images, long_video, consent, owner=owner)  # fmt: skip
        finally:
            admission.release(ctx, owner)

    def on_stop(request: gr.Request):
        event = stop_events.get(_tab(request))
        if event is None:
            return "Nothing is running in this tab."
        event.set()
        return "⏹️ Stopping at the next step…"

    def admit_job(request: gr.Request, *args):
        """Runs when the request arrives, before it waits in the queue (public mode: one job per visitor)."""
        visitor = args[-1] if len(args) == len(inputs) + 1 else None  # the page sends (…, visitor)
        try:
            owner = request_owner(ctx.options.public, request, visitor)
            refusal = admission.admit(ctx, owner, admission.client_address(request))
        except InputError as exc:
            refusal = str(exc)
        checks = [gr.validate(True, "") for _ in args]
        if refusal and checks:
            checks[0] = gr.validate(False, refusal)
        return checks

    run_event = c["run"].click(
        on_generate,
        inputs + [visitor],
        outputs,
        api_visibility="private",
        concurrency_id="gpu",
        concurrency_limit=1,
        preprocess=False,
        validator=admit_job,
    )
    # The public API: (prompt, image, audio, then optional settings) -> (video, gallery id, status, ...).
    # An API client is its own visitor (its session), so it sees only what it made.
    c["api"] = gr.Button(visible=False)
    c["api"].click(
        on_generate,
        inputs,
        outputs,
        api_name="generate",
        concurrency_id="gpu",
        concurrency_limit=1,
        preprocess=False,
        validator=admit_job,
    )
    # Stop sets the job's event (next step); under ZeroGPU the job runs in a forked worker, so Stop also cancels
    # the event, which closes the generator and ends the worker.
    c["stop"].click(
        on_stop,
        None,
        [c["stop_info"]],
        queue=False,
        api_visibility="private",
        cancels=[run_event] if on_zero_gpu() else None,
    )
    c["random_seed"].click(lambda: random.randint(0, 2**31 - 1), None, c["seed"], queue=False, api_visibility="private")

    # Form helpers get raw values too (preprocess=False): an odd upload never fails inside Gradio.
    c["audio"].change(
        lambda a: audio_summary(a, ctx.options.audio_cap_s)[0],
        c["audio"],
        c["audio_info"],
        queue=False,
        show_progress="hidden",
        preprocess=False,
        api_visibility="private",
    )
    for comp in (c["image"], c["audio"], c["extra_images"]):
        comp.change(
            mode_label,
            [c["image"], c["extra_images"], c["audio"]],
            c["mode"],
            queue=False,
            show_progress="hidden",
            preprocess=False,
            api_visibility="private",
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
            preprocess=False,
            api_visibility="private",
        )
    # a preset or a model of the other variant (1.7B vs 17B) starts the sliders from its official scales
    for comp in (c["preset"], c["model"]):
        comp.change(
            lambda p, m, i, e, a: preset_scales(ctx, p, m, i, e, a),
            [c["preset"], c["model"], c["image"], c["extra_images"], c["audio"]],
            [c["scale_t"], c["scale_i"], c["scale_a"]],
            queue=False,
            preprocess=False,
            api_visibility="private",
        )
    c["_panel"] = (panel_inputs, [c["plot"], c["estimate"]])
    remembered = [c[k] for k in REMEMBERED]

    def restore(request: gr.Request, visitor=None):
        return restore_last_settings(ctx, request_owner(ctx.options.public, request, visitor))

    c["_restore"] = (restore, [visitor], remembered)
    return c


REMEMBERED = [k for k in API_INPUTS if k not in ("image", "audio", "model", "extra_images", "long_video", "consent")]


def restore_last_settings(ctx: StudioContext, owner: str) -> list:
    """Values of `owner`'s last run (kept in the store, so they survive restarts and page reloads)."""
    last = ctx.store.get_setting(LAST_SETTINGS_KEY, {}, owner=owner) or {}
    return [gr.update(value=last[k]) if last.get(k) is not None else gr.update() for k in REMEMBERED]


def preset_scales(ctx, preset, model_id, image, extra_images, audio):
    """The scales a preset starts from, for the sliders."""
    mode = mode_from_inputs(bool(image) or bool(extra_images), bool(audio))
    schedule = guidance_lib.preset_schedule(preset, _variant(ctx, model_id), mode)
    defaults = guidance_lib.DEFAULT_SCALES[schedule.variant]
    scales = {**defaults, **schedule.scales}
    return scales.get("scale_t"), scales.get("scale_i"), scales.get("scale_a")


def job_gpu_seconds(ctx: StudioContext, *args, **kwargs) -> int:
    """The ZeroGPU slot for one call of the generate action (same arguments): sized from the job's real frames
    (the audio's, from its header), guidance passes, windows and size; InputError when no slot is long enough."""
    from studio.jobs import job_cost, planned_frames
    from studio.spaces import gpu_seconds

    values = {**dict(zip(("tab", *API_INPUTS), args)), **kwargs}
    job, _ = make_request(ctx, **{k: values[k] for k in API_INPUTS if k in values})
    model_id = values.get("model") or ctx.default_model
    return gpu_seconds(job_cost(ctx, job, planned_frames(job), model_id))


def _with_gpu_duration(fn, ctx):
    """On a Hugging Face Space with ZeroGPU, request a GPU slot sized to the job; elsewhere, the function itself."""
    from studio.spaces import gpu_wrap

    return gpu_wrap(fn, functools.partial(job_gpu_seconds, ctx))


__all__ = [
    "build_generate_tab",
    "audio_summary",
    "mode_label",
    "guidance_plot_data",
    "estimate_text",
    "make_request",
    "error_updates",
]
