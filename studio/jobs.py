"""One generation job: inputs copied into the data folder, a gallery row through its lifecycle
(queued -> running -> done | failed | stopped), progress with latent previews, and Stop at the next step.

UI-free: the Generate tab, the API and the tests drive it the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.errors import InputError
from engine.generate import GenerationRequest, generate_to_file
from engine.pipeline import GenerationInterrupted, mode_from_inputs
from studio.context import StudioContext
from studio.paths import DataPaths

PREVIEW_EVERY_S = 1.0  # latent previews cost a small matmul; one a second keeps the page lively and cheap


@dataclass
class JobProgress:
    generation_id: int | None
    step: int = 0
    total: int = 0
    elapsed_s: float = 0.0
    remaining_s: float | None = None
    preview: object | None = None  # PIL image
    message: str = ""


@dataclass
class JobResult:
    generation_id: int
    status: str  # done | failed | stopped
    video_path: Path | None = None
    settings: dict = field(default_factory=dict)
    error: str | None = None
    field: str | None = None


def validate_request(ctx: StudioContext, request: GenerationRequest) -> None:
    """Cheap checks before a row is created; public mode (a shared Space) caps the cost of one job."""
    if not (request.prompt or "").strip():
        raise InputError("Type a prompt describing the scene and the action.", field="prompt")
    for name in ("height", "width"):
        value = getattr(request, name)
        if not isinstance(value, int) or value < 16 or value % 16:
            raise InputError(f"{name.capitalize()} must be a positive multiple of 16 (got {value}).", field=name)
    if not isinstance(request.num_inference_steps, int) or request.num_inference_steps < 1:
        raise InputError("Steps must be at least 1.", field="steps")
    if request.num_frames is not None and request.num_frames < 1:
        raise InputError("Frames must be at least 1 (or 0 for: from the audio).", field="num_frames")
    opts = ctx.options
    if opts.public:
        if request.num_inference_steps > opts.max_steps_public:
            raise InputError(f"This public studio allows at most {opts.max_steps_public} steps.", field="steps")
        if request.height * request.width > opts.max_pixels_public:
            raise InputError("This public studio allows at most 480×832 pixels per frame.", field="height")
        if request.num_frames and request.num_frames > opts.max_frames_public:
            raise InputError(f"This public studio allows at most {opts.max_frames_public} frames.", field="num_frames")


def copy_inputs(ctx: StudioContext, request: GenerationRequest) -> tuple[GenerationRequest, list[str], dict]:
    """Copy uploads into the data folder (content-addressed) so a gallery entry can be re-run later."""
    rel_paths, hashes, images = [], {}, []
    for index, image in enumerate(request.images):
        rel, digest = ctx.store.save_input(image, "image")
        rel_paths.append(rel)
        hashes[f"image{index}"] = digest
        images.append(str(ctx.store.abs_path(rel)))
    audio = None
    if request.audio:
        rel, digest = ctx.store.save_input(request.audio, "audio")
        rel_paths.append(rel)
        hashes["audio"] = digest
        audio = str(ctx.store.abs_path(rel))
    return replace(request, images=images, audio=audio), rel_paths, hashes


def run_job(
    ctx: StudioContext,
    request: GenerationRequest,
    model_id: str | None = None,
    stop_event: threading.Event | None = None,
    on_progress: Callable[[JobProgress], None] | None = None,
) -> JobResult:
    """Run one generation to a finished gallery row. Never leaves a row 'running' or a half-written video."""
    validate_request(ctx, request)
    model_id = model_id or ctx.default_model
    request, input_paths, input_hashes = copy_inputs(ctx, request)
    if request.seed is None or request.seed < 0:
        request = replace(request, seed=random.randint(0, 2**31 - 1))
    row = ctx.store.create_generation(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or "",
        mode=mode_from_inputs(bool(request.images), bool(request.audio)),
        model_id=model_id,
        seed=request.seed,
        settings=_settings_of(request),
        input_hashes=input_hashes,
        input_paths=input_paths,
        total_steps=request.num_inference_steps,
    )
    gid = row.id
    stop_event = stop_event or threading.Event()
    try:
        video_rel = DataPaths.video_rel(gid)
        started = time.perf_counter()
        if ctx.options.gpus > 1:
            ctx.store.mark_running(gid)
            path, settings = run_worker_group(
                ctx, request, model_id, ctx.store.abs_path(video_rel), gid, stop_event, on_progress
            )
        else:
            pipe = ctx.pipeline(model_id)
            ctx.store.mark_running(gid)
            callback = _progress_callback(ctx, gid, stop_event, on_progress)
            path, settings = generate_to_file(
                pipe, request, ctx.store.abs_path(video_rel), callback_on_step_end=callback
            )
        _remember_speed(ctx, model_id, settings, time.perf_counter() - started)
        thumb_rel = DataPaths.thumb_rel(gid)
        _thumbnail(path, ctx.store.abs_path(thumb_rel))
        ctx.store.mark_done(gid, video_rel, thumb_rel, timings=settings.get("timings"), seed=settings.get("seed"))
        return JobResult(gid, "done", path, settings)
    except GenerationInterrupted as exc:
        ctx.store.mark_stopped(gid, str(exc))
        return JobResult(gid, "stopped", error=str(exc))
    except InputError as exc:
        ctx.store.mark_failed(gid, str(exc))
        return JobResult(gid, "failed", error=str(exc), field=exc.field)
    except Exception as exc:  # keep serving: the row records what went wrong
        ctx.store.mark_failed(gid, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        return JobResult(gid, "failed", error=f"{type(exc).__name__}: {exc}")


def worker_group_command(
    request: GenerationRequest, model_id: str, gpus: int, out: Path, guidance_file: Path
) -> list[str]:
    """`python -m engine generate --gpus N ...` reproducing `request` (the CLI relaunches itself under torchrun)."""
    command = [sys.executable, "-m", "engine", "generate", "--gpus", str(gpus), "--model", model_id,
               "--prompt", request.prompt, "--height", str(request.height), "--width", str(request.width),
               "--steps", str(request.num_inference_steps), "--seed", str(request.seed), "--out", str(out),
               "--resize-mode", request.resize_mode]  # fmt: skip
    for image in request.images:
        command += ["--image", image]
    if request.audio:
        command += ["--audio", request.audio]
    if request.negative_prompt:
        command += ["--negative-prompt", request.negative_prompt]
    if request.num_frames:
        command += ["--frames", str(request.num_frames)]
    if request.guidance:
        guidance_file.write_text(json.dumps(request.guidance))
        command += ["--guidance-json", str(guidance_file)]
    if request.window_frames:
        command += ["--window-frames", str(request.window_frames), "--window-overlap", str(request.window_overlap)]
    return command


def run_worker_group(ctx, request, model_id, out: Path, gid: int, stop_event, on_progress) -> tuple[Path, dict]:
    """Generate on all GPUs with a torchrun worker group; rank 0 reports progress on stdout and writes the file."""
    from engine.media import read_settings
    from engine.pipeline import GenerationInterrupted

    guidance_file = ctx.store.paths.logs / f"guidance-{gid}.json"
    guidance_file.parent.mkdir(parents=True, exist_ok=True)
    command = worker_group_command(request, model_id, ctx.options.gpus, out, guidance_file)
    env = {**os.environ, "HUMO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # fmt: skip
    started, tail = time.perf_counter(), []
    watcher = threading.Thread(target=_stop_when_set, args=(stop_event, process), daemon=True)
    watcher.start()
    for line in process.stdout:
        tail = (tail + [line])[-30:]
        if line.startswith("HUMO_PROGRESS "):
            done, total = (int(v) for v in line.split()[1:3])
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
    from dataclasses import asdict

    settings = asdict(request)
    settings.pop("images", None)
    settings.pop("audio", None)
    return settings


def _thumbnail(video: Path, out: Path) -> None:
    from engine.media import make_thumbnail

    make_thumbnail(video, out, size=256)


def _remember_speed(ctx: StudioContext, model_id: str, settings: dict, seconds: float) -> None:
    passes = sum(settings.get("timings", {}).get("passes_per_step", []) or [1])
    denoise = settings.get("timings", {}).get("denoise_s", seconds)
    tokens = max(1, int(settings.get("num_frames", 1)) * settings.get("height", 16) * settings.get("width", 16))
    ctx.seconds_per_pass[model_id] = (denoise / max(1, passes), tokens)


def _progress_callback(ctx, gid, stop_event, on_progress):
    started = time.perf_counter()
    last_preview = [0.0]

    def callback(pipe, step, timestep, kwargs):
        total = len(pipe.scheduler.timesteps)
        done = step + 1
        elapsed = time.perf_counter() - started
        ctx.store.update_progress(gid, done, total)
        preview = None
        now = time.perf_counter()
        if on_progress is not None and (now - last_preview[0] >= PREVIEW_EVERY_S or done == total):
            last_preview[0] = now
            try:
                preview = pipe.latent_preview(kwargs["latents"]) if kwargs.get("latents") is not None else None
            except Exception:  # a preview must never break a job
                preview = None
        if on_progress is not None:
            window = kwargs.get("window")
            if window:  # long videos report every window of a step: count progress in windows
                index, count = window
                fraction = (step + (index + 1) / count) / total
                remaining = elapsed / max(fraction, 1e-6) * (1 - fraction)
                message = f"step {done}/{total} · window {index + 1}/{count}"
            else:
                remaining = elapsed / done * (total - done)
                message = f"step {done}/{total}"
            on_progress(JobProgress(gid, done, total, elapsed, remaining, preview, message))
        if stop_event.is_set():
            pipe._interrupt = True
        return {}

    return callback


def stream_job(ctx, request, model_id=None, stop_event=None) -> Iterator[JobProgress | JobResult]:
    """Run a job in a worker thread and yield its progress events, then its result (for Gradio generators)."""
    events: queue.Queue = queue.Queue()
    holder: dict = {}

    def work():
        try:
            holder["result"] = run_job(ctx, request, model_id, stop_event, on_progress=events.put)
        except InputError as exc:
            holder["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while True:
        event = events.get()
        if event is None:
            break
        yield event
    thread.join()
    if "error" in holder:
        raise holder["error"]
    yield holder["result"]
