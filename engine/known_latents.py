"""Known latents: the part of the one denoising loop that holds some latents to given frames, noised to each step's
level (RePaint / diffusers inpainting), so the rest is generated around them. Dubbing (engine/dub.py: the source
video outside a mask) and chunked generation (engine/live.py: the previous chunk's last frames) are its two users;
the pipeline owns it, so neither strategy is imported by the loop.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.audio import snap_frames
from engine.errors import InputError
from engine.faces import latent_frame_groups

KEEP = 1 / 255  # mask values below this leave a uint8 pixel unchanged, so such latent cells are kept too


def latent_mask(pixel_mask: np.ndarray, stride: int = 8) -> np.ndarray:
    """[T = 4n+1, H, W] pixel mask -> {0, 1} float32 [F_lat, H/stride, W/stride] on the latent grid: a latent frame
    is generated wherever any of its video frames (0; 4j-3 .. 4j) has mask, and a cell wherever any of its pixels has
    (a max pool), so the pixel composite's soft edge always lies over generated latents."""
    frames, height, width = pixel_mask.shape
    if frames < 1 or (frames - 1) % 4 or height % stride or width % stride:
        raise InputError(
            f"A pixel mask needs 4n+1 frames and a size divisible by {stride} (got {frames}x{height}x{width}).",
            field="mask",
        )
    groups = latent_frame_groups(frames)
    union = np.stack([pixel_mask[g.start : g.stop].max(axis=0) for g in groups])
    cells = union.reshape(len(groups), height // stride, stride, width // stride, stride).max(axis=(2, 4))
    return (cells >= KEEP).astype(np.float32)


def check_video_and_mask(video, mask, height: int, width: int) -> None:
    """The pipeline's cheap checks of `video=` / `mask=`, before any encoder runs."""
    if video is None or mask is None:
        raise InputError(
            "Dubbing needs both video= (the source frames) and mask= (1 where to re-animate); "
            "engine.dub.face_mask builds a mask from the face.",
            field="mask" if mask is None else "video",
        )
    shape = tuple(video.shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[1:3] != (height, width):
        raise InputError(
            f"video must be frames [F, {height}, {width}, 3] at the generation size (got {list(shape)}); "
            "engine.dub resizes a source to the model size.",
            field="video",
        )
    spatial = tuple(mask.shape[-2:])
    if mask.ndim not in (3, 5) or spatial not in ((height, width), (height // 8, width // 8)):
        raise InputError(
            f"mask must be [F, {height}, {width}] (pixels) or [F_lat, {height // 8}, {width // 8}] (latent grid); "
            f"got {list(mask.shape)}.",
            field="mask",
        )


def video_tensor(video, num_frames: int, height: int, width: int) -> torch.Tensor:
    """Source frames -> [1, 3, num_frames, H, W] in [-1, 1] for the VAE (uint8 or float in [0, 1])."""
    if len(video) < num_frames:
        raise InputError(
            f"The source video has {len(video)} frames; this dub makes {num_frames}: extend it (engine.dub.fit_frames) "
            "or shorten the audio.",
            field="video",
        )
    frames = torch.as_tensor(np.asarray(video[:num_frames]))
    frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    return (frames.permute(3, 0, 1, 2)[None] * 2 - 1).contiguous()


def latent_mask_tensor(mask, latent_shape: tuple[int, int, int], stride: int = 8) -> torch.Tensor:
    """A pixel or latent-grid mask -> [1, 1, F_lat, h, w] matching the source latents."""
    f_lat, h, w = latent_shape
    mask = torch.as_tensor(np.asarray(mask, np.float32)) if not isinstance(mask, torch.Tensor) else mask.float()
    mask = mask.reshape(mask.shape[-3:]) if mask.ndim == 5 else mask
    if tuple(mask.shape[-2:]) != (h, w):  # pixels: reduce the clip's 4(F_lat - 1) + 1 frames to the latent grid
        mask = torch.from_numpy(latent_mask(mask[: 4 * (f_lat - 1) + 1].numpy(), stride))
    if mask.shape[0] < f_lat:
        raise InputError(f"mask covers {mask.shape[0]} latent frames; the video needs {f_lat}.", field="mask")
    return mask[:f_lat][None, None]


def check_motion_frames(motion_frames, video, num_frames: int | None, height: int, width: int) -> None:
    """The pipeline's cheap checks of `motion_frames=`, before any encoder runs."""
    if video is not None:
        raise InputError("Give either video= (dubbing) or motion_frames= (chunked generation), not both.", "video")
    shape = tuple(np.shape(motion_frames))
    if len(shape) != 4 or shape[1:] != (height, width, 3) or shape[0] % 4 != 1:
        raise InputError(
            f"motion_frames must be 4m+1 frames [M, {height}, {width}, 3] at the generation size (got {list(shape)}).",
            field="motion_frames",
        )
    if num_frames is not None and shape[0] >= snap_frames(num_frames):
        raise InputError(
            f"motion_frames ({shape[0]}) must be fewer than the clip's frames ({num_frames}): nothing would be made.",
            field="motion_frames",
        )


MOTION_HOLDS = ("noised", "clean")


def check_motion_hold(motion_hold) -> None:
    """`motion_hold=`: "noised" (training-free: noised to each step's level) or "clean" (a continuation-tuned model)."""
    if motion_hold not in MOTION_HOLDS:
        raise InputError(
            f'motion_hold must be one of {list(MOTION_HOLDS)} (got {motion_hold!r}); "clean" is for a model '
            "fine-tuned with the continuation objective (training/continuation.py).",
            field="motion_hold",
        )
