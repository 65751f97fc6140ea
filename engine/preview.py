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


__all__ = ["fit_latent_rgb_projection", "latents_to_preview", "project_latents", "synthetic_images", "cache_dir"]
