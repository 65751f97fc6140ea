"""The `continuation` objective: learn to continue a clip from its first frames (motion frames), the way live
generation (engine/live.py) makes each chunk from the last frames of the chunk before.

    objective: continuation      # in a stage-2 (or 1) config; training/configs/continuation*.yaml
    motion_latent_frames: 2      # 4m+1 = 5 pixel frames: live's DEFAULT_MOTION_FRAMES
    motion_prob: 0.5             # share of samples that get motion frames; the rest train the plain task
    motion_hold: clean           # how the motion latents enter the model (below)

For a sample with motion frames, its first `motion_latent_frames` latent frames are the clip's own latents (the
causal VAE encodes a clip's first 4m+1 frames on their own, exactly as live re-encodes the motion frames as a clip
start), and the flow-matching loss is taken on the frames after them only: the model is never asked to predict what
it is given. A sample without motion frames keeps the plain objective, so the model keeps making a clip from nothing
(live's first chunk, and every non-live generation).

`motion_hold` is what inference does with them (`pipe(motion_frames=..., motion_hold=...)`):

- "clean": the motion latents themselves at every step, while the rest is at the step's noise level (InfiniteTalk's
  conditioning for MultiTalk). The untuned model never saw clean frames beside noisy ones under one timestep; this
  objective teaches it to read them, at every noise level: the pose and motion are known from the first step.
- "noised": the motion latents noised to the step's level with the clip's own starting noise (RePaint; live's
  training-free default). That is exactly the plain objective's x_t, so with this hold the objective differs from the
  plain one only by the loss mask: it is kept for completeness (and as the control), not because it can teach
  anything new.

The trainer (training/trainer.py) imports this module; this module imports nothing of training/.
"""

from __future__ import annotations

import torch

from engine.errors import InputError

OBJECTIVES = ("flow", "continuation")
MOTION_HOLDS = ("clean", "noised")


def check_config(config) -> None:
    """The continuation keys of a `TrainConfig`, checked before anything is loaded."""
    if config.objective not in OBJECTIVES:
        raise InputError(f"objective must be one of {list(OBJECTIVES)} (got {config.objective!r}).", field="objective")
    if config.objective != "continuation":
        return
    if config.stage not in (1, 2):
        raise InputError(
            "objective: continuation trains stage 1 or 2 (a few-step student keeps its distillation targets).",
            field="stage",
        )
    m = config.motion_latent_frames
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise InputError(
            f"motion_latent_frames must be a whole number of latent frames, at least 1 (got {m!r}); 2 = 5 pixel "
            "frames, live's default.",
            field="motion_latent_frames",
        )
    if not 0.0 <= float(config.motion_prob) <= 1.0:
        raise InputError(f"motion_prob must be in [0, 1] (got {config.motion_prob!r}).", field="motion_prob")
    if config.motion_hold not in MOTION_HOLDS:
        raise InputError(
            f"motion_hold must be one of {list(MOTION_HOLDS)} (got {config.motion_hold!r}).", field="motion_hold"
        )


def check_clip_length(num_latent_frames: int, motion_latent_frames: int) -> None:
    if motion_latent_frames >= num_latent_frames:
        raise InputError(
            f"motion_latent_frames ({motion_latent_frames}) must be fewer than a training clip's latent frames "
            f"({num_latent_frames}): nothing would be left to learn.",
            field="motion_latent_frames",
        )


def draw_motion(batch: int, motion_prob: float, gen: torch.Generator) -> torch.Tensor:
    """[B] bool: which samples get motion frames (drawn from the run's one generator, after the plain draws)."""
    return torch.rand(batch, generator=gen) < motion_prob


def hold_motion(x_t: torch.Tensor, x0: torch.Tensor, has_motion: torch.Tensor, motion_latent_frames: int,
                hold: str) -> torch.Tensor:  # fmt: skip
    """x_t [B, C, F, h, w] (video frames) with the motion frames of the chosen samples held as inference holds them:
    "clean" -> the clip's latents x0; "noised" -> unchanged (x_t already is x0 noised to the sample's level)."""
    check_clip_length(x0.shape[2], motion_latent_frames)
    if hold == "noised":
        return x_t
    held = x_t.clone()
    keep = has_motion.view(-1, 1, 1, 1, 1).to(x_t.device)
    m = motion_latent_frames
    held[:, :, :m] = torch.where(keep, x0[:, :, :m].to(x_t), x_t[:, :, :m])
    return held


def loss_weights(has_motion: torch.Tensor, num_latent_frames: int, motion_latent_frames: int) -> torch.Tensor:
    """[B, 1, F, 1, 1]: 0 on the motion frames of the samples that have them, 1 on every other frame."""
    weights = torch.ones(len(has_motion), 1, num_latent_frames, 1, 1)
    weights[has_motion, :, :motion_latent_frames] = 0.0
    return weights


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the frames with weight 1 only (the mean over those elements, so a batch with motion
    frames has the same loss scale as one without)."""
    weights = weights.to(prediction)
    squared = (prediction.float() - target.float()) ** 2 * weights
    counted = weights.expand_as(squared).sum().clamp_min(1.0)
    return squared.sum() / counted


__all__ = [
    "MOTION_HOLDS",
    "OBJECTIVES",
    "check_config",
    "draw_motion",
    "hold_motion",
    "loss_weights",
    "masked_mse",
]
