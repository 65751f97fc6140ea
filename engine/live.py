"""Live generation: a clip made as a sequence of chunks, each final as soon as it is denoised (DESIGN.md decision 12).

Chunked causal generation is a strategy of the pipeline's one denoising loop, like windowed long video
(engine/long_video.py) and dubbing (engine/dub.py): every chunk is one `HuMoPipeline.__call__` of a trained length,
conditioned on

- the reference image(s) and the prompt (encoded once, the same for every chunk),
- its own audio windows (the voice is encoded once; each chunk windows its own frames, so a chunk's first latent
  frame sees the start-of-clip padding it was trained with),
- the last `motion_frames` frames of the chunk before (4m+1 pixel frames, re-encoded by the VAE as a clip start),
  held as known latents noised to each step's level: `pipe(motion_frames=...)`, the known-latents mechanism dubbing
  uses.

Chunk k covers the global frames [s_k, s_k + chunk_frames) with s_{k+1} = s_k + chunk_frames - motion_frames; its
first `motion_frames` frames re-make the chunk before and are dropped, so it yields the frames after them. Nothing
yielded is ever rewritten, which is what lets a player show it at once. Training-free by default; a model fine-tuned
with the continuation objective (training/continuation.py) takes `motion_hold="clean"` (passed on to every chunk's
pipe call); docs/live.md compares the two, with the measurements. A clip that fits in one chunk is exactly the plain
call.

Python door: `generate_chunks(pipe, ...)` yields `Chunk`s (frames, their voice, timing); `chunked_to_file` writes the
finished mp4 (streamed as a fragmented mp4 that plays while it grows, or whole at the end) the way every other
generation leaves the engine (watermark, AI label, settings).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import audio as audio_lib
from engine.errors import InputError
from engine.long_video import match_colors

DEFAULT_MOTION_FRAMES = 5  # 4m+1 pixel frames = 2 latent frames of the chunk before: a pose and its motion
NANO_CHUNK_FRAMES = 49  # HuMo-nano's trained length (2 s)
SAMPLES_PER_FRAME = audio_lib.SAMPLING_RATE // audio_lib.VIDEO_FPS  # 640 samples of 16 kHz voice per 25-fps frame


@dataclass
class Chunk:
    """One finished piece of a live clip. `frames` [n, H, W, 3] float in [0, 1] are the global frames
    [start_frame, end_frame); `audio` the 16 kHz voice of those frames (None without a voice); `elapsed_s` the wall
    time from the start of the generation to this chunk being final; `last` is True on the clip's last chunk."""

    index: int
    count: int
    frames: np.ndarray
    audio: np.ndarray | None
    start_frame: int
    end_frame: int
    elapsed_s: float
    seed: int
    timings: dict = field(default_factory=dict)

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


def check_chunking(chunk_frames: int, motion_frames: int) -> None:
    """Chunk and motion lengths on the causal VAE's 4n+1 grid, with new frames in every chunk."""
    if not isinstance(chunk_frames, int) or isinstance(chunk_frames, bool) or chunk_frames < 5 or chunk_frames % 4 != 1:
        raise InputError(
            f"chunk_frames must be 4n+1 frames, at least 5 (got {chunk_frames!r}); use the model's trained length "
            f"({NANO_CHUNK_FRAMES} for HuMo-nano, 97 for HuMo-1.7B/17B).",
            field="chunk_frames",
        )
    if (
        not isinstance(motion_frames, int)
        or isinstance(motion_frames, bool)
        or motion_frames < 1
        or motion_frames % 4 != 1
        or motion_frames >= chunk_frames
    ):
        raise InputError(
            f"motion_frames must be 4m+1 frames and fewer than chunk_frames ({chunk_frames}) (got {motion_frames!r}); "
            f"{DEFAULT_MOTION_FRAMES} is the default.",
            field="motion_frames",
        )


def plan_chunks(
    num_frames: int, chunk_frames: int, motion_frames: int = DEFAULT_MOTION_FRAMES
) -> list[tuple[int, int]]:
    """(start, end) global frames each chunk denoises; consecutive chunks share `motion_frames` frames. The last chunk
    is shorter when the clip ends inside it (still 4n+1: every start is a multiple of 4)."""
    check_chunking(chunk_frames, motion_frames)
    num_frames = audio_lib.snap_frames(num_frames)
    spans = [(0, min(chunk_frames, num_frames))]
    while spans[-1][1] < num_frames:
        start = spans[-1][1] - motion_frames
        spans.append((start, min(start + chunk_frames, num_frames)))
    return spans


def chunk_seed(seed: int, index: int) -> int:
    """Chunk k's noise seed: the clip's seed for the first chunk (so one chunk is the plain call), then seed + k."""
    return (seed + index) % 2**31


def _voice(audio) -> np.ndarray | None:
    if audio is None:
        return None
    if isinstance(audio, (str, Path)):
        waveform = audio_lib.load_audio(audio)
        audio_lib.check_voice(waveform, Path(audio).name)
        return waveform
    waveform = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio, np.float32).reshape(-1)
    audio_lib.check_voice(waveform)
    return waveform


def generate_chunks(
    pipe,
    prompt: str | None = None,
    image=None,
    audio=None,
    *,
    num_frames: int | None = None,
    chunk_frames: int | None = None,
    motion_frames: int = DEFAULT_MOTION_FRAMES,
    seed: int | None = None,
    negative_prompt: str | None = None,
    color_match: bool = True,
    callback_on_step_end: Callable | None = None,
    **pipe_kwargs: Any,
) -> Iterator[Chunk]:
    """Generate a clip chunk by chunk; yields each `Chunk` as soon as it is denoised and decoded.

    audio: a path or a 16 kHz waveform; it sets the length (num_frames None) like the plain call. chunk_frames: None ->
    the model's trained length (`pipe.default_frames`: 97, HuMo-nano's 49). `pipe_kwargs` go to
    every chunk's `pipe(...)` (height, width, num_inference_steps, guidance, resize_mode, batch_branches, ...).
    `color_match`: every later chunk's per-channel mean and spread are moved to the first chunk's (the windowed long
    video's colour matching, done causally; the matched frames are the next chunk's motion frames, so no drift builds
    up). Closing the generator (or a callback setting `pipe._interrupt`) stops it; the chunks already yielded stay
    final.
    """
    started = time.perf_counter()
    chunk_frames = chunk_frames or pipe.default_frames
    check_chunking(chunk_frames, motion_frames)
    for name in ("video", "mask", "motion_frames", "latents", "output_type", "window_frames", "audio_embeds"):
        if name in pipe_kwargs:
            raise InputError(f"{name}= is not available in chunked generation.", field=name)
    waveform = _voice(audio)
    if num_frames is None:
        num_frames = audio_lib.num_video_frames(len(waveform)) if waveform is not None else chunk_frames
    num_frames = audio_lib.snap_frames(num_frames)
    spans = plan_chunks(num_frames, chunk_frames, motion_frames)
    seed = random.randint(0, 2**31 - 1) if seed is None else int(seed)

    # Encoded once for every chunk (the same numbers the plain call computes inside).
    device = pipe._execution_device
    prompt_embeds, negative_prompt_embeds = pipe._text_embeds(prompt, negative_prompt, None, None, device)
    features = None
    if waveform is not None:
        features = audio_lib.audio_features(waveform, pipe.audio_encoder, pipe.feature_extractor)

    previous = None  # float frames of the chunk before
    first_chunk = None  # the first chunk's frames: the colours every later chunk is matched to
    for index, (start, end) in enumerate(spans):
        length = end - start
        audio_embeds = None if features is None else audio_lib.window_audio_features(features[start:], length)
        motion = None if previous is None else previous[-motion_frames:]
        output = pipe(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            image=image,
            audio_embeds=audio_embeds,
            num_frames=length,
            seed=chunk_seed(seed, index),
            motion_frames=motion,
            output_type="np",
            callback_on_step_end=callback_on_step_end,
            **pipe_kwargs,
        )
        frames = output.frames[0]
        if color_match and index > 0:  # first chunk + this one; match_colors moves the second block to the first's
            frames = match_colors(np.concatenate([first_chunk, frames]), len(first_chunk))[len(first_chunk) :]
        elif index == 0:
            first_chunk = frames
        first = 0 if index == 0 else motion_frames
        new_start = start + first
        voice = None
        if waveform is not None:
            voice = waveform[new_start * SAMPLES_PER_FRAME : end * SAMPLES_PER_FRAME]
            if index == len(spans) - 1:  # the last chunk carries the voice's tail (the file lasts min(video, audio))
                voice = waveform[new_start * SAMPLES_PER_FRAME :]
        previous = frames
        yield Chunk(
            index=index,
            count=len(spans),
            frames=frames[first:],
            audio=voice,
            start_frame=new_start,
            end_frame=end,
            elapsed_s=time.perf_counter() - started,
            seed=seed,
            timings={k: v for k, v in output.timings.items() if k != "step_s"},
        )


# ---------------------------------------------------------------------------------------------- to a file
def chunked_record(pipe, request, seed: int, num_frames: int, schedule, chunk_frames: int, motion_frames: int) -> dict:
    """The settings of a chunked generation, known before its first chunk (a streamed file's header holds them, and
    its watermark payload is their hash, so they carry no timings)."""
    from engine.generate import settings_record
    from engine.pipeline import HuMoPipelineOutput

    output = HuMoPipelineOutput(frames=None, seed=seed, mode=request.mode, num_frames=num_frames, timings={})
    record = settings_record(pipe, request, output, schedule)
    record.pop("timings", None)
    record["live"] = {"chunk_frames": chunk_frames, "motion_frames": motion_frames}
    return record


@dataclass
class LiveRun:
    """A `GenerationRequest` ready to be made chunk by chunk: the settings record (known before the first chunk: a
    streamed file's header holds it and the watermark payload is its hash) and the chunk generator's arguments."""

    record: dict
    num_frames: int
    kwargs: dict

    def chunks(self, pipe, callback_on_step_end: Callable | None = None) -> Iterator[Chunk]:
        return generate_chunks(pipe, callback_on_step_end=callback_on_step_end, **self.kwargs)

    def mark(self, frames: np.ndarray) -> np.ndarray:
        """A chunk's float frames as uint8 with the invisible watermark every generation carries (the payload of the
        whole clip's settings, so the chunks of one clip carry one mark); records the provenance entry."""
        from engine import media, provenance

        base = {k: v for k, v in self.record.items() if k != "provenance"}
        marked, self.record["provenance"] = provenance.mark_frames(media.to_uint8(frames), base)
        return marked


def plan_live(
    pipe,
    request,
    *,
    chunk_frames: int | None = None,
    motion_frames: int = DEFAULT_MOTION_FRAMES,
    color_match: bool = True,
    advanced: dict | None = None,
) -> LiveRun:
    """Check a request for chunked generation and fix its seed, length and settings (nothing is generated)."""
    from engine.plan import run_schedule

    if request.window_frames is not None:
        raise InputError("Chunked generation replaces windowed long video: leave window_frames unset.", "window_frames")
    chunk_frames = chunk_frames or pipe.default_frames
    check_chunking(chunk_frames, motion_frames)
    kwargs = request.pipeline_kwargs()
    for name in (
        "prompt",
        "image",
        "audio",
        "num_frames",
        "seed",
        "negative_prompt",
        "window_frames",
        "window_overlap",
    ):
        kwargs.pop(name)
    schedule = kwargs["guidance"] = run_schedule(request.guidance, pipe.sampling_defaults, pipe.variant, request.mode)
    waveform = _voice(request.audio)
    num_frames = request.num_frames
    if num_frames is None:
        num_frames = audio_lib.num_video_frames(len(waveform)) if waveform is not None else chunk_frames
    num_frames = audio_lib.snap_frames(num_frames)
    seed = random.randint(0, 2**31 - 1) if request.seed is None else int(request.seed)
    record = chunked_record(pipe, request, seed, num_frames, schedule, chunk_frames, motion_frames)
    record["live"]["color_match"] = bool(color_match)
    if advanced:
        record["advanced"] = advanced  # the run's speed and LoRA options, as engine.generate keeps them
    kwargs.update(prompt=request.prompt, image=list(request.images) or None, audio=waveform, num_frames=num_frames,
                  chunk_frames=chunk_frames, motion_frames=motion_frames, seed=seed,
                  negative_prompt=request.negative_prompt, color_match=color_match)  # fmt: skip
    return LiveRun(record, num_frames, kwargs)


def chunked_to_file(
    pipe,
    request,
    out_path: str | Path,
    *,
    stream: bool = True,
    chunk_frames: int | None = None,
    motion_frames: int = DEFAULT_MOTION_FRAMES,
    color_match: bool = True,
    callback_on_step_end: Callable | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
    fps: int = 25,
    advanced: dict | None = None,
) -> tuple[Path, dict]:
    """A `GenerationRequest` made chunk by chunk into an mp4 with the watermark, AI label and settings every generation
    carries (engine/generate.py). `stream`: a fragmented mp4 written as each chunk is final, playable while it grows;
    else the whole file at the end (the normal writer). Both hold the same frames and settings. `on_chunk` sees every
    chunk after it is in the file. `advanced`: the run's speed and LoRA options (as `generate_to_file`). Returns the
    path and the settings record."""
    from engine import media, provenance
    from engine.generate import c2pa_signer, write_generated

    if stream and provenance.c2pa_configured():
        raise InputError(
            "C2PA signing needs the finished file: drop --stream (or unset HUMO_C2PA_CERT / HUMO_C2PA_KEY).", "stream"
        )
    signer = None if stream else c2pa_signer()
    run = plan_live(pipe, request, chunk_frames=chunk_frames, motion_frames=motion_frames, color_match=color_match,
                    advanced=advanced)  # fmt: skip
    label = provenance.ai_label(run.record["model_id"])
    writer = None
    kept = []
    try:
        for chunk in run.chunks(pipe, callback_on_step_end):
            if stream:
                frames = run.mark(chunk.frames)
                if writer is None:
                    writer = media.FragmentedMp4Writer(
                        out_path, run.num_frames, fps, request.audio, metadata=run.record, ai_label=label
                    )
                writer.write(frames)
            else:
                kept.append(media.to_uint8(chunk.frames))
            if on_chunk is not None:
                on_chunk(chunk)
        if stream:
            return writer.close(), run.record
        return write_generated(np.concatenate(kept), run.record, out_path, request.audio, fps, signer), run.record
    except BaseException:
        if writer is not None:
            writer.abort()  # the fragments already written stay a playable file
        raise


__all__ = [
    "Chunk",
    "DEFAULT_MOTION_FRAMES",
    "NANO_CHUNK_FRAMES",
    "check_chunking",
    "chunk_seed",
    "chunked_record",
    "chunked_to_file",
    "LiveRun",
    "plan_live",
    "generate_chunks",
    "plan_chunks",
]
