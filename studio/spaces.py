"""Hugging Face Spaces glue: where we run, which model a Space opens on, and ZeroGPU slots sized to the job.

ZeroGPU in short (the `spaces` package, 0.51.3, read from its source):
- `SPACES_ZERO_GPU` (1/t/true) marks a ZeroGPU Space. Elsewhere `spaces.GPU(...)(fn)` returns `fn` itself.
- On ZeroGPU, importing `spaces` patches torch: CUDA "exists" in the main process (`is_available()` is True,
  `mem_get_info` reports the slot's memory) but nothing touches a GPU. Models are therefore loaded at start-up and
  moved `.to("cuda")` there (the package records those tensors and moves them into each GPU worker); the decorated
  function runs in a forked worker that holds a real GPU for at most the seconds asked for.
- `duration=` may be a callable: it is called with the same positional and keyword arguments as the function,
  before a GPU is requested, and returns seconds. Default 60 s. A generator function stays a generator function
  (its yields are pickled back from the worker).
- Durations are in H200-slice seconds: a "large" slot (the default) is half an H200 (MIG 3g.71gb, 60 of its 132
  SMs) or half an RTX Pro 6000 Blackwell, for which `spaces` multiplies the request by 1.5 itself; "xlarge" (a whole
  GPU) is charged twice. The longest call is not documented: the scheduler refuses ("illegal duration") a request
  larger than the visitor's whole daily quota, 2 min unauthenticated, 5 min for a free account, 40 min for PRO
  (hub docs, July 2026; spaces' PRO_QUOTA_MINUTES = 40).
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from engine.errors import InputError, MissingWeightsError
from engine.pipeline import DEFAULT_FRAMES

SPACE_MODEL = "humo-1.7b"

MIN_GPU_SECONDS = 30  # shorter reservations get a better place in ZeroGPU's queue
# The longest call a free Hugging Face account may request is its daily quota, 300 s; on the RTX Pro 6000 nodes
# `spaces` multiplies a "large" request by 1.5 (configs.json `duration_factor`), so 200 s is what we may ask for. A
# Space meant for PRO visitors (40 min a day) can raise it: HUMO_GPU_MAX_SECONDS=1200, say.
MAX_GPU_SECONDS = int(os.environ.get("HUMO_GPU_MAX_SECONDS", "200"))
ANONYMOUS_GPU_SECONDS = 80  # 120 s / 1.5: visitors not signed in to huggingface.co are refused above this by ZeroGPU

# Seconds per transformer pass on one H100: the engine's one table (engine.plan.H100_PASS_SECONDS, h100_pass_seconds).
# A ZeroGPU "large" slot computes with 60 SMs against the H100's 132; these jobs are compute bound (57-64 % MFU).
SLOT_SLOWDOWN = 132 / 60
# GB moved to the GPU when a ZeroGPU worker starts: transformer in bf16 + umT5 bf16 11.4 + Whisper encoder fp32 2.5
# + VAE fp32 0.5; at ~2 GB/s host to device. Not measured on ZeroGPU: a margin.
PIPELINE_GB = {"1.7b": 3.5 + 14.4, "17b": 34.1 + 14.4}
LOAD_SECONDS_PER_GB = 0.5
# The rest, in H100 seconds at 480x832x97 unless said (estimates, not measured): umT5 on both prompts, Whisper, VAE
# encode of the references; the VAE decode (scaled by pixels x frames); mp4 writing and the watermark on the CPU.
ENCODE_SECONDS = 3.0
AUDIO_SECONDS_PER_SECOND = 0.05
VAE_DECODE_SECONDS = 15.0
CPU_SECONDS = 2.0
CPU_SECONDS_PER_FRAME = 0.03
SAFETY = 1.25
MIN_USEFUL_STEPS = 8  # fewer steps than a step-distilled model uses is not worth suggesting
MIN_USEFUL_FRAMES = 25  # one second
_FPS = 25
_REFERENCE_VOLUME = 97 * 480 * 832


def on_space() -> bool:
    """Running on a Hugging Face Space (the platform sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def on_zero_gpu() -> bool:
    """A ZeroGPU Space: the variable the `spaces` package itself reads, with its parsing."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def space_default_model() -> str:
    """HuMo-1.7B on a Space when its files are present (preload_from_hub); otherwise the best model present, never
    HuMo-17B on ZeroGPU (it cannot finish in a slot). The caller shows a banner when this is not HuMo-1.7B."""
    from engine.registry import PREFERENCE, best_available_model, is_present

    if on_space() and is_present(SPACE_MODEL):
        return SPACE_MODEL
    if on_zero_gpu():
        return next((m for m in PREFERENCE if m != "humo-17b" and is_present(m)), "tiny")
    return best_available_model()


@dataclass(frozen=True)
class JobCost:
    """What a job costs on the GPU. `passes_total`: transformer passes over all steps for one window (the guidance
    schedule's `total_passes`); `windows`: windows per step of a long video, each `window_frames` long."""

    model_id: str
    steps: int
    frames: int
    height: int
    width: int
    passes_total: int
    windows: int = 1
    window_frames: int = DEFAULT_FRAMES
    references: int = 1


def _variant(model_id: str) -> str:
    from engine.registry import find_spec

    spec = find_spec(model_id)
    return spec.variant if spec is not None else "1.7b"


def _small(model_id: str) -> bool:
    """Models without Hub weights (HuMo-nano, tiny): megabytes, nothing worth timing but the margins."""
    from engine.registry import MODELS

    spec = MODELS.get(model_id)
    return spec is not None and spec.transformer is None


def tokens(frames: int, height: int, width: int, references: int = 1) -> int:
    """Transformer tokens of one pass (engine.plan.run_tokens): (latent frames + reference slots) x (H/16) x (W/16)."""
    from engine.plan import run_tokens

    return run_tokens(frames, height, width, references)


def h100_pass_seconds(variant: str, num_tokens: int) -> float:
    """Seconds of one transformer pass on an H100 (engine.plan's cost table)."""
    from engine.plan import h100_pass_seconds as seconds

    return seconds(variant, num_tokens)


def estimate_seconds(cost: JobCost) -> float:
    """GPU-slot seconds a job needs on a ZeroGPU "large" slot, safety factor included, not clamped."""
    variant = _variant(cost.model_id)
    window = cost.window_frames if cost.windows > 1 else cost.frames
    per_pass = h100_pass_seconds(variant, tokens(window, cost.height, cost.width, cost.references))
    denoise = cost.passes_total * cost.windows * per_pass
    volume = cost.frames * cost.height * cost.width / _REFERENCE_VOLUME
    gpu_rest = ENCODE_SECONDS + AUDIO_SECONDS_PER_SECOND * cost.frames / _FPS + VAE_DECODE_SECONDS * volume
    load = 0.0 if _small(cost.model_id) else LOAD_SECONDS_PER_GB * PIPELINE_GB[variant]
    cpu = CPU_SECONDS + CPU_SECONDS_PER_FRAME * cost.frames * cost.height * cost.width / (480 * 832)
    return SAFETY * ((denoise + gpu_rest) * SLOT_SLOWDOWN + load + cpu)


def gpu_seconds(cost: JobCost, max_seconds: int | None = None) -> int:
    """Seconds to reserve for a job, in [MIN_GPU_SECONDS, max_seconds]; InputError saying what to lower when the job
    would need more than a ZeroGPU call may ask for."""
    limit = MAX_GPU_SECONDS if max_seconds is None else max_seconds
    need = estimate_seconds(cost)
    if need <= limit:
        return int(min(limit, max(MIN_GPU_SECONDS, math.ceil(need))))
    per_step = cost.passes_total / max(1, cost.steps)

    def fits(**change) -> bool:
        if "steps" in change:
            change["passes_total"] = max(1, round(per_step * change["steps"]))
        if "frames" in change and cost.windows > 1:
            change["windows"] = max(1, math.ceil(cost.windows * change["frames"] / cost.frames))
        return estimate_seconds(replace(cost, **change)) <= limit

    steps = next((s for s in range(cost.steps - 1, 0, -1) if fits(steps=s)), 0)
    frames = next((f for f in range(cost.frames - 4, 4, -4) if fits(frames=f)), 0)
    head = (
        f"This job needs about {math.ceil(need)} s of GPU time; one ZeroGPU call may reserve at most {limit} s "
        f"({cost.model_id}, {cost.height}x{cost.width}, {cost.frames} frames, {cost.steps} steps)."
    )
    frames = frames if frames >= MIN_USEFUL_FRAMES else 0
    if steps >= MIN_USEFUL_STEPS:
        field, advice = (
            "steps",
            f" Lower Steps to {steps} or fewer" + (f", or Frames to {frames} or fewer." if frames else "."),
        )
    elif frames:
        field, advice = "num_frames", f" Lower Frames to {frames} or fewer (or the size)."
    else:
        field, advice = "num_frames", " Lower the size, the frames and the steps together."
    if _variant(cost.model_id) == "17b":
        advice += f" {cost.model_id} needs a dedicated GPU: use {SPACE_MODEL} here."
    raise InputError(head + advice, field=field)


def gpu_wrap(fn: Callable, duration_fn: Callable[..., int]) -> Callable:
    """`spaces.GPU(duration=duration_fn)(fn)` where the `spaces` package imports (a no-op off ZeroGPU), else `fn`.

    `duration_fn` gets the same arguments as `fn`; an InputError it raises (gpu_seconds refusing the job) reaches the
    visitor as a gr.Error before any GPU is requested. The result keeps `fn`'s name and signature, and stays a
    generator function when `fn` is one (Gradio streams only those)."""
    try:
        import spaces
    except ImportError:
        return fn

    def duration(*args, **kwargs) -> int:
        try:
            return duration_fn(*args, **kwargs)
        except InputError as exc:
            import gradio as gr

            raise gr.Error(str(exc)) from exc

    wrapped = spaces.GPU(duration=duration)(fn)
    if wrapped is fn:
        return fn
    if inspect.isgeneratorfunction(fn) and not inspect.isgeneratorfunction(wrapped):
        inner = wrapped

        def wrapped(*args, **kwargs):
            yield from inner(*args, **kwargs)

    if getattr(wrapped, "__wrapped__", None) is not fn:
        wrapped = functools.wraps(fn)(wrapped)
    return wrapped


def prepare_models(load_fn: Callable[[str], object], model_ids: Iterable[str]) -> dict[str, object]:
    """On a Space, load each model once at start-up with `load_fn(model_id)` (the studio's `ctx.pipeline`) and return
    {model_id: pipeline}; off a Space, nothing. Under ZeroGPU `spaces` is imported first so that its CUDA emulation
    is active: load_pipeline's default device is then "cuda" and the weights go `.to("cuda")` here, outside the GPU
    function, as ZeroGPU requires. Models whose files are missing are skipped (the studio's banner says so)."""
    if not on_space():
        return {}
    if on_zero_gpu():
        try:
            import spaces  # noqa: F401  (patches torch before any weight is placed)
        except ImportError:
            print("HuMo Studio: SPACES_ZERO_GPU is set but the `spaces` package is missing: pip install spaces")
    loaded = {}
    for model_id in dict.fromkeys(model_ids):
        try:
            loaded[model_id] = load_fn(model_id)
        except MissingWeightsError as exc:
            print(f"HuMo Studio: not preloading {model_id}: {exc}")
    return loaded


__all__ = [
    "ANONYMOUS_GPU_SECONDS",
    "MAX_GPU_SECONDS",
    "MIN_GPU_SECONDS",
    "JobCost",
    "estimate_seconds",
    "gpu_seconds",
    "gpu_wrap",
    "h100_pass_seconds",
    "on_space",
    "on_zero_gpu",
    "prepare_models",
    "space_default_model",
    "tokens",
]
