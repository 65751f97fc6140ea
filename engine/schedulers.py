"""Samplers on the official HuMo / Wan2.1 sigma grid (reference/humo-official.md §4.7).

The official sampler is Wan's FlowUniPC (order 2, bh2, predict_x0, lower_order_final, final sigma 0) on this grid:
sigma_max = 0.999 (the largest sigma of the unshifted 1000-step table, stored in float32), `steps + 1` points
linearly spaced to 0 with the last dropped, shifted σ' = shift·σ / (1 + (shift − 1)·σ); the transformer gets the
int64 truncation of 1000·σ' and the update uses the float sigmas with a final 0.

diffusers' `UniPCMultistepScheduler` implements the same solver but builds a different grid from
`set_timesteps(n)` (it starts at 1 and ends at 1/1000). `HuMoUniPCMultistepScheduler` only changes that:
`set_timesteps(n)` feeds it the official unshifted grid, which diffusers then shifts with `flow_shift` in float64
exactly like the official code. Everything else (config, step, save_pretrained / from_pretrained) is diffusers'.
`HuMoFlowMatchEulerScheduler` is diffusers' flow-matching Euler on the same grid (an opt-in alternative).

Both classes live in this module, so a saved pipeline records them as ("engine.schedulers", class name); import
`engine.schedulers` before `DiffusionPipeline.from_pretrained` (diffusers resolves non-diffusers classes from
already-imported modules only, and checks the component's base class by looking `SchedulerMixin` up in the same
module, hence that import here).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401  diffusers looks it up in this module

from engine.errors import InputError

NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_SHIFT = 5.0
SCHEDULER_NAMES = ("unipc", "euler")


def official_sigma_max(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> float:
    """Largest sigma of the unshifted training table 1 − linspace(1, 1/N, N)[::-1], stored in float32 (0.999)."""
    return float(np.float32(1.0 - 1.0 / num_train_timesteps))


def official_unshifted_sigmas(num_inference_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """`steps + 1` points from sigma_max to 0 with the last dropped (float64)."""
    if int(num_inference_steps) < 1:
        raise InputError(f"Steps must be at least 1 (got {num_inference_steps}).", field="steps")
    return np.linspace(official_sigma_max(num_train_timesteps), 0.0, int(num_inference_steps) + 1)[:-1].copy()


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """σ' = shift·σ / (1 + (shift − 1)·σ)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def official_sigmas(num_inference_steps: int, shift: float = DEFAULT_SHIFT) -> np.ndarray:
    """The official shifted sigmas (float64, one per step, final 0 not included). 50 steps: 0.99980 … 0.09251."""
    return shift_sigmas(official_unshifted_sigmas(num_inference_steps), shift)


def official_timesteps(num_inference_steps: int, shift: float = DEFAULT_SHIFT) -> np.ndarray:
    """The integer timesteps the transformer sees: int64 truncation of 1000·σ'. 50 steps: 999, 995, …, 172, 92."""
    return (official_sigmas(num_inference_steps, shift) * NUM_TRAIN_TIMESTEPS).astype(np.int64)


class HuMoUniPCMultistepScheduler(UniPCMultistepScheduler):
    """diffusers UniPC in flow mode whose `set_timesteps(n)` gives the official HuMo/Wan grid (`flow_shift` = shift)."""

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        mu: float | None = None,
    ):
        if sigmas is None and num_inference_steps is not None and not self.config.use_dynamic_shifting:
            # the parent shifts these with config.flow_shift, in float64, as the official code does
            sigmas = official_unshifted_sigmas(num_inference_steps, self.config.num_train_timesteps)
        return super().set_timesteps(num_inference_steps=None, device=device, sigmas=sigmas, mu=mu)


class HuMoFlowMatchEulerScheduler(FlowMatchEulerDiscreteScheduler):
    """diffusers flow-matching Euler whose `set_timesteps(n)` uses the official sigma grid and integer timesteps.

    The timesteps are the official truncated integers, kept as float32 because the Euler step refuses integer
    tensors; the update uses the float64-computed sigmas cast to float32, with a final 0.
    """

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        mu: float | None = None,
        timesteps: list[float] | None = None,
    ):
        custom = sigmas is not None or timesteps is not None or self.config.use_dynamic_shifting
        if custom or num_inference_steps is None:
            return super().set_timesteps(num_inference_steps, device, sigmas, mu, timesteps)
        # let the parent reset its state, then put the exact official grid in place
        super().set_timesteps(num_inference_steps, device)
        shifted = shift_sigmas(
            official_unshifted_sigmas(num_inference_steps, self.config.num_train_timesteps), self.config.shift
        )
        ints = (shifted * self.config.num_train_timesteps).astype(np.int64)
        self.timesteps = torch.from_numpy(ints.astype(np.float32)).to(device=device)
        self.sigmas = torch.from_numpy(np.concatenate([shifted, [0.0]]).astype(np.float32)).to(device=device)
        self.num_inference_steps = int(num_inference_steps)


def make_scheduler(name: str = "unipc", shift: float = DEFAULT_SHIFT):
    """The official sampler ("unipc", default) or flow-matching Euler ("euler"), both on the official grid."""
    key = str(name).strip().lower()
    if key in ("unipc", "flowunipc", "flow_unipc"):
        return HuMoUniPCMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS,
            solver_order=2,
            prediction_type="flow_prediction",
            predict_x0=True,
            solver_type="bh2",
            lower_order_final=True,
            disable_corrector=[],
            use_flow_sigmas=True,
            flow_shift=float(shift),
            final_sigmas_type="zero",
        )
    if key in ("euler", "flow_euler"):
        return HuMoFlowMatchEulerScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=float(shift))
    raise InputError(f"Unknown sampler {name!r}: use one of {', '.join(SCHEDULER_NAMES)}.", field="scheduler")


__all__ = [
    "HuMoUniPCMultistepScheduler",
    "HuMoFlowMatchEulerScheduler",
    "make_scheduler",
    "official_sigmas",
    "official_timesteps",
    "official_sigma_max",
    "SCHEDULER_NAMES",
]
