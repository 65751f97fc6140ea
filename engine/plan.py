"""What one run of the denoising loop will execute, worked out once from the request: its mode (`mode_of`, the one
place it is derived), its guidance schedule (`run_schedule`), frames, latent frames, windows per step, guidance passes
per step, tokens of a forward, branch batching, and so the transformer passes and calls, and what they cost on an
H100 (`h100_pass_seconds`, the one cost table: the ZeroGPU slot size and the fast recipes read it).

`HuMoPipeline.__call__` lays its run out with the same pieces (snap_frames, ContextWindows / plan_windows,
`GuidanceSchedule.passes_per_step`) and records the plan it ran in `timings["plan"]`; the studio's time estimate,
GPU-slot size and caps read `plan_run` before the run, so what they plan is what the loop executes (tested by
counting transformer forwards).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from engine.audio import latent_frame_count, snap_frames
from engine.errors import InputError
from engine.long_video import DEFAULT_WINDOW_OVERLAP, plan_windows

DEFAULT_FRAMES = 97  # trained length when no audio gives one (engine.pipeline re-exports it)
MAX_FRAMES = 4 * 1024 + 1  # RoPE table size bounds the latent frame count; long videos use windows (issue #6)
MAX_SIDE = 4096
MODE_NAMES = {"TIA": "text + image + audio", "TA": "text + audio", "TI": "text + image", "T": "text only"}


def _given(value) -> bool:
    """Whether an input is there: None, "" and an empty list are not; a path, a Gradio file dict, an image, a
    waveform (an array, whose truth value is ambiguous) and a non-empty list are."""
    if value is None:
        return False
    if isinstance(value, (str, list, tuple, dict)):
        return any(_given(v) for v in value) if isinstance(value, (list, tuple)) else bool(value)
    return True


def mode_of(images=None, audio=None) -> str:
    """TIA / TA / TI / T: the conditions a run has, from its inputs (the reference image(s), or a list of them, and
    the voice: a path, a waveform or its embeddings). The one place a mode is derived: the pipeline, the CLI, the
    studio's panel, estimate and gallery row, live chunks and dubs (whose reference is a source frame) call it."""
    return "T" + ("I" if _given(images) else "") + ("A" if _given(audio) else "")


def check_run_inputs(prompt, height, width, num_frames, num_inference_steps, window_frames=None,
                     window_overlap=DEFAULT_WINDOW_OVERLAP, prompt_embeds=None) -> None:  # fmt: skip
    """The one copy of a run's checks (InputError naming the field): a prompt, the size, frames, steps and long-video
    windows. `HuMoPipeline.__call__` runs them, and the studio's `validate_request` before a job's row exists."""
    if prompt is None and prompt_embeds is None:
        raise InputError("Type a prompt describing the scene and the action.", field="prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InputError("The prompt must be a single string.", field="prompt")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 16 or value % 16:
            raise InputError(f"{name.capitalize()} must be a positive multiple of 16 (got {value!r}).", field=name)
        if value > MAX_SIDE:
            raise InputError(f"{name.capitalize()} {value} is too large: use at most {MAX_SIDE}.", field=name)
    if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
        raise InputError(f"Frames must be at least 1 (got {num_frames!r}; none: from the audio).", field="num_frames")
    if num_frames is not None and num_frames > MAX_FRAMES and window_frames is None:
        raise InputError(
            f"At most {MAX_FRAMES} frames in one pass (got {num_frames}); set window_frames for longer clips.",
            field="num_frames",
        )
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1 or num_inference_steps > 1000:
        raise InputError(f"Steps must be a whole number from 1 to 1000 (got {num_inference_steps!r}).", field="steps")
    _check_windows(window_frames, window_overlap)


def _check_windows(window_frames, window_overlap) -> None:
    if window_frames is None:
        return
    if not isinstance(window_frames, int) or isinstance(window_frames, bool) or not 1 <= window_frames <= MAX_FRAMES:
        raise InputError(
            f"window_frames must be a whole number of frames from 1 to {MAX_FRAMES} (got {window_frames!r}); "
            f"{DEFAULT_FRAMES} is the trained length.",
            field="window_frames",
        )
    window = latent_frame_count(snap_frames(window_frames))
    if not isinstance(window_overlap, int) or isinstance(window_overlap, bool) or not 0 <= window_overlap < window:
        raise InputError(
            f"window_overlap must be from 0 to {window - 1} latent frames for windows of {window_frames} frames "
            f"(got {window_overlap!r}).",
            field="window_overlap",
        )


def run_schedule(guidance, defaults, variant: str, mode: str):
    """The `GuidanceSchedule` a run samples with: the request's own, else the model's preset for its mode
    (`defaults`: the model's `engine.defaults.SamplingDefaults`, on a loaded pipeline or read from its spec)."""
    return guidance if guidance is not None else defaults.guidance(variant, mode)


@dataclass(frozen=True)
class RunPlan:
    """One run's work. `passes` counts every guidance branch evaluated (a batched forward holds several);
    `forwards` counts transformer calls."""

    frames: int
    latent_frames: int
    references: int
    tokens: int  # of one forward: one window + the reference slots, 2x2 patches
    passes_per_step: tuple[int, ...]
    windows_per_step: tuple[int, ...]
    batched: bool
    mode: str = ""  # mode_of the run's inputs ("" where the planner was not told: a schedule without its mode)

    @property
    def steps(self) -> int:
        return len(self.passes_per_step)

    @property
    def windows(self) -> int:
        return max(self.windows_per_step)

    @property
    def passes(self) -> int:
        return sum(p * n for p, n in zip(self.passes_per_step, self.windows_per_step, strict=True))

    @property
    def forwards(self) -> int:
        return sum(self.windows_per_step) if self.batched else self.passes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passes": self.passes, "forwards": self.forwards, "windows": self.windows}


def run_frames(num_frames: int | None, audio_frames: int | None) -> int:
    """The frames a run makes: those asked for, else the voice's whole length, else the trained 97; on 4n+1."""
    if num_frames is not None:
        return snap_frames(num_frames)
    return snap_frames(audio_frames) if audio_frames else DEFAULT_FRAMES


def voice_frames(audio) -> int | None:
    """N25 of a voice (path or 16 kHz waveform): the whole 25-fps frames it covers, as the pipeline counts them."""
    if audio is None:
        return None
    from engine.audio import load_audio, num_video_frames

    waveform = load_audio(audio) if isinstance(audio, (str, bytes)) or hasattr(audio, "__fspath__") else audio
    return max(1, num_video_frames(len(waveform)))


def header_voice_frames(path) -> int | None:
    """N25 of a voice file from its container header alone (nothing decoded: a 2-hour upload costs milliseconds):
    what admission and the page's estimate plan with, before any cap has been checked. None without a length."""
    from engine.audio import VIDEO_FPS, probe_audio

    seconds = probe_audio(path).duration_s
    return None if seconds is None else max(1, int(seconds * VIDEO_FPS))


def plan_run(
    schedule,
    timesteps,
    frames: int,
    height: int,
    width: int,
    references: int = 1,
    window_frames: int | None = None,
    window_overlap: int = DEFAULT_WINDOW_OVERLAP,
    window_shift: bool = True,
    batched: bool = True,
    vae_scale_factor_spatial: int = 8,
    patch: int = 2,
    mode: str | None = None,
) -> RunPlan:
    """The plan of a run of `frames` (already on 4n+1) on this timestep grid (`scheduler.timesteps`, or
    `engine.schedulers.official_timesteps(steps, shift)` before a model is loaded)."""
    timesteps = [int(t) for t in timesteps]
    f_vid = latent_frame_count(frames)
    window = latent_frame_count(snap_frames(window_frames)) if window_frames else f_vid
    counts = tuple(
        len(plan_windows(f_vid, window, window_overlap, k, window_shift)) if f_vid > window else 1
        for k in range(len(timesteps))
    )
    references = max(1, references)  # no image: one zero slot
    side = vae_scale_factor_spatial * patch
    tokens = (min(window, f_vid) + references) * (height // side) * (width // side)
    passes = tuple(schedule.passes_per_step(timesteps))
    return RunPlan(frames, f_vid, references, tokens, passes, counts, batched, mode or schedule.mode or "")


BATCH_TOKEN_LIMIT = 16384  # tokens x branches above which a GPU runs the branches one by one (bench/RESULTS.md)


def batch_pays(device_type: str, tokens: int, passes_per_step: int) -> bool:
    """Whether batching a step's guidance branches into one forward pays, before memory is asked: always off a GPU
    (it amortises per-call overhead), on one only for small token counts (real sizes are compute bound)."""
    return device_type != "cuda" or tokens * passes_per_step <= BATCH_TOKEN_LIMIT


def plan_request(request, defaults, variant: str, frames: int, batched: bool = True) -> RunPlan:
    """The plan of a request (an engine.generate.GenerationRequest, or a dub's: anything with `mode`, `guidance`,
    `num_inference_steps`, `height`, `width`, `window_frames`, `window_overlap`, and `images` where it has some) before
    its model is loaded: what the studio's estimate, caps and GPU slot read. `defaults`: the model's
    engine.defaults.SamplingDefaults (what the request leaves None, the flow shift of its timestep grid); `frames`:
    the frames it will make (`run_frames`)."""
    from engine.schedulers import official_timesteps

    schedule = run_schedule(request.guidance, defaults, variant, request.mode)
    steps = request.num_inference_steps or defaults.num_inference_steps
    timesteps = official_timesteps(max(1, int(steps)), defaults.flow_shift)
    return plan_run(schedule, timesteps, frames, request.height or defaults.height, request.width or defaults.width,
                    len(getattr(request, "images", ())) or 1, request.window_frames, request.window_overlap,
                    batched=batched, mode=request.mode)  # fmt: skip


def run_tokens(frames: int, height: int, width: int, references: int = 1) -> int:
    """Tokens of one forward over `frames` frames (4n+1) and the reference slots, 2x2 patches of the 8x VAE grid."""
    return (latent_frame_count(frames) + max(1, references)) * (height // 16) * (width // 16)


# ---------------------------------------------------------------------------------------------- the cost table
# Seconds per transformer pass on one H100 80GB (bf16, SDPA, bench/RESULTS.md, `bench/gpu_bench.py`, 2026-11-24):
# (tokens, seconds) at 480x832x97 and 720x1280x97. Both sizes fit t(L) = a*L + b*L^2 exactly (projections/FFN
# linear in the tokens, attention quadratic). The one table: studio.spaces sizes a ZeroGPU slot from it and
# engine.speed's fast recipes state their time with it.
H100_PASS_SECONDS = {
    "1.7b": ((40_560, 0.940), (93_600, 3.798)),
    "17b": ((40_560, 5.109), (93_600, 19.056)),
}


def h100_pass_seconds(variant: str, num_tokens: int) -> float:
    """Seconds of one transformer pass on an H100, from the two measured sizes (a*L + b*L^2 through both)."""
    (l1, t1), (l2, t2) = H100_PASS_SECONDS[variant]
    b = (t2 / l2 - t1 / l1) / (l2 - l1)
    a = t1 / l1 - b * l1
    return a * num_tokens + b * num_tokens**2


def h100_denoise_seconds(plan: RunPlan, variant: str) -> float:
    """Denoising time of a plan on one H100: every pass of every window at the plan's tokens."""
    return plan.passes * h100_pass_seconds(variant, plan.tokens)
