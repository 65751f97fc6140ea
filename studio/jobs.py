"""One generation job: inputs copied into the data folder, a gallery row through its lifecycle
(queued -> running -> done | failed | stopped), progress with latent previews, and Stop at the next step.

UI-free: the Generate tab, the API and the tests drive it the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from engine import registry
from engine.errors import InputError, WorkerError
from engine.generate import GenerationRequest, generate_to_file
from engine.pipeline import GenerationInterrupted
from engine.plan import check_run_inputs, plan_request, run_frames
from engine.registry import model_source
from studio import eta
from studio.context import StudioContext
from studio.paths import DataPaths
from studio.progress import ClipPreviews, JobProgress, JobResult
from studio.spaces import JobCost, gpu_seconds, on_zero_gpu
from studio.store import LOCAL_OWNER

log = logging.getLogger(__name__)
PREVIEW_EVERY_S = 1.0  # latent previews cost a small matmul; one a second keeps the page lively and cheap


def validate_request(ctx: StudioContext, request: GenerationRequest, names: dict[str, str] | None = None) -> int:
    """Every check before a row or a file exists; returns the frame count the job will really make.

    Cheap first (numbers, text), then the inputs from their headers and a bounded decode (images within the pixel
    cap, audio within the length cap), then the job's real cost: the frames the audio sets, long video included.
    Messages name the user's files (`names`: path -> the name they uploaded), never a stored hash.
    """
    from engine.audio import check_voice, load_audio, num_video_frames
    from engine.media import load_image
    from studio import inputs

    opts = ctx.options
    names = names or {}
    inputs.text(request.prompt, "prompt", "prompt")
    inputs.text(request.negative_prompt, "prompt", "negative prompt")
    if not (request.prompt or "").strip():  # the studio's rule (the engine encodes an empty prompt too)
        raise InputError("Type a prompt describing the scene and the action.", field="prompt")
    # the engine's own checks of a run (the pipeline runs the same ones), before any row or file exists
    check_run_inputs(request.prompt, request.height, request.width, request.num_frames, request.num_inference_steps,
                     request.window_frames, request.window_overlap)  # fmt: skip
    if request.seed is not None and not -1 <= request.seed <= inputs.MAX_SEED:
        raise InputError(f"Seed must be from 0 to {inputs.MAX_SEED} (or -1 for random).", field="seed")
    if len(request.images) > 1 + opts.max_extra_images:
        raise InputError(
            f"At most {opts.max_extra_images} extra reference images (got {len(request.images) - 1}).", field="image"
        )
    if opts.public:
        if request.num_inference_steps > opts.max_steps_public:
            raise InputError(f"This public studio allows at most {opts.max_steps_public} steps.", field="steps")
        if request.height * request.width > opts.max_pixels_public:
            raise InputError("This public studio allows at most 480×832 pixels per frame.", field="height")
        _check_passes(opts.max_passes_public, request.guidance)
        # The frame cap from the voice's header and arithmetic, before any image or voice is decoded.
        from_voice = request.audio and request.num_frames is None
        header = _header_voice_frames(opts, request, names) if from_voice else None
        _check_frames(opts, request, run_frames(request.num_frames, header))
    for image in request.images:
        load_image(image, display_name=names.get(image))  # header first: the pixel cap holds before any decode
    voice = None
    if request.audio:
        shown = names.get(request.audio) or Path(request.audio).name
        waveform = load_audio(request.audio, max_seconds=opts.audio_cap_s, display_name=shown)
        check_voice(waveform, shown)
        voice = max(1, num_video_frames(len(waveform)))
    frames = run_frames(request.num_frames, voice)  # what the pipeline will make (engine.plan)
    _check_frames(opts, request, frames)
    if on_zero_gpu():  # a job that cannot finish inside one ZeroGPU slot is refused here, next to its input
        gpu_seconds(job_cost(ctx, request, frames))
    return frames


HEADER_SLACK_S = 0.2  # a container may round its length up: near the cap, the decoded voice's exact count decides


def _header_voice_frames(opts, request: GenerationRequest, names: dict[str, str]) -> int | None:
    """The voice's frames from its container header (nothing decoded) when they are over the public frame cap even
    a little under its stated length; None otherwise: no length in the header, one over the voice cap (`load_audio`
    refuses it), or near the frame cap (the decoded voice's exact count decides)."""
    from engine.audio import probe_audio

    shown = names.get(request.audio) or Path(request.audio).name
    seconds = probe_audio(request.audio, display_name=shown).duration_s
    least = int((seconds - HEADER_SLACK_S) * 25) if seconds is not None else 0
    if seconds is None or seconds > opts.audio_cap_s or least < 1:  # a voice shorter than the slack: its decode decides
        return None
    if run_frames(None, least) <= opts.max_frames_public:
        return None
    return max(1, int(seconds * 25))


def planned_frames(request: GenerationRequest, from_header: bool = False) -> int:
    """The frames a job will make (engine.plan, the voice's length when none are asked): what a GPU slot is sized
    for. `from_header`: the voice's length read from its header, for callers before the caps (admission's estimate),
    which must not decode an upload of any length."""
    from engine.plan import header_voice_frames, voice_frames

    if request.num_frames is not None or request.audio is None:
        return run_frames(request.num_frames, None)
    count = header_voice_frames if from_header and isinstance(request.audio, str) else voice_frames
    return run_frames(None, count(request.audio))


def job_cost(ctx: StudioContext, request: GenerationRequest, frames: int, model_id: str | None = None) -> JobCost:
    """What a job costs in transformer passes and tokens: the engine's plan of the request (engine.plan.plan_request:
    steps x guidance passes, windows for long videos) on its model's grid."""
    model_id = model_id or ctx.default_model
    spec = registry.get_spec(model_id)
    plan = plan_request(request, spec.sampling_defaults(), spec.variant, frames)
    window = request.window_frames or frames
    return JobCost(model_id, plan.steps, min(frames, window), request.height, request.width,
                   sum(plan.passes_per_step), windows=plan.windows, window_frames=window,
                   references=plan.references)  # fmt: skip


def _check_passes(limit: int, guidance) -> None:
    """A public job's passes per step: custom phases may mix up to 8 branches, twice what the caps were sized for."""
    for number, phase in enumerate(guidance.phases if guidance is not None else [], start=1):
        if len(phase.branches()) > limit:
            raise InputError(f"Guidance phase {number} runs {len(phase.branches())} transformer passes a step; this "
                             f"public studio runs at most {limit}: mix fewer branches.", field="guidance")  # fmt: skip


def _check_frames(opts, request: GenerationRequest, frames: int) -> None:
    """The frame cap on what the job will make (the audio sets it when Frames is 0 or for long videos)."""
    from studio.admission import frame_cap_message  # the words the page warns with on upload

    seconds = frames / 25
    if message := frame_cap_message(opts, frames):
        raise InputError(message, field="num_frames" if request.num_frames else "audio")
    if not request.window_frames and frames > opts.max_frames_plain:
        raise InputError(
            f"The voice sets {frames} frames ({seconds:.1f} s), more than one window of {opts.max_frames_plain} "
            "frames: turn on Long video, trim the voice, or set Frames lower.",
            field="num_frames" if request.num_frames else "audio",
        )


def copy_inputs(ctx: StudioContext, request: GenerationRequest) -> tuple[GenerationRequest, list[str], dict]:
    """Copy uploads into the data folder (content-addressed) so a gallery entry can be re-run later. On failure
    the copies made so far are released again."""
    rel_paths, hashes, images, audio = [], {}, [], None
    try:
        for index, image in enumerate(request.images):
            rel, digest = ctx.store.save_input(image, "image")
            rel_paths.append(rel)
            hashes[f"image{index}"] = digest
            images.append(str(ctx.store.abs_path(rel)))
        if request.audio:
            rel, digest = ctx.store.save_input(request.audio, "audio")
            rel_paths.append(rel)
            hashes["audio"] = digest
            audio = str(ctx.store.abs_path(rel))
    except BaseException:
        ctx.store.discard_inputs(rel_paths)
        raise
    return replace(request, images=images, audio=audio), rel_paths, hashes


def run_job(
    ctx: StudioContext,
    request: GenerationRequest,
    model_id: str | None = None,
    stop_event: threading.Event | None = None,
    on_progress: Callable[[JobProgress], None] | None = None,
    owner: str = LOCAL_OWNER,
    names: dict[str, str] | None = None,
    consent: bool | None = None,
    advanced=None,
) -> JobResult:
    """Run one generation of `owner` to a finished gallery row. Never leaves a row 'running' or a half-written
    video; a job refused before its row exists leaves no file behind. `advanced`: studio.advanced.AdvancedOptions
    (LoRA, step cache, compile, attention, memory mode), on the pipeline for this job and stored with the row."""
    frames = validate_request(ctx, request, names)
    model_id = model_id or ctx.default_model
    request, input_paths, input_hashes = copy_inputs(ctx, seeded(request))
    settings = {**_settings_of(request), **({"advanced": advanced.record(names)} if advanced else {})}
    gid = queued_row(ctx, request, model_id, request.mode, settings, input_paths, input_hashes, owner, consent)
    stop_event = stop_event or threading.Event()

    def work() -> JobResult:
        video_rel = DataPaths.video_rel(gid)
        started = time.perf_counter()
        if ctx.pool is not None:  # issue 31 hook: a resident Ray worker renders it (studio/pool.py marks it running)
            path, settings = ctx.pool.render(ctx, request, model_id, ctx.store.abs_path(video_rel), gid, stop_event,
                                             on_progress, advanced, names)  # fmt: skip
        elif ctx.options.gpus > 1:
            ctx.store.mark_running(gid)
            path, settings = run_worker_group(
                ctx, request, model_id, ctx.store.abs_path(video_rel), gid, stop_event, on_progress, advanced
            )
        else:
            from studio.advanced import applied

            def render(pipe, out: Path, callback):
                with applied(pipe, advanced, ctx.options.device):
                    return generate_to_file(pipe, request, out, callback_on_step_end=callback,
                                            advanced=advanced.record(names) if advanced else None)  # fmt: skip

            estimate = lambda pipe: _estimate(ctx, request, frames, model_id)  # noqa: E731
            video_rel, path, settings = _render_here(ctx, gid, model_id, stop_event, on_progress, estimate, render)
        _remember_speed(ctx, model_id, settings, time.perf_counter() - started)
        return _finish(ctx, gid, video_rel, path, settings)

    if ctx.pool is not None:  # issue 31 hook: the pool's workers are the turns (each renders one job at a time)
        try:
            return work()
        except BaseException as exc:
            return _end_row(ctx, gid, exc)
    return _in_turn(ctx, gid, stop_event, work, owner, _waiting_seconds(ctx, request, frames, model_id))


def _waiting_seconds(ctx: StudioContext, request: GenerationRequest, frames: int, model_id: str) -> float | None:
    """A job's seconds from this machine's measured costs (no probe), for the queue list while it waits."""
    try:
        return eta.estimate_request(ctx, request, frames, model_id).total_s
    except Exception:  # a time estimate never fails a job
        return None


def seeded(request):
    """The request with a drawn seed where it asks for a random one (None or negative): the row keeps the seed."""
    if request.seed is None or request.seed < 0:
        return replace(request, seed=random.randint(0, 2**31 - 1))
    return request


def queued_row(ctx: StudioContext, request, model_id: str, mode: str, settings: dict, input_paths: list[str],
               input_hashes: dict, owner: str, consent: bool | None) -> int:  # fmt: skip
    """Every job's gallery row, queued, for its copied inputs (dropped again when the row cannot be made)."""
    try:
        row = ctx.store.create_generation(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or "",
            mode=mode,
            model_id=model_id,
            seed=request.seed,
            settings=settings,
            input_hashes=input_hashes,
            input_paths=input_paths,
            total_steps=request.num_inference_steps,
            owner=owner,
            consent=consent,
        )
    except BaseException:
        ctx.store.discard_inputs(input_paths)
        raise
    return row.id


def _render_here(ctx: StudioContext, gid: int, model_id: str, stop_event: threading.Event, on_progress,
                 estimate: Callable, render: Callable) -> tuple[str, Path, dict]:  # fmt: skip
    """The job-turn part of a render in this process: the pipeline, the row running, the progress callback (its
    time estimate from `estimate(pipe)`), then `render(pipe, out, callback)` into the row's video file."""
    pipe = ctx.pipeline(model_id)
    ctx.store.mark_running(gid)
    callback = _progress_callback(ctx, gid, stop_event, on_progress, estimate(pipe))
    video_rel = DataPaths.video_rel(gid)
    path, settings = render(pipe, ctx.store.abs_path(video_rel), callback)
    return video_rel, path, settings


def _in_turn(ctx: StudioContext, gid: int, stop_event: threading.Event, work: Callable[[], JobResult],
             owner: str = LOCAL_OWNER, seconds: float | None = None) -> JobResult:  # fmt: skip
    """Run a job's `work` in the studio's one job turn (the row stays queued, listed by its number in the turn's
    line, until the pipelines are free) and end its row while the turn is still held, so the next job's row never
    runs beside it."""
    from engine.pipeline import GenerationInterrupted

    try:
        with ctx.turn(stop_event, gid, owner, seconds):
            try:
                return work()
            except BaseException as exc:
                return _end_row(ctx, gid, exc)
    except GenerationInterrupted as exc:  # stopped while it waited for its turn
        return _end_row(ctx, gid, exc)


def _finish(ctx: StudioContext, gid: int, video_rel: str, path: Path, settings: dict) -> JobResult:
    """A rendered row: its thumbnail, then done (the video is already in place)."""
    thumb_rel = DataPaths.thumb_rel(gid)
    _thumbnail(path, ctx.store.abs_path(thumb_rel))
    ctx.store.mark_done(gid, video_rel, thumb_rel, timings=settings.get("timings"), seed=settings.get("seed"))
    return JobResult(gid, "done", path, settings)


def _end_row(ctx: StudioContext, gid: int, exc: BaseException) -> JobResult:
    """A row whose render ended early: stopped, refused (the message names the field) or failed; never left
    'running'. Anything but an Exception (a KeyboardInterrupt, a SystemExit) still propagates, after the mark."""
    if isinstance(exc, GenerationInterrupted):
        ctx.store.mark_stopped(gid, str(exc))
        return JobResult(gid, "stopped", error=str(exc))
    if isinstance(exc, InputError):
        ctx.store.mark_failed(gid, str(exc))
        return JobResult(gid, "failed", error=str(exc), field=exc.field)
    if isinstance(exc, WorkerError):  # issue 31: the Ray pool's own sentence (a worker died, none to be had)
        ctx.store.mark_failed(gid, str(exc))
        return JobResult(gid, "failed", error=str(exc))
    # The row and the page get a sentence, never the raw exception (it may name server paths or internals); the
    # server's log keeps the traceback under the job's number.
    log.error("job %s failed", gid, exc_info=(type(exc), exc, exc.__traceback__))
    message = f"Job {gid} failed inside the studio ({type(exc).__name__}); the server's log has the details."
    ctx.store.mark_failed(gid, message)
    if not isinstance(exc, Exception):
        raise exc
    return JobResult(gid, "failed", error=message)  # keep serving: the row says that it failed


def worker_group_command(request: GenerationRequest, model_id: str, gpus: int, out: Path, guidance_file: Path,
                         advanced=None) -> list[str]:  # fmt: skip
    """`python -m engine generate --gpus N ...` reproducing `request` with its LoRA and speed options (`advanced`,
    studio.advanced.AdvancedOptions) on every rank (the CLI relaunches itself under torchrun)."""
    from dataclasses import asdict

    from engine.cli import generate_argv

    options = asdict(advanced) if advanced is not None else None
    return [sys.executable, "-m", "engine", "generate", "--gpus", str(gpus),
            *generate_argv(request, model_source(model_id), out, guidance_file, options)]  # fmt: skip


def run_worker_group(ctx, request, model_id, out: Path, gid: int, stop_event, on_progress,
                     advanced=None) -> tuple[Path, dict]:  # fmt: skip
    """Generate on all GPUs with a torchrun worker group; rank 0 reports progress on stdout and writes the file."""
    from engine.media import read_settings
    from engine.pipeline import GenerationInterrupted

    guidance_file = ctx.store.paths.logs / f"guidance-{gid}.json"
    guidance_file.parent.mkdir(parents=True, exist_ok=True)
    command = worker_group_command(request, model_id, ctx.options.gpus, out, guidance_file, advanced)
    env = {**os.environ, "HUMO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # fmt: skip
    started, tail = time.perf_counter(), []
    watcher = threading.Thread(target=_stop_when_set, args=(stop_event, process), daemon=True)
    watcher.start()
    for line in process.stdout:
        tail = (tail + [line])[-30:]
        if "HUMO_PROGRESS " in line:  # stderr is merged in: a tqdm bar may precede it on the same line
            done, total = (int(v) for v in line.rsplit("HUMO_PROGRESS ", 1)[1].split()[:2])
            ctx.store.update_progress(gid, done, total)
            if on_progress is not None:
                elapsed = time.perf_counter() - started
                on_progress(
                    JobProgress(
                        gid,
                        done,
                        total,
                        elapsed,
                        elapsed / done * (total - done),
                        None,
                        f"step {done}/{total} on {ctx.options.gpus} GPUs",
                    )
                )
    code = process.wait()
    if stop_event.is_set():
        raise GenerationInterrupted("stopped: the worker group was ended")
    if code != 0 or not out.exists():
        raise RuntimeError(f"the {ctx.options.gpus}-process worker group failed (exit {code}): {''.join(tail)[-1500:]}")
    return out, read_settings(out)


def _stop_when_set(stop_event: threading.Event, process: subprocess.Popen) -> None:
    """Stop ends the whole worker group (torchrun and its ranks share a process group); no file is left."""
    while process.poll() is None:
        if stop_event.wait(0.2):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            return


def _settings_of(request: GenerationRequest) -> dict:
    """A job's settings for its gallery row (the store edge: the guidance as its dict), without the input paths."""
    settings = request.to_dict()
    settings.pop("images", None)
    settings.pop("audio", None)
    return settings


def _thumbnail(video: Path, out: Path) -> None:
    from engine.media import make_thumbnail

    make_thumbnail(video, out, size=256)


def _remember_speed(ctx: StudioContext, model_id: str, settings: dict, seconds: float) -> None:
    """Learn this machine's costs from the job's timings (studio/eta.py); the wall time is stored with the row."""
    settings.setdefault("timings", {})["job_s"] = seconds
    in_process = ctx.options.gpus <= 1 and ctx.pool is None  # a worker group or a Ray worker holds it elsewhere
    pipe = ctx._pipelines.get(model_id) if in_process else None
    eta.record(ctx, model_id, settings, seconds, pipe)


def _progress_callback(ctx, gid, stop_event, on_progress, estimate: eta.Estimate | None = None):
    started = time.perf_counter()
    last_preview = [0.0]
    step_started = [started]
    clips: list[ClipPreviews] = []  # made at the first step, when the step count is known

    def callback(pipe, step, timestep, kwargs):
        total = len(pipe.scheduler.timesteps)
        done = step + 1
        elapsed = time.perf_counter() - started
        ctx.store.update_progress(gid, done, total)
        preview, preview_video, note = None, None, ""
        now = time.perf_counter()
        window = kwargs.get("window")
        step_end = not window or window[0] == window[1] - 1
        if on_progress is not None and step_end and kwargs.get("noise_pred") is not None:
            if not clips:
                clips.append(ClipPreviews(pipe, gid, total))
            try:  # the predicted clean video at the intervals previews can afford (studio/progress.py)
                preview_video, note = clips[0].step_done(step, now - step_started[0], kwargs)
            except Exception:  # a preview must never break a job
                preview_video, note = None, ""
        elif on_progress is not None and (now - last_preview[0] >= PREVIEW_EVERY_S or done == total):
            last_preview[0] = now
            try:
                preview = pipe.latent_preview(kwargs["latents"]) if kwargs.get("latents") is not None else None
            except Exception:  # a preview must never break a job
                preview = None
        if on_progress is not None:
            if window:  # long videos report every window of a step: count progress in windows
                index, count = window
                fraction = (step + (index + 1) / count) / total
                remaining = _remaining(estimate, elapsed, fraction)
                message = f"step {done}/{total} · window {index + 1}/{count}"
            else:
                remaining = _remaining(estimate, elapsed, done / total)
                message = f"step {done}/{total}"
            on_progress(JobProgress(gid, done, total, elapsed, remaining, preview, message, preview_video, note))
        if stop_event.is_set():
            pipe._interrupt = True
        if step_end:
            step_started[0] = time.perf_counter()  # a step's time leaves out its preview
        return {}

    callback.tensor_inputs = ("latents", "noise_pred")  # the step's velocity gives the predicted clean video
    return callback


def _estimate(ctx: StudioContext, request: GenerationRequest, frames: int, model_id: str) -> eta.Estimate | None:
    """The job's time from this machine's earlier runs, for the seconds-left line; a time estimate never fails a job."""
    try:
        return eta.estimate_request(ctx, request, frames, model_id, probe=True)  # in the job's own slot
    except Exception:
        return None


def _remaining(estimate: eta.Estimate | None, elapsed: float, fraction: float) -> float:
    """Seconds left: decode and writing included once this model's costs are measured (studio/eta.py)."""
    if estimate is not None and estimate.parts is not None:
        return eta.remaining_s(estimate, elapsed, fraction)
    return elapsed / max(fraction, 1e-6) * (1 - fraction)


def stream_job(ctx, request, model_id=None, stop_event=None, run=None, alive=None,
               **job) -> Iterator[JobProgress | JobResult]:  # fmt: skip
    """Run a job in a worker thread and yield its progress events, then its result (for Gradio generators).
    `job`: run_job's owner, names and consent; `run`: the job function (default run_job; a dub: run_dub_job).

    The job belongs to the studio, not to the page: when the consumer goes away (Gradio closes the generator on a
    cancel or a closed tab, or `alive()` says the page's event left the queue) the job is stopped at its next step;
    its thread keeps the pipeline's turn and the owner's admission ticket until it has really ended."""
    from studio import admission

    events: queue.Queue = queue.Queue()
    holder: dict = {}
    stop_event = stop_event if stop_event is not None else threading.Event()

    def work():
        try:
            with admission.working(ctx, job.get("owner", LOCAL_OWNER)):
                holder["result"] = (run or run_job)(ctx, request, model_id, stop_event, on_progress=events.put, **job)
        except InputError as exc:
            holder["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            try:
                event = events.get(timeout=1.0)
            except queue.Empty:  # quiet (loading, waiting for the turn): is anyone still waiting for this job?
                if alive is not None and not alive():
                    stop_event.set()
                continue
            if event is None:
                break
            yield event
    finally:
        if thread.is_alive():  # the page went away: stop at the next step; the thread ends (and frees) on its own
            stop_event.set()
    thread.join()
    if "error" in holder:
        raise holder["error"]
    yield holder["result"]


# ---------------------------------------------------------------------------------------------- dubbing (issue #15)
# The caps named as a frame size when they are a common one (else as a pixel count).
FRAME_SIZES = {w * h: f"{w}×{h}" for w, h in ((480, 832), (640, 480), (1280, 720), (1920, 1080), (3840, 2160))}


def check_dub_video(opts, path: str, name: str | None = None) -> dict:
    """The source video's header checks (engine.dub.probe_video: readable, a video with a length, not a still) and
    its caps in every mode: duration and pixels per frame (public mode: also the file size), all read from the
    header and the file system, before any frame is decoded."""
    from gradio.utils import _parse_file_size  # Gradio's own reading of max_file_size ("50mb")

    from engine import dub

    name = name or Path(path).name
    header = dub.probe_video(path, name)
    stream, seconds = header["video"], header.get("duration") or 0.0
    who = "this public studio" if opts.public else "the studio"
    if seconds > opts.audio_cap_s:
        raise InputError(f"{name} is {seconds:.1f} s long; {who} dubs videos up to {opts.audio_cap_s:.0f} s: trim it.",
                         field="video")  # fmt: skip
    if stream["width"] * stream["height"] > opts.video_pixel_cap:
        size = FRAME_SIZES.get(opts.video_pixel_cap, f"{opts.video_pixel_cap:,}")
        raise InputError(f"{name} is {stream['width']}×{stream['height']}; {who} takes videos up to {size} pixels "
                         "per frame: scale it down.", field="video")  # fmt: skip
    if opts.public and Path(path).stat().st_size > _parse_file_size(opts.max_upload_public):
        raise InputError(f"{name} is larger than {opts.max_upload_public}: export it smaller.", field="video")
    return header


def validate_dub(ctx: StudioContext, request, names: dict[str, str] | None = None):
    """Every check of a dub before a row or a file exists (engine.dub.DubRequest -> its DubPlan). Its cost first,
    from headers and arithmetic (the source's size and length, the voice's length, the frames after ping-pong or
    trim against the frame caps), then engine.dub.plan_dub, which decodes (voice, frames, face, mask)."""
    from engine import dub
    from studio import inputs

    opts = ctx.options
    names = names or {}
    inputs.text(request.prompt, "prompt", "prompt")
    # the engine's checks of the numbers a dub's request sets (its size and frames come from its plan)
    check_run_inputs(request.prompt, 16, 16, None, request.num_inference_steps, request.window_frames,
                     request.window_overlap)  # fmt: skip
    if opts.public and request.num_inference_steps > opts.max_steps_public:
        raise InputError(f"This public studio allows at most {opts.max_steps_public} steps.", field="steps")
    check_dub_video(opts, request.video, names.get(request.video))
    _check_dub_frames(opts, request, dub.planned_frames(request, names, max_audio_s=opts.audio_cap_s))
    plan = dub.plan_dub(request, names, max_audio_s=opts.audio_cap_s)
    _check_dub_frames(opts, request, plan.num_frames)  # the decoded truth, should a header have lied
    return plan


def _check_dub_frames(opts, request, frames: int) -> None:
    if opts.public and frames > opts.max_frames_public:
        limit = opts.max_frames_public
        raise InputError(f"This dub would make {frames} frames; this public studio makes at most {limit} "
                         f"({limit / 25:.1f} s): trim the voice.", field="audio")  # fmt: skip
    if not request.window_frames and frames > opts.max_frames_plain:
        raise InputError(f"The voice sets {frames} frames, more than one window of {opts.max_frames_plain}: "
                         "trim the voice.", field="audio")  # fmt: skip


def _dub_estimate(ctx: StudioContext, pipe, request, plan, model_id: str) -> eta.Estimate | None:
    """A dub's time, like a generation's: the engine's plan of its run (the voice's frames at the model size, the
    dub's schedule, its windows), priced with this machine's measured costs (probed in the job's own slot)."""
    from engine import dub

    steps = request.num_inference_steps or pipe.sampling_defaults.num_inference_steps
    height, width = (request.height, request.width) if request.height and request.width else dub.model_size(
        plan.frames.shape[1:3], pipe.default_size)  # fmt: skip
    try:
        return eta.estimate(ctx, model_id, dub.dub_schedule(pipe, request), steps, plan.num_frames, height, width, 1,
                            True, request.window_frames, request.window_overlap, probe=True)  # fmt: skip
    except Exception:  # a time estimate never fails a job (as `_estimate`)
        return None


def run_dub_job(ctx: StudioContext, request, model_id: str | None = None, stop_event: threading.Event | None = None,
                on_progress: Callable[[JobProgress], None] | None = None, owner: str = LOCAL_OWNER,
                names: dict[str, str] | None = None, consent: bool | None = None) -> JobResult:  # fmt: skip
    """One dub of `owner` to a finished gallery row (the lifecycle of `run_job`; the settings say kind "dub")."""
    from engine.dub import MODE, dub_to_file

    names = names or {}
    plan = validate_dub(ctx, request, names)
    model_id = model_id or ctx.default_model
    request = seeded(request)
    rel_paths, hashes, copies = [], {}, {}
    try:
        for key, kind in (("video", "video"), ("audio", "audio"), ("mask", "image")):
            if getattr(request, key):
                rel, digest = ctx.store.save_input(getattr(request, key), kind)
                rel_paths.append(rel)
                hashes[key] = digest
                copies[key] = str(ctx.store.abs_path(rel))
                names[copies[key]] = names.get(getattr(request, key)) or Path(getattr(request, key)).name
    except BaseException:
        ctx.store.discard_inputs(rel_paths)
        raise
    request = replace(request, **copies)
    settings = {k: v for k, v in request.to_dict().items() if k not in ("video", "audio", "mask")}
    gid = queued_row(ctx, request, model_id, MODE, {"kind": "dub", **settings}, rel_paths, hashes, owner, consent)
    stop_event = stop_event or threading.Event()

    def work() -> JobResult:
        def render(pipe, out: Path, callback):
            return dub_to_file(pipe, request, out, callback, plan=plan, names=names)

        estimate = lambda pipe: _dub_estimate(ctx, pipe, request, plan, model_id)  # noqa: E731
        video_rel, path, settings = _render_here(ctx, gid, model_id, stop_event, on_progress, estimate, render)
        return _finish(ctx, gid, video_rel, path, settings)

    return _in_turn(ctx, gid, stop_event, work, owner)
