"""Hugging Face Spaces glue: ZeroGPU slots sized to the job when the `spaces` package is present."""

from __future__ import annotations

import functools

from engine.pipeline import DEFAULT_FRAMES

MIN_GPU_SECONDS = 60
MAX_GPU_SECONDS = 900  # a ZeroGPU slot cannot be longer; public mode keeps jobs well inside it


def gpu_duration(steps: int, frames: int, passes: int, seconds_per_pass: float = 0.4) -> int:
    """Seconds to reserve: steps × passes × a per-pass cost scaled by the frame count, plus load/decode margin.

    0.4 s per pass is HuMo-1.7B at 480×832×97 on an H100-class GPU (bench/RESULTS.md order of magnitude)."""
    cost = steps * passes * seconds_per_pass * max(1, frames) / DEFAULT_FRAMES
    return int(min(MAX_GPU_SECONDS, max(MIN_GPU_SECONDS, 30 + 1.2 * cost)))


def _job_duration(
    prompt, image, audio, negative_prompt, model, resolution, height, width, frames, steps, *rest, **kw
) -> int:
    frames = int(frames) if frames else DEFAULT_FRAMES
    passes = 4 if image and audio else 3
    return gpu_duration(int(steps or 50), frames, passes)


def gpu_wrap(fn, ctx=None):
    """`spaces.GPU(duration=...)(fn)` on a Space, `fn` unchanged elsewhere."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    wrapped = spaces.GPU(duration=_job_duration)(fn)
    return functools.wraps(fn)(wrapped)
