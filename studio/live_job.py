"""A live generation job (issue #30): the clip made chunk by chunk (engine/live.py), each finished chunk handed to the
page as a short mp4 segment (Gradio's streaming video output plays them as they come, with their voice), the whole
clip in the gallery at the end. Stop keeps the finished chunks: a playable video and a gallery row marked `stopped`.

Live mode is offered for the models whose real-time factor was measured fast enough on this kind of machine
(bench/live_bench.py; docs/live.md): a chunk must be made faster than it plays, or the page waits between chunks.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine import audio as audio_lib
from engine import live, media
from engine.errors import InputError
from engine.generate import GenerationRequest, write_generated
from engine.pipeline import GenerationInterrupted
from studio import jobs, serving
from studio.context import StudioContext
from studio.paths import DataPaths
from studio.store import LOCAL_OWNER

# Seconds of video made per second of wall time, measured by bench/live_bench.py on this project's shared 2-core CPU
# machine (49-frame chunks, 64x64, the model's own steps, 8-s voice; bench/RESULTS.md "Live generation"). A model is
# offered live where a chunk comes at least half as fast as it plays: its first frames show after one chunk (about
# 2 s for HuMo-nano-4step) and a viewer who lets it run a moment then watches without waiting. HuMo-nano's 30 steps
# (0.05: 30 s per 2-s chunk) are not offered; nothing was measured on a GPU, so no GPU model is offered.
MEASURED_CPU_RTF = {"humo-nano-4step": 0.92, "humo-nano": 0.05}
LIVE_MIN_RTF = 0.5


def live_offered(model_id: str | None, device: str = "cpu") -> bool:
    """Whether the studio offers live mode for this model on this device: only where it was measured fast enough."""
    return device == "cpu" and MEASURED_CPU_RTF.get(model_id or "", 0.0) >= LIVE_MIN_RTF


def studio_device(ctx: StudioContext) -> str:
    """ "cpu" or "cuda": where this studio's models run."""
    import torch

    return (ctx.options.device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]


def live_models(model_ids: list[str], device: str = "cpu") -> list[str]:
    return [m for m in model_ids if live_offered(m, device)]


@dataclass
class ChunkReady:
    """A finished chunk for the page: `segment` is a short mp4 of its frames (watermarked) and its voice."""

    generation_id: int
    index: int
    count: int
    segment: Path
    start_frame: int
    end_frame: int
    elapsed_s: float

    @property
    def message(self) -> str:
        return (
            f"◉ live: chunk {self.index + 1}/{self.count} (frames {self.start_frame}–{self.end_frame - 1}) "
            f"ready at {self.elapsed_s:.1f} s"
        )


def segment_folder() -> Path:
    """A folder of the page's segments inside Gradio's cache, under an unguessable name. Gradio reads a segment after
    the job has handed it over (the last ones after the job has ended), so they stay until the cache sweep ages them
    out (studio/serving.py) instead of going with the job."""
    folder = serving.cache_folder() / f"live-{uuid.uuid4().hex}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _segment(folder: Path, run: live.LiveRun, chunk: live.Chunk) -> Path:
    """A chunk as its own small mp4: the watermarked frames and the chunk's voice (Gradio re-times the segments)."""
    frames = run.mark(chunk.frames)
    voice = None
    if chunk.audio is not None and len(chunk.audio):
        voice = audio_lib.write_wav(folder / f"voice{chunk.index:04d}.wav", chunk.audio)
    path = folder / f"chunk{chunk.index:04d}.mp4"
    label = "AI-generated video (HuMo Studio)"
    media.write_video(frames, path, audio=voice, ai_label=label, preset="veryfast")
    if voice is not None:
        voice.unlink(missing_ok=True)
    serving.SERVED.add(str(path))  # aged out with the other served copies
    return path


def run_live_job(
    ctx: StudioContext,
    request: GenerationRequest,
    model_id: str | None = None,
    stop_event: threading.Event | None = None,
    on_progress: Callable | None = None,
    owner: str = LOCAL_OWNER,
    names: dict[str, str] | None = None,
    consent: bool | None = None,
    advanced=None,
) -> jobs.JobResult:
    """`studio.jobs.run_job` made chunk by chunk: `on_progress` gets step progress (`JobProgress`) and every finished
    chunk (`ChunkReady`). Ends in a gallery row: done with the whole clip, stopped with the finished chunks (a
    playable video) or without any, or failed."""
    model_id = model_id or ctx.default_model
    if not live_offered(model_id, studio_device(ctx)):
        raise InputError(
            f"Live mode is not offered for {model_id} here: its chunks were not measured fast enough on this machine "
            f"({', '.join(live_models(list(MEASURED_CPU_RTF))) or 'none'} can). Use Generate.",
            field="model",
        )
    if request.window_frames is not None:
        request = replace(request, window_frames=None)  # live chunks replace the windowed long video
    jobs.validate_request(ctx, request, names)
    request, input_paths, input_hashes = jobs.copy_inputs(ctx, jobs.seeded(request))
    settings = {**jobs._settings_of(request), "live": True}
    gid = jobs.queued_row(ctx, request, model_id, request.mode, settings, input_paths, input_hashes, owner, consent)
    stop_event = stop_event or threading.Event()
    kept: list[np.ndarray] = []

    def work() -> jobs.JobResult:  # in the studio's one job turn, like every job (studio/jobs.py `_in_turn`)
        run = None
        try:
            pipe = ctx.pipeline(model_id)
            ctx.store.mark_running(gid)
            callback = jobs._progress_callback(ctx, gid, stop_event, on_progress)
            run = live.plan_live(pipe, request, advanced=advanced.record(names) if advanced else None)
            started = time.perf_counter()
            folder = segment_folder()
            for chunk in run.chunks(pipe, callback):
                kept.append(media.to_uint8(chunk.frames))
                segment = _segment(folder, run, chunk)
                if on_progress is not None:
                    on_progress(ChunkReady(gid, chunk.index, chunk.count, segment, chunk.start_frame,
                                           chunk.end_frame, time.perf_counter() - started))  # fmt: skip
                if stop_event.is_set():  # Stop between chunks: what is finished stays
                    raise GenerationInterrupted(f"stopped after chunk {chunk.index + 1} of {chunk.count}")
            return _keep(ctx, gid, run, kept, request, stopped=None)
        except GenerationInterrupted as exc:
            if kept:
                return _keep(ctx, gid, run, kept, request, stopped=str(exc))
            return jobs._end_row(ctx, gid, exc)

    return jobs._in_turn(ctx, gid, stop_event, work, owner)


def _keep(ctx, gid: int, run: live.LiveRun, kept: list[np.ndarray], request, stopped: str | None) -> jobs.JobResult:
    """The finished chunks as the row's video (the normal writer: watermark, AI label, settings, the voice cut to the
    frames): done when the clip is complete, else stopped with what was finished."""
    video_rel = DataPaths.video_rel(gid)
    settings = {k: v for k, v in run.record.items() if k != "provenance"}
    if stopped:
        settings["live"] = {**settings["live"], "stopped": stopped, "frames_kept": int(sum(len(k) for k in kept))}
    path = write_generated(np.concatenate(kept), settings, ctx.store.abs_path(video_rel), request.audio, 25)
    if not stopped:
        return jobs._finish(ctx, gid, video_rel, path, settings)
    thumb_rel = DataPaths.thumb_rel(gid)
    jobs._thumbnail(path, ctx.store.abs_path(thumb_rel))
    ctx.store.mark_stopped(gid, stopped, video_path=video_rel, thumbnail_path=thumb_rel)
    return jobs.JobResult(gid, "stopped", path, settings, error=stopped)
