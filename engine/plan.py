"""What one run of the denoising loop will execute, worked out once from the request: frames, latent frames, windows
per step, guidance passes per step, tokens of a forward, branch batching, and so the transformer passes and calls.

`HuMoPipeline.__call__` lays its run out with the same pieces (snap_frames, ContextWindows / plan_windows,
`GuidanceSchedule.passes_per_step`) and records the plan it ran in `timings["plan"]`; the studio's time estimate,
GPU-slot size and caps read `plan_run` before the run, so what they plan is what the loop executes (tested by
counting transformer forwards).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from engine.audio import latent_frame_count, snap_frames
from engine.long_video import DEFAULT_WINDOW_OVERLAP, plan_windows

DEFAULT_FRAMES = 97  # trained length when no audio gives one (engine.pipeline re-exports it)


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
    return RunPlan(frames, f_vid, references, tokens, tuple(schedule.passes_per_step(timesteps)), counts, batched)
