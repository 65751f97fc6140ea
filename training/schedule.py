"""HuMo's progressive task mix (reference/humo-official.md §7): in stage 2 each sample is an audio-visual-sync task
with probability p(step), rising from 20 % to 50 % (the paper's 80/20 -> 50/50 subject/AV mix). The paper does not
give the curve; "linear" is the default, "cosine" eases in and out, "step" jumps at the midpoint."""

from __future__ import annotations

import math

SHAPES = ("linear", "cosine", "step", "constant")


def audio_task_probability(
    step: int, total_steps: int, start: float = 0.2, end: float = 0.5, shape: str = "linear", warmup: float = 1.0
) -> float:
    """p(step) of an audio task. `warmup`: the fraction of training over which p moves from start to end."""
    if shape not in SHAPES:
        raise ValueError(f"task schedule shape must be one of {SHAPES}, got {shape!r}")
    if shape == "constant":
        return end
    span = max(1.0, warmup * max(1, total_steps - 1))
    progress = min(1.0, max(0.0, step / span))
    if shape == "cosine":
        progress = 0.5 - 0.5 * math.cos(math.pi * progress)
    elif shape == "step":
        progress = 1.0 if progress >= 0.5 else 0.0
    return start + (end - start) * progress
