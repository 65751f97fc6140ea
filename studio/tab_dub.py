"""Dub tab: re-voice an existing video (engine/dub.py). Source video, new voice, a mask preview on the first frame
(click a face to choose it), face index, strength, progress with previews, Stop; results go to the gallery.

The dub action is also the `/dub` API: (video, audio, prompt, face, strength, steps, seed, consent, mask) -> (video,
gallery id, status). A public studio needs `consent` ticked, as for /generate; `mask` (optional) is an image of the
video's size, white where the face is re-animated, in place of the face detector's. Like /generate it reads raw values (preprocess=False, studio/inputs.py), belongs to the request's owner
(studio/owners.py) and is admitted per visitor (studio/admission.py) before it waits in the queue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import gradio as gr
import numpy as np

from engine import dub
from engine.errors import InputError
from studio import admission, inputs
from studio.context import StudioContext
from studio.jobs import JobProgress, check_dub_video, run_dub_job, stream_job
from studio.owners import request_owner
from studio.serving import served_copy
from studio.tab_generate import default_steps, format_progress, format_result

API_INPUTS = ("video", "audio", "prompt", "face", "strength", "steps", "seed", "consent", "mask")
PRIVATE = {"queue": False, "api_visibility": "private"}


# ---------------------------------------------------------------------------------------------- pure helpers
def parse_point(value) -> tuple[float, float] | None:
    """The clicked face "x,y" (source pixels of the first frame) or None."""
    if value in (None, ""):
        return None
    try:
        x, y = (float(v) for v in str(value).split(","))
    except ValueError:
        raise InputError(f"The clicked point must be 'x,y' (got {str(value)[:40]!r}).", field="face") from None
    return x, y


def make_dub_request(ctx: StudioContext, video, audio, prompt=None, face=None, strength=None, steps=None, seed=-1,
                     point=None, model=None, consent=None, mask=None) -> tuple[dub.DubRequest, dict[str, str]]:  # fmt: skip
    """A DubRequest from raw form/API values (uploads must lie in Gradio's folder), and path -> uploaded name."""
    if ctx.options.public and not inputs.flag(consent):
        raise InputError(
            "Tick the box that you have the right to use this face and this voice before dubbing.", field="consent"
        )
    source = inputs.upload(video, "video")
    voice = inputs.upload(audio, "audio")
    if source is None:
        raise InputError("Upload the video to dub (an mp4 with the speaker's face).", field="video")
    if voice is None:
        raise InputError("Upload the new voice (an audio file, or a video with a sound track).", field="audio")
    drawn = inputs.upload(mask, "mask")  # a user mask image, in place of the face detector's
    text = inputs.text(prompt, "prompt", "prompt").strip() or "A person talking."
    face_index = inputs.number(face, "face", "Face", minimum=-1, maximum=99, integer=True, default=-1)
    model_id = model or ctx.default_model
    request = dub.DubRequest(
        video=source[0], audio=voice[0], prompt=text, face=None if face_index < 0 else face_index,
        point=parse_point(point), mask=drawn[0] if drawn else None,
        strength=inputs.number(strength, "strength", "Strength", minimum=0.05, maximum=1.0,
                               default=dub.DEFAULT_STRENGTH),
        num_inference_steps=inputs.number(steps, "steps", "Steps", minimum=1, maximum=1000, integer=True,
                                          default=default_steps(model_id)),
        seed=inputs.number(seed, "seed", "Seed", minimum=-1, maximum=inputs.MAX_SEED, integer=True, default=-1),
    )  # fmt: skip
    names = {source[0]: source[1], voice[0]: voice[1], **({drawn[0]: drawn[1]} if drawn else {})}
    return request, names


PREVIEW_SLOTS = threading.BoundedSemaphore(2)  # previews made at once, across all visitors
BUSY_PREVIEW = "⚠ The studio is making other previews right now: choose the face again in a moment."


def mask_preview(ctx: StudioContext, video, face=None, strength=None, point=None) -> tuple[np.ndarray | None, str]:
    """The first frame with the mask the dub would use tinted red, and a line saying which face; or the reason
    there is none. Reads only the first second (header caps first). Its cost is bounded without a ticket: it runs
    outside Gradio's queue (a flood of previews never fills the places jobs wait in) and at most two run at once;
    one more is answered at once with a busy line."""
    if not PREVIEW_SLOTS.acquire(blocking=False):
        return None, BUSY_PREVIEW
    try:
        return _mask_preview(ctx, video, face, strength, point)
    finally:
        PREVIEW_SLOTS.release()


def _mask_preview(ctx: StudioContext, video, face=None, strength=None, point=None) -> tuple[np.ndarray | None, str]:
    try:
        source = inputs.upload(video, "video")
        if source is None:
            return None, "Upload a video: the mask over the chosen face shows here (click a face to choose it)."
        check_dub_video(ctx.options, source[0], source[1])
        frames = dub.load_video(source[0], max_frames=dub.SEARCH_FRAMES, display_name=source[1]).frames
        index = inputs.number(face, "face", "Face", minimum=-1, maximum=99, integer=True, default=-1)
        start, box = dub.find_face(frames, None if index < 0 else index, parse_point(point), name=source[1])
        level = inputs.number(strength, "strength", "Strength", minimum=0.05, maximum=1.0, default=0.5)
        mask = dub.face_mask(box[None], frames.shape[1:3], strength=level)[0]
        count = len(dub.detect_faces(frames[start]))
        info = f"Frame {start}: {count} face(s) found; the tinted region changes."
        return dub.mask_preview(frames[start], mask), info
    except InputError as exc:
        return None, f"⚠ {exc}"


# ---------------------------------------------------------------------------------------------- layout
@dataclass
class DubTab:
    video: gr.File
    audio: gr.Audio
    prompt: gr.Textbox
    face: gr.Number
    strength: gr.Slider
    steps: gr.Number
    seed: gr.Number
    consent: gr.Checkbox
    mask: gr.Image
    point: gr.Textbox
    preview_frame: gr.Image
    preview_info: gr.Markdown
    run: gr.Button
    stop: gr.Button
    status: gr.Markdown
    progress: gr.Image
    result: gr.Video
    gallery_id: gr.Number
    job_events: list


def layout(ctx: StudioContext) -> DubTab:
    gr.Markdown("Re-voice footage: the chosen face follows the new voice, everything outside its mask stays the "
                "source's own pixels. The result is labelled AI-generated and watermarked like every video here.")  # fmt: skip
    with gr.Row():
        with gr.Column():
            video = gr.File(label="Source video", file_types=["video"], elem_id="dub-video")
            audio = gr.Audio(label="New voice", type="filepath", sources=["upload", "microphone"], elem_id="dub-audio")
            prompt = gr.Textbox(label="Prompt", value="A person talking.", lines=2, elem_id="dub-prompt")
            with gr.Row():
                face = gr.Number(label="Face (-1: largest)", value=-1, precision=0, elem_id="dub-face")
                strength = gr.Slider(0.05, 1.0, value=dub.DEFAULT_STRENGTH, step=0.05, elem_id="dub-strength",
                                     label="Strength (0.5 mouth and jaw … 1 whole face)")  # fmt: skip
            with gr.Row():
                steps = gr.Number(label="Steps", value=default_steps(ctx.default_model), precision=0,
                                  elem_id="dub-steps")  # fmt: skip
                seed = gr.Number(label="Seed (-1: random)", value=-1, precision=0, elem_id="dub-seed")
            point = gr.Textbox(label="Clicked face (x,y)", value="", elem_id="dub-point")
            mask = gr.Image(label="Mask (optional): white where to re-animate, the video's size", type="filepath",
                            sources=["upload"], height=120, elem_id="dub-mask-upload")  # fmt: skip
            consent = gr.Checkbox(label="I have the right to use this face and this voice (required here; recorded "
                                  "with the video)", value=False, visible=ctx.options.public, elem_id="dub-consent")  # fmt: skip
            with gr.Row():
                run = gr.Button("Dub", variant="primary", elem_id="dub-run", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="dub-stop", scale=1)
        with gr.Column():
            preview_frame = gr.Image(label="Mask on the first frame (click a face)", interactive=False,
                                     elem_id="dub-mask", height=220)  # fmt: skip
            preview_info = gr.Markdown(elem_id="dub-mask-info")
            status = gr.Markdown(elem_id="dub-status")
            progress = gr.Image(label="Denoising preview", interactive=False, height=160, elem_id="dub-preview")
            result = gr.Video(label="Dubbed video", interactive=False, elem_id="dub-result", autoplay=True)
            gallery_id = gr.Number(label="Gallery id", interactive=False, precision=0, elem_id="dub-gallery-id")
    return DubTab(video, audio, prompt, face, strength, steps, seed, consent, mask, point, preview_frame, preview_info, run, stop,
                  status, progress, result, gallery_id, [])  # fmt: skip


# ---------------------------------------------------------------------------------------------- the job
class DubRunner:
    """The dub action: owner, admission, one job with progress and Stop (the generate tab's pattern)."""

    def __init__(self, ctx: StudioContext):
        from studio.spaces import gpu_wrap

        self.ctx = ctx
        self.stop_events: dict[str, threading.Event] = {}
        # On a ZeroGPU Space the job runs in a GPU slot sized from the dub's real cost (a no-op elsewhere)
        self.gpu_job_stream = gpu_wrap(self.job_stream, lambda *a, **k: dub_gpu_seconds(ctx, *a, **k))

    def on_dub(self, request: gr.Request, video=None, audio=None, prompt=None, face=None, strength=None, steps=None,
               seed=-1, consent=None, mask=None, point=None, visitor=None):  # fmt: skip
        """(video, gallery id, status, preview) updates of one dub; the ticket `admit` took is given back here, in
        the studio's own process."""
        ctx = self.ctx
        try:
            owner = request_owner(ctx.options.public, request, visitor, ctx.visitor_key)
        except InputError as exc:
            yield None, None, f"✖ {exc}", gr.update()
            return
        tab = getattr(request, "session_hash", None) or "local"
        try:
            yield from self.gpu_job_stream(tab, video, audio, prompt, face, strength, steps, seed, consent, mask,
                                           point, owner=owner)  # fmt: skip
        finally:
            admission.release(ctx, owner)

    def job_stream(self, tab, video=None, audio=None, prompt=None, face=None, strength=None, steps=None, seed=-1,
                   consent=None, mask=None, point=None, owner=None):  # fmt: skip
        """One dub of `owner` as (video, gallery id, status, preview) updates (on ZeroGPU: in the GPU worker)."""
        ctx = self.ctx
        stop = threading.Event()
        self.stop_events[tab] = (owner, stop)  # Stop in this tab, by this owner, ends this dub
        try:
            job_request, names = make_dub_request(ctx, video, audio, prompt, face, strength, steps, seed, point,
                                                  consent=consent, mask=mask)  # fmt: skip
            job = {"owner": owner, "names": names, "consent": True if ctx.options.public else None}
            for event in stream_job(
                ctx, job_request, ctx.default_model, stop, run=run_dub_job, alive=admission.page_alive(ctx, tab), **job
            ):
                if isinstance(event, JobProgress):
                    preview = event.preview if event.preview is not None else gr.update()
                    yield None, event.generation_id, format_progress(event).replace("Generation", "Dub"), preview
                else:
                    clip = served_copy(event.video_path) if event.video_path else None
                    text = format_result(event, ctx.is_demo_model).replace("Generation", "Dub")
                    yield clip, event.generation_id, text, gr.update()
        except InputError as exc:
            yield None, None, f"✖ {exc}", gr.update()
        finally:
            self.stop_events.pop(tab, None)

    def admit(self, request: gr.Request, *args):
        """Before the request waits in the queue: public mode admits one job per visitor (studio/admission.py)."""
        ctx = self.ctx
        visitor = args[len(API_INPUTS) + 1] if len(args) > len(API_INPUTS) + 1 else None
        try:
            owner = request_owner(ctx.options.public, request, visitor, ctx.visitor_key)
            address = admission.client_address(request, ctx.options.trusted_proxies)
            refusal = admission.admit(ctx, owner, address, getattr(request, "session_hash", None))
        except InputError as exc:
            refusal = str(exc)
        checks = [gr.validate(True, "") for _ in args]
        if refusal and checks:
            checks[0] = gr.validate(False, refusal)
        return checks

    def on_stop(self, request: gr.Request, visitor=None):
        """Stop this tab's dub: only its owner's Stop counts."""
        try:
            owner = request_owner(self.ctx.options.public, request, visitor, self.ctx.visitor_key)
        except InputError as exc:
            return f"✖ {exc}"
        owned, event = self.stop_events.get(getattr(request, "session_hash", None) or "local") or (None, None)
        if event is None or owned != owner:
            return "Nothing is dubbing in this tab."
        event.set()
        return "■ Stopping at the next step…"


def dub_gpu_seconds(ctx: StudioContext, tab, video=None, audio=None, prompt=None, face=None, strength=None,
                    steps=None, seed=-1, consent=None, mask=None, point=None, owner=None) -> int:  # fmt: skip
    """The ZeroGPU slot for one dub: the frames the new voice sets (from its header), the model's size, and the
    TIA schedule's passes over the steps (its preset: a student's single pass); InputError (shown to the visitor) when no slot is long enough."""
    from engine import registry
    from engine.audio import probe_audio, snap_frames
    from engine.plan import plan_request
    from studio.spaces import JobCost, gpu_seconds

    request, _ = make_dub_request(
        ctx, video, audio, prompt, face, strength, steps, seed, point, consent=consent, mask=mask
    )
    spec = registry.get_spec(ctx.default_model)
    frames = snap_frames(max(1, int(probe_audio(request.audio).duration_s * dub.FPS)))
    plan = plan_request(request, spec.sampling_defaults(), spec.variant, frames)  # the model's schedule for a dub
    return gpu_seconds(JobCost(spec.id, plan.steps, frames, *spec.default_size, sum(plan.passes_per_step)))


def on_frame_click(evt: gr.SelectData) -> str:
    """A click on the mask preview picks the face under it (preview pixels are the source's first frame)."""
    x, y = evt.index
    return f"{x},{y}"


def build_dub_tab(ctx: StudioContext, visitor: gr.BrowserState) -> DubTab:
    tab = layout(ctx)
    runner = DubRunner(ctx)
    # the preview decodes a second of video (within the header caps) and runs the face detector: outside Gradio's
    # queue, so previews never take the places jobs wait in, and bounded to two at once by mask_preview itself
    raw = {"api_visibility": "private", "show_progress": "hidden", "preprocess": False, "queue": False}
    preview_inputs = [tab.video, tab.face, tab.strength, tab.point]
    for trigger in (tab.video.change, tab.face.submit, tab.strength.release, tab.point.change):
        trigger(lambda *v: mask_preview(ctx, *v), preview_inputs, [tab.preview_frame, tab.preview_info], **raw)
    tab.preview_frame.select(on_frame_click, None, [tab.point], **PRIVATE)
    form = [tab.video, tab.audio, tab.prompt, tab.face, tab.strength, tab.steps, tab.seed, tab.consent, tab.mask]
    outputs = [tab.result, tab.gallery_id, tab.status, tab.progress]
    job = {"concurrency_id": "gpu", "concurrency_limit": 1, "preprocess": False, "validator": runner.admit}
    page = tab.run.click(runner.on_dub, form + [tab.point, visitor], outputs, api_visibility="private", **job)
    # the public API: (video, audio, prompt, face, strength, steps, seed, consent, mask) -> (video, id, status, preview)
    api = gr.Button(visible=False)
    api_event = api.click(runner.on_dub, form, outputs, api_name="dub", **job)
    tab.stop.click(runner.on_stop, [visitor], [tab.status], **PRIVATE)
    tab.job_events += [page, api_event]
    return tab
