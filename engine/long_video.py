"""Long videos: a clip as long as its audio, made of trained-length temporal windows blended at every step.

Schedule (per denoising step t_k):
1. The whole clip's latents [1, 16, F, h, w] are noised once, like a normal run.
2. The latent frames are covered by windows of W latent frames (default 25 = the trained 97 frames) that
   overlap by O frames. The grid starts at a different offset every step (k · (W − O) / 2 mod (W − O)), so window
   edges never stay on the same frames; the first and last windows are pinned to the clip's ends.
3. Each window is denoised exactly like a short clip: its latent slice + the reference slot(s), its own audio
   windows (+ zero windows for the reference slots), the same text and reference latents, the same guidance
   schedule (`HuMoPipeline._predict`). The 17B variant gets zero-VAE latents of the window's length.
4. The windows' velocities are blended per frame with weights that ramp linearly from 1/(O+1) to 1 across the
   overlap (1 inside the window; no ramp at the clip's ends), normalised by their sum; the reference slot's
   velocity is the mean over windows. One scheduler step is taken on the whole clip.
5. After decoding, colour matching (optional, on by default) moves the per-channel mean and standard deviation of
   every window-length chunk of frames to those of the first chunk, so slow colour drift across windows is removed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

from engine.guidance import GuidanceSchedule
from engine.pipeline import GenerationInterrupted, HuMoPipeline, HuMoPipelineOutput, mode_from_inputs


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


@torch.no_grad()
def generate_long(
    pipe: HuMoPipeline,
    prompt: str,
    image=None,
    audio=None,
    *,
    window_frames: int = 97,
    overlap_frames: int = 4,
    height: int = 480,
    width: int = 832,
    num_frames: int | None = None,
    num_inference_steps: int = 50,
    guidance: GuidanceSchedule | None = None,
    seed: int | None = None,
    negative_prompt: str | None = None,
    color_match: bool = True,
    window_shift: bool = True,
    callback: Callable[[int, int, int, int], None] | None = None,
    output_type: str = "np",
) -> HuMoPipelineOutput:
    """Generate a clip of any length (by default the audio's) with temporal context windows; see the module doc.

    `window_frames` is in video frames (4n+1), `overlap_frames` in latent frames. A clip that fits one window is
    the plain pipeline's output. `callback(window, num_windows, step, num_steps)` reports per-window progress.
    """
    images = [] if image is None else (list(image) if isinstance(image, (list, tuple)) else [image])
    mode = mode_from_inputs(bool(images), audio is not None)
    pipe.check_inputs(prompt, height, width, None, num_inference_steps, images, audio, None)  # any length
    device = pipe._execution_device
    audio_embeds = None
    if audio is not None:
        audio_embeds, num_frames = pipe.encode_audio(audio, num_frames)
    num_frames = num_frames or 97
    f_vid = (num_frames - 1) // 4 + 1
    window = (window_frames - 1) // 4 + 1
    if f_vid <= window:
        return pipe(prompt=prompt, image=image, audio_embeds=audio_embeds, num_frames=num_frames, height=height,
                    width=width, num_inference_steps=num_inference_steps, guidance=guidance, seed=seed,
                    negative_prompt=negative_prompt, output_type=output_type)  # fmt: skip
    schedule = guidance or pipe.default_guidance(mode)
    schedule.validate()
    pos, neg = pipe.encode_prompt(prompt, negative_prompt, device=device)
    h, w = height // 8, width // 8
    ref_latents = pipe.encode_image(images, height, width, device=device) if images else None
    num_ref = ref_latents.shape[2] if ref_latents is not None else 1
    full_audio = pipe._pad_audio(audio_embeds, f_vid, 0, device)[0]  # [F_vid, 8, 5, C] (zeros without audio)
    zero = pipe.zero_vae_latents(window + num_ref, height, width) if pipe.variant == "17b" else None
    seed = random.randint(0, 2**31 - 1) if seed is None else int(seed)
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = pipe.prepare_latents((1, 16, f_vid + num_ref, h, w), generator, device)
    pipe.scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = pipe.scheduler.timesteps
    batched = device.type != "cuda"
    pipe._interrupt = False
    for k, t in enumerate(timesteps):
        windows = plan_windows(f_vid, window, overlap_frames, k, window_shift)
        weights = blend_weights(windows, f_vid, overlap_frames)
        velocity = torch.zeros_like(latents)
        for index, ((start, end), weight) in enumerate(zip(windows, weights)):
            chunk = torch.cat([latents[:, :, start:end], latents[:, :, f_vid:]], dim=2)
            audio_chunk = pipe._pad_audio(full_audio[start:end], end - start, num_ref, device)
            branches = {b for b in schedule.branches_for(int(t.item()))}
            conditions = {
                b: pipe.build_condition(
                    chunk,
                    b,
                    prompt_embeds=pos,
                    negative_prompt_embeds=neg,
                    ref_latents=ref_latents,
                    zero_latents=zero[:, :, : end - start + num_ref] if zero is not None else None,
                    audio_embeds=audio_chunk,
                    num_ref=num_ref,
                )  # fmt: skip
                for b in branches
            }
            v = pipe._predict(schedule, t, conditions, batched)
            velocity[:, :, start:end] += v[:, :, : end - start] * weight.view(1, 1, -1, 1, 1).to(v)
            velocity[:, :, f_vid:] += v[:, :, end - start :] / len(windows)
            if callback is not None:
                callback(index, len(windows), k, len(timesteps))
            if pipe._interrupt:
                raise GenerationInterrupted(f"stopped at step {k + 1} of {len(timesteps)}, window {index + 1}")
        latents = pipe.scheduler.step(velocity, t, latents, return_dict=False)[0]
    video_latents = latents[:, :, :f_vid]
    if output_type == "latent":
        frames = video_latents
    else:
        video = pipe.decode_latents(video_latents)[0]
        frames = ((video.permute(1, 2, 3, 0) + 1) / 2).cpu().numpy().astype(np.float32)
        frames = frames[:num_frames]
        if color_match:
            frames = match_colors(frames, window_frames)
    return HuMoPipelineOutput(frames=[frames], seed=seed, mode=mode, num_frames=num_frames, timings={})


def seam_report(video: np.ndarray, boundaries: list[int]) -> dict:
    """Frame-to-frame change at window boundaries vs inside windows (mean abs difference per frame pair)."""
    diffs = np.abs(np.diff(video.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    at = [float(diffs[b - 1]) for b in boundaries if 0 < b < len(video)]
    inside = [float(d) for i, d in enumerate(diffs) if i + 1 not in boundaries]
    return {"seams": at, "within_max": max(inside), "within_p95": float(np.percentile(inside, 95))}
