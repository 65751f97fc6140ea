"""Long videos: a clip as long as its audio, made of trained-length temporal windows blended at every step.

This module holds the windowing strategy only; `HuMoPipeline.__call__(..., window_frames=..., window_overlap=...)`
runs it inside the pipeline's own denoising loop, so callbacks, previews, Stop, branch batching, step caches and
CFG / sequence parallelism are the same for short and long clips.

Schedule (per denoising step t_k):
1. The whole clip's latents [1, C, F, h, w] are noised once, like a normal run.
2. The latent frames are covered by windows of W latent frames (by default the trained 97 frames) that
   overlap by O frames. The grid starts at a different offset every step (k · (W − O) / 2 mod (W − O)), so window
   edges never stay on the same frames; the first and last windows are pinned to the clip's ends.
3. Each window is denoised exactly like a short clip: its latent slice + the reference slot(s), its own audio
   windows (+ zero windows for the reference slots), the same text and reference latents, the same guidance
   schedule. The 17B variant gets zero-VAE latents of the window's length.
4. The windows' velocities are blended per frame with weights that ramp linearly from 1/(O+1) to 1 across the
   overlap (1 inside the window; no ramp at the clip's ends), normalised by their sum; the reference slot's
   velocity is the mean over windows. One scheduler step is taken on the whole clip.
5. After decoding, colour matching (optional, on by default) moves the per-channel mean and standard deviation of
   every window-length chunk of frames to those of the first chunk, so slow colour drift across windows is removed.

A clip that fits in one window is a single window covering it, and the pipeline then takes exactly the plain step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_WINDOW_OVERLAP = 4  # latent frames shared by neighbouring windows

Span = tuple[int, int]


def plan_windows(
    num_frames: int, window: int, overlap: int, step_index: int = 0, shift: bool = True
) -> list[tuple[int, int]]:
    """(start, end) latent-frame windows covering [0, num_frames); all of length `window` unless the clip is shorter."""
    if num_frames <= window:
        return [(0, num_frames)]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window): got {overlap} for window {window}")
    stride = window - overlap
    offset = (step_index * stride // 2) % stride if shift else 0
    starts = {0, num_frames - window}
    start = offset
    while start + window <= num_frames:
        starts.add(start)
        start += stride
    starts = sorted(starts)
    # keep coverage with overlap when the shifted grid leaves a gap between the pinned first window and the next
    filled = [starts[0]]
    for s in starts[1:]:
        while s - filled[-1] > stride:
            filled.append(filled[-1] + stride)
        filled.append(s)
    return [(s, s + window) for s in sorted(set(filled))]


def blend_weights(windows: list[tuple[int, int]], num_frames: int, overlap: int) -> list[torch.Tensor]:
    """Per-window frame weights, normalised so they sum to 1 on every frame."""
    raw = []
    for start, end in windows:
        length = end - start
        w = torch.ones(length)
        ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        if overlap and start > 0:
            w[: min(overlap, length)] = ramp[: min(overlap, length)]
        if overlap and end < num_frames:
            w[-min(overlap, length) :] = torch.minimum(
                w[-min(overlap, length) :], ramp.flip(0)[-min(overlap, length) :]
            )
        raw.append(w)
    total = torch.zeros(num_frames)
    for (start, end), w in zip(windows, raw):
        total[start:end] += w
    return [w / total[start:end] for (start, end), w in zip(windows, raw)]


def match_colors(video: np.ndarray, chunk: int) -> np.ndarray:
    """Per-channel mean/std of every `chunk`-frame block moved to those of the first block ([F, H, W, 3] in [0, 1])."""
    out = video.copy()
    ref = video[:chunk].reshape(-1, 3)
    ref_mean, ref_std = ref.mean(0), ref.std(0) + 1e-6
    for start in range(chunk, len(video), chunk):
        block = video[start : start + chunk]
        flat = block.reshape(-1, 3)
        mean, std = flat.mean(0), flat.std(0) + 1e-6
        out[start : start + chunk] = np.clip((block - mean) / std * ref_std + ref_mean, 0, 1)
    return out


@dataclass(frozen=True)
class ContextWindows:
    """Temporal windows over `num_frames` latent video frames: `window` latent frames each, `overlap` shared by
    neighbours, the grid shifted every step when `shift`. `for_step(k)` gives the (span, weights) pairs of step k."""

    num_frames: int
    window: int
    overlap: int = DEFAULT_WINDOW_OVERLAP
    shift: bool = True

    @classmethod
    def single(cls, num_frames: int) -> ContextWindows:
        """One window over the whole clip: the plain pipeline."""
        return cls(num_frames, num_frames, 0, False)

    @property
    def length(self) -> int:
        """Latent video frames of one window."""
        return min(self.window, self.num_frames)

    @property
    def windowed(self) -> bool:
        """True when the clip needs more than one window."""
        return self.num_frames > self.window

    def for_step(self, step_index: int) -> list[tuple[Span, torch.Tensor]]:
        windows = plan_windows(self.num_frames, self.window, self.overlap, step_index, self.shift)
        return list(zip(windows, blend_weights(windows, self.num_frames, self.overlap)))


def window_slice(x: torch.Tensor, span: Span, num_frames: int, dim: int) -> torch.Tensor:
    """The frames `span` of the video part of `x` (first `num_frames` along `dim`) followed by its reference slots."""
    start, end = span
    refs = x.narrow(dim, num_frames, x.shape[dim] - num_frames)
    return torch.cat([x.narrow(dim, start, end - start), refs], dim=dim)


def accumulate_window(
    total: torch.Tensor, velocity: torch.Tensor, span: Span, weight: torch.Tensor, num_windows: int, num_frames: int
) -> None:
    """Add one window's velocity [B, C, L + N_ref, h, w] into the clip's `total` in place: the video frames weighted
    per frame, the reference slots averaged over the step's windows."""
    start, end = span
    length = end - start
    total[:, :, start:end] += velocity[:, :, :length] * weight.view(1, 1, -1, 1, 1).to(velocity)
    total[:, :, num_frames:] += velocity[:, :, length:] / num_windows


def seam_report(video: np.ndarray, boundaries: list[int]) -> dict:
    """Frame-to-frame change at window boundaries vs inside windows (mean abs difference per frame pair)."""
    diffs = np.abs(np.diff(video.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    at = [float(diffs[b - 1]) for b in boundaries if 0 < b < len(video)]
    inside = [float(d) for i, d in enumerate(diffs) if i + 1 not in boundaries]
    return {"seams": at, "within_max": max(inside), "within_p95": float(np.percentile(inside, 95))}
