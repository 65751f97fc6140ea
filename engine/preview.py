"""Cheap latent -> RGB previews for progress callbacks, from a linear map fitted to the VAE once.

How the fit is done: `num_samples` synthetic images (flat colours, two-colour gradients at random angles, soft
colour blobs on a coloured background, four-colour quadrants; drawn from a fixed seed) of `image_size` pixels are
encoded by the given VAE as one-frame clips (posterior mean), then normalised with the VAE's `latents_mean` /
`latents_std`, the same normalisation the pipeline's latents carry. Each latent pixel is paired with the RGB of the
VAE's own decode of that latent averaged over the pixels it covers (the spatial factor, 8 for Wan), in [-1, 1] -- the
colours a video made by this VAE shows -- and a weight [C, 3] plus a bias [3] are fitted by ridge-regularised least
squares over all pairs. Applying it costs one small matmul per preview, with no VAE decode. Previews show the first
latent frame, the one a causal VAE encodes alone, as an image (see `latents_to_preview`).

The result is cached on disk under `cache_dir` (argument, else $HUMO_CACHE_DIR, else ~/.cache/humo-studio),
keyed by a hash of the VAE config, its dtype, a fingerprint of its first and last parameters (so different
weights with the same config do not share a fit) and the fit settings; a real Wan VAE is fitted once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

FIT_VERSION = 2  # 2: fitted to the VAE's decoded pictures
DEFAULT_CACHE_DIR = Path("~/.cache/humo-studio")
Projection = tuple[torch.Tensor, torch.Tensor]  # weight [C, 3], bias [3]


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache folder: the argument, else $HUMO_CACHE_DIR, else ~/.cache/humo-studio."""
    return Path(path or os.environ.get("HUMO_CACHE_DIR") or DEFAULT_CACHE_DIR).expanduser()


def synthetic_images(num_samples: int, size: int, seed: int = 0) -> torch.Tensor:
    """Colourful smooth test images [N, 3, size, size] in [-1, 1] (deterministic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    images = []
    for i in range(num_samples):
        kind = i % 4
        if kind == 0:  # flat colour
            img = np.broadcast_to(rng.random(3)[:, None, None], (3, size, size))
        elif kind == 1:  # gradient between two colours at a random angle
            angle = rng.uniform(0, 2 * np.pi)
            ramp = (np.cos(angle) * xx + np.sin(angle) * yy + 1.5) / 3.0
            a, b = rng.random(3), rng.random(3)
            img = a[:, None, None] * (1 - ramp) + b[:, None, None] * ramp
        elif kind == 2:  # soft blobs on a coloured background
            img = np.broadcast_to(rng.random(3)[:, None, None], (3, size, size)).copy()
            for _ in range(3):
                cy, cx, r = rng.random(), rng.random(), rng.uniform(0.1, 0.35)
                weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
                img = img * (1 - weight) + rng.random(3)[:, None, None] * weight
        else:  # four flat quadrants
            img = np.empty((3, size, size))
            half = size // 2
            for qy in (0, 1):
                for qx in (0, 1):
                    img[:, qy * half : (qy + 1) * half or None, qx * half : (qx + 1) * half or None] = rng.random(3)[
                        :, None, None
                    ]
        images.append(np.asarray(img, dtype=np.float32) * 2 - 1)
    return torch.from_numpy(np.stack(images))


def _normalise(vae, z: torch.Tensor) -> torch.Tensor:
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    if mean is None or std is None or len(mean) != z.shape[1]:
        return z
    shape = (1, -1) + (1,) * (z.ndim - 2)
    return (z - torch.tensor(mean, dtype=z.dtype).view(shape)) / torch.tensor(std, dtype=z.dtype).view(shape)


def _vae_dtype(vae) -> torch.dtype:
    dtype = getattr(vae, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else next(vae.parameters()).dtype


def _cache_key(vae, num_samples: int, image_size: int) -> str:
    config = json.dumps(dict(vae.config), sort_keys=True, default=str)
    params = list(vae.parameters())
    digest = hashlib.sha256(f"{FIT_VERSION}|{config}|{_vae_dtype(vae)}|{num_samples}|{image_size}".encode())
    for p in (params[0], params[-1]) if params else ():
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


@torch.no_grad()
def _encode(vae, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    return _normalise(vae, _encode_raw(vae, images, batch_size))[:, :, 0]  # [N, C, h, w]


@torch.no_grad()
def _encode_raw(vae, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Posterior means [N, C, 1, h, w] of images [N, 3, H, W] encoded as one-frame clips (not normalised)."""
    device = next(vae.parameters()).device
    latents = []
    for start in range(0, len(images), batch_size):
        clip = images[start : start + batch_size, :, None].to(device, _vae_dtype(vae))
        latents.append(vae.encode(clip).latent_dist.mode().float().cpu())
    return torch.cat(latents)


@torch.no_grad()
def _decode(vae, latents: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """The VAE's own pictures [N, 3, H, W] in [-1, 1] of raw latents [N, C, 1, h, w]: what a video shows."""
    device = next(vae.parameters()).device
    frames = []
    for start in range(0, len(latents), batch_size):
        z = latents[start : start + batch_size].to(device, _vae_dtype(vae))
        frames.append(vae.decode(z).sample.float().cpu().clamp(-1, 1)[:, :, 0])
    return torch.cat(frames)


def _lstsq(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> Projection:
    """Weight [C, 3] and bias [3] minimising |x W + b − y|² + ridge·mean(diag)·|W|²."""
    x, y = x.double(), y.double()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    gram = design.T @ design
    penalty = ridge * gram.diagonal()[:-1].mean().clamp_min(1e-12)
    gram[:-1, :-1] += penalty * torch.eye(x.shape[1], dtype=x.dtype)  # no penalty on the bias
    beta = torch.linalg.solve(gram, design.T @ y)
    return beta[:-1].float().contiguous(), beta[-1].float().contiguous()


def fit_latent_rgb_projection(
    vae,
    num_samples: int = 32,
    image_size: int = 64,
    cache_dir_path: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Projection:
    """Fit (or load from the cache) a linear map from normalised VAE latent channels to RGB in [-1, 1]."""
    folder = cache_dir(cache_dir_path)
    path = folder / f"latent_rgb_{_cache_key(vae, num_samples, image_size)}.json"
    if use_cache and path.is_file():
        try:
            data = json.loads(path.read_text())
            return torch.tensor(data["weight"]), torch.tensor(data["bias"])
        except (ValueError, KeyError, OSError):
            pass  # unreadable cache entry: fit again and overwrite it
    raw = _encode_raw(vae, synthetic_images(num_samples, image_size))
    latents = _normalise(vae, raw)[:, :, 0]  # [N, C, h, w], as the pipeline holds them
    h, w = latents.shape[-2:]
    # The target is the VAE's decode of the latents, not the input image: the preview must show the colours the
    # video will have, and a small VAE (HuMo-nano's) does not give back saturated colours it never saw.
    targets = F.adaptive_avg_pool2d(_decode(vae, raw), (h, w))  # [N, 3, h, w]: the pixels each latent covers
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    y = targets.permute(0, 2, 3, 1).reshape(-1, 3)
    weight, bias = _lstsq(x, y)
    if use_cache:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps({"weight": weight.tolist(), "bias": bias.tolist(), "version": FIT_VERSION}))
        os.replace(tmp, path)
    return weight, bias


def project_latents(latents: torch.Tensor, projection: Projection) -> torch.Tensor:
    """Latents [C, ..., h, w] -> RGB [3, ..., h, w] in [-1, 1] (unclamped)."""
    weight, bias = projection
    lat = latents.detach().float().cpu()
    rgb = torch.einsum("c...,cd->d...", lat, weight.float())
    return rgb + bias.float().view(-1, *([1] * (rgb.ndim - 1)))


def latents_to_preview(
    latents: torch.Tensor, projection: Projection, frame: int | None = None, scale: int = 8
) -> PIL.Image.Image:
    """RGB preview (PIL, uint8) of one latent frame of [C, F, h, w] or [B, C, F, h, w] latents (batch 0).

    frame None -> the first frame: Wan's causal VAE encodes the first frame on its own, as an image, which is what
    the projection is fitted on (one-frame clips); later latent frames carry what changed over four frames, which a
    linear map reads well for Wan's VAE but not for every VAE (HuMo-nano's middle frame previewed green while its
    video was red). The image is upscaled `scale`x (bilinear) to about the decoded size.
    """
    if latents.ndim == 5:
        latents = latents[0]
    if latents.ndim != 4:
        raise ValueError(f"expected latents [C, F, h, w] or [B, C, F, h, w], got shape {tuple(latents.shape)}")
    index = 0 if frame is None else frame
    rgb = project_latents(latents[:, index], projection).clamp(-1, 1)
    array = ((rgb + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = PIL.Image.fromarray(array)
    if scale and scale != 1:
        image = image.resize((image.width * scale, image.height * scale), PIL.Image.Resampling.BILINEAR)
    return image


# ---------------------------------------------------------------- predicted clean video (x0) previews
PREVIEW_SHARE = 0.10  # previews may cost at most this share of the job's denoising time
PREVIEW_MAX_SIDE = 256  # px: the preview video's longer side
DECODERS = ("projection", "vae")


def step_sigma(scheduler, step: int) -> float:
    """The noise level the latents are at after `step` (the scheduler's next sigma; 0 after the last step)."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None or step + 1 >= len(sigmas):
        return 0.0
    return float(sigmas[step + 1])


def predicted_clean(latents: torch.Tensor, noise_pred: torch.Tensor, sigma: float) -> torch.Tensor:
    """The flow-matching prediction of the clean latents: x_t = (1 − σ)·x0 + σ·noise and v = noise − x0 give
    x0 = x_t − σ·v. `latents` are the step's result at level σ (`step_sigma`), `noise_pred` the step's guided
    velocity (the loop's `callback_on_step_end` tensors). Exact for the Euler step; UniPC's multistep update moves
    the latents along a corrected velocity, so there it is the prediction through the model's own velocity."""
    return latents.float() - float(sigma) * noise_pred.float()


def _preview_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)


@torch.no_grad()
def projection_frames(x0: torch.Tensor, projection: Projection, spatial: int = 8, max_side: int = PREVIEW_MAX_SIDE):
    """[C, F, h, w] clean latents -> uint8 frames [F, H, W, 3] through the fitted linear map, upsampled (bilinear)
    to about the video's size, at most `max_side` px. One picture per latent frame (4 video frames each)."""
    rgb = project_latents(x0, projection).clamp(-1, 1)  # [3, F, h, w]
    size = _preview_size(rgb.shape[-2] * spatial, rgb.shape[-1] * spatial, max_side)
    frames = F.interpolate(rgb.permute(1, 0, 2, 3), size=size, mode="bilinear", align_corners=False)
    return ((frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def vae_frames(vae, x0_raw: torch.Tensor, downscale: int = 2, max_side: int = PREVIEW_MAX_SIDE):
    """[C, F, h, w] clean latents, denormalised for the VAE -> uint8 frames [F', H, W, 3] from the real VAE at low
    resolution: the latents are average-pooled `downscale`x before the decode, so the decode costs about
    1/downscale² of a full one, and every 4th decoded frame is kept (one per latent frame, like the projection)."""
    z = x0_raw[None].float()
    if downscale > 1:
        z = F.avg_pool3d(z, (1, downscale, downscale))
    video = _decode_clip(vae, z)  # [3, F', H, W] in [-1, 1]
    video = video[:, ::4]
    h, w = _preview_size(video.shape[-2], video.shape[-1], max_side)
    if (h, w) != tuple(video.shape[-2:]):
        video = F.interpolate(video.permute(1, 0, 2, 3), size=(h, w), mode="bilinear", align_corners=False)
        video = video.permute(1, 0, 2, 3)
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def _decode_clip(vae, z: torch.Tensor) -> torch.Tensor:
    device = next(vae.parameters()).device
    return vae.decode(z.to(device, _vae_dtype(vae))).sample.float().cpu().clamp(-1, 1)[0]


def write_preview_video(frames, path: str | os.PathLike, fps: float = 25 / 4) -> Path:
    """A small silent mp4 of preview frames (one per latent frame, so 25/4 fps plays at the video's pace), labelled
    AI-generated like every file the studio makes (fast x264 settings: a preview is seen once)."""
    from engine import media

    return media.write_video(frames, path, fps=fps, crf=28, preset="ultrafast",
                             ai_label="AI-generated preview (HuMo Studio)")  # fmt: skip


class PreviewBudget:
    """When to make a preview so previews cost at most `share` of the job's denoising time.

    A preview is due at a step's end when what previews have cost so far plus one more stays within `share` of the
    steps' time so far (so, with a preview costing c and a step s, one every ⌈c / (share·s)⌉ steps). The cost is
    measured on each preview (`record`); before the first one it is `known_cost_s` (measured on an earlier job of
    this pipeline and shape), else unknown, and the first preview measures it. Previews turn off for the job when
    even one costs more than `share` of the whole job (`total_steps` steps at the mean step time)."""

    def __init__(self, total_steps: int, share: float = PREVIEW_SHARE, known_cost_s: float | None = None):
        self.total_steps = int(total_steps)
        self.share = float(share)
        self.cost_s = known_cost_s
        self.steps_s = 0.0
        self.steps = 0
        self.spent_s = 0.0
        self.made = 0

    @property
    def step_s(self) -> float | None:
        return self.steps_s / self.steps if self.steps else None

    @property
    def off(self) -> bool:
        """Even one preview would cost more than `share` of the job."""
        if self.cost_s is None or self.step_s is None or self.share <= 0:
            return self.share <= 0
        return self.cost_s > self.share * self.total_steps * self.step_s

    def step_done(self, seconds: float) -> bool:
        """Count a finished step (its seconds, previews excluded); True when a preview is due now."""
        self.count(seconds)
        return self.due()

    def count(self, seconds: float) -> None:
        self.steps_s += max(0.0, float(seconds))
        self.steps += 1

    def due(self) -> bool:
        """A preview now stays within the share. Never after the last step: the finished video comes then."""
        if self.off or self.steps >= self.total_steps:
            return False
        cost = self.cost_s if self.cost_s is not None else 0.0
        return self.spent_s + cost <= self.share * self.steps_s

    def record(self, seconds: float) -> None:
        self.cost_s = float(seconds)
        self.spent_s += float(seconds)
        self.made += 1

    def every_steps(self) -> int | None:
        """Steps between previews at the measured costs (None before they are known or when off)."""
        if self.off or self.cost_s is None or not self.step_s:
            return None
        return max(1, math.ceil(self.cost_s / (self.share * self.step_s)))

    def note(self) -> str:
        """The cost line shown beside the preview."""
        if self.cost_s is None or not self.step_s:
            return ""
        share_of_step = self.cost_s / self.step_s
        if self.off:
            return (
                f"previews off: one costs {self.cost_s:.2f} s, more than {self.share:.0%} of this job "
                f"({self.total_steps} steps × {self.step_s:.2f} s)"
            )
        return (
            f"preview {self.cost_s:.2f} s ({share_of_step:.0%} of a {self.step_s:.2f} s step) · every "
            f"{self.every_steps()} step(s), previews ≤ {self.share:.0%} of the job"
        )


__all__ = [
    "fit_latent_rgb_projection",
    "latents_to_preview",
    "project_latents",
    "synthetic_images",
    "cache_dir",
    "predicted_clean",
    "projection_frames",
    "vae_frames",
    "write_preview_video",
    "PreviewBudget",
    "step_sigma",
]
