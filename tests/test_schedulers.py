"""engine/schedulers.py: the official sigma/timestep grid (§4.7), UniPC and Euler trajectories against independent
reference implementations, and saving/loading as a pipeline component."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, UniPCMultistepScheduler

from engine import schedulers
from engine.errors import InputError

# §4.7, 50 steps, shift 5
OFFICIAL_50 = [
    999, 995, 991, 987, 982, 978, 973, 968, 963, 957, 952, 946, 940, 934, 927, 920, 913, 906, 898, 890,
    882, 873, 863, 854, 843, 833, 821, 809, 796, 783, 768, 753, 737, 720, 701, 681, 660, 636, 611, 584,
    555, 522, 487, 448, 405, 356, 302, 241, 172, 92,
]  # fmt: skip
FIRST_SIGMAS = [0.99980, 0.99573, 0.99153, 0.98719, 0.98270, 0.97805]


def reference_grid(steps: int, shift: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 sigmas (with the final 0) and int timesteps, written from the spec's description."""
    sigma_max = float(np.float32(0.999))
    sigmas = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return np.append(sigmas, 0.0).astype(np.float32), (sigmas * 1000).astype(np.int64)


def test_official_timesteps_50():
    s = schedulers.make_scheduler("unipc")
    s.set_timesteps(50)  # what a diffusers pipeline calls
    assert s.timesteps.dtype == torch.int64
    assert s.timesteps.tolist() == OFFICIAL_50
    assert schedulers.official_timesteps(50).tolist() == OFFICIAL_50
    np.testing.assert_allclose(s.sigmas[:6].numpy(), FIRST_SIGMAS, atol=5e-6)
    assert abs(float(s.sigmas[49]) - 0.09251) < 5e-6
    assert s.sigmas.dtype == torch.float32 and len(s.sigmas) == 51 and float(s.sigmas[-1]) == 0.0
    # the update uses the float sigmas, not the truncated integers
    assert abs(float(s.sigmas[1]) * 1000 - 995.73) < 0.01
    sig, ts = reference_grid(50)
    np.testing.assert_array_equal(s.sigmas.numpy(), sig)
    assert schedulers.official_sigma_max() == float(np.float32(0.999))


def test_plain_diffusers_grid_differs():
    """The reason for the subclass: diffusers' own flow grid does not give the official timesteps."""
    plain = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    plain.set_timesteps(50)
    assert plain.timesteps.tolist() != OFFICIAL_50


@pytest.mark.parametrize("steps,above_980", [(40, 4), (30, 3), (50, 5)])
def test_other_step_counts(steps, above_980):
    s = schedulers.make_scheduler()
    s.set_timesteps(steps)
    sig, ts = reference_grid(steps)
    assert s.timesteps.tolist() == ts.tolist()
    assert int((s.timesteps > 980).sum()) == above_980


def test_euler_uses_the_same_grid():
    e = schedulers.make_scheduler("euler")
    e.set_timesteps(50)
    assert [int(t) for t in e.timesteps] == OFFICIAL_50
    assert e.timesteps.dtype == torch.float32  # diffusers' Euler step refuses integer timesteps
    np.testing.assert_array_equal(e.sigmas.numpy(), reference_grid(50)[0])


def test_unknown_scheduler_and_bad_steps():
    with pytest.raises(InputError):
        schedulers.make_scheduler("ddim")
    with pytest.raises(InputError):
        schedulers.official_sigmas(0)


# ---------------------------------------------------------------------------------------------- trajectories
def toy_velocity_np(x: np.ndarray, t: float) -> np.ndarray:
    """A smooth nonlinear stand-in for the transformer (Wan convention v ≈ noise − x0)."""
    return 0.8 * x - 0.5 * np.tanh(2 * x) + 0.1 * np.cos(t / 100.0)


def toy_velocity_torch(x: torch.Tensor, t: int) -> torch.Tensor:
    return 0.8 * x - 0.5 * torch.tanh(2 * x) + 0.1 * float(np.cos(t / 100.0))


def phi(k: int, z: float) -> float:
    """φ_k(z): φ_0 = e^z, φ_{k+1}(z) = (φ_k(z) − 1/k!) / z."""
    value, fact = np.exp(z), 1.0
    for j in range(k):
        value = (value - 1.0 / fact) / z
        fact *= j + 1
    return value


def reference_flow_unipc(x: np.ndarray, sigmas: np.ndarray, timesteps: np.ndarray) -> list[np.ndarray]:
    """UniPC (Zhao et al. 2023) written from the paper for Wan's flow model: data prediction m = x − σ·v,
    α = 1 − σ, λ = log(α/σ), B(h) = e^{−h} − 1 ("bh2"), predictor UniP-p with p = min(2, steps left, steps
    done + 1) and ρ = 1/2 for p = 2, corrector UniC after every step but the first (of the previous order).
    Returns the sample after each step, in float64."""
    sig = sigmas.astype(np.float64)
    n = len(timesteps)
    with np.errstate(divide="ignore"):
        lam = np.log(1 - sig) - np.log(sig)  # λ_N = +inf at σ = 0

    def coefficients(i_from: int, i_to: int):
        h = lam[i_to] - lam[i_from]
        z = -h
        return h, z, np.expm1(z)  # B(h) = e^{z} − 1

    ms: list[np.ndarray] = []
    out, last_x, prev_order = [], None, 0
    for i in range(n):
        m = x - sig[i] * toy_velocity_np(x, int(timesteps[i]))
        if i > 0:  # UniC: correct x at σ_i using the fresh data prediction m
            h, z, b_h = coefficients(i - 1, i)
            m0 = ms[-1]
            base = sig[i] / sig[i - 1] * last_x - (1 - sig[i]) * np.expm1(z) * m0
            if prev_order == 1:
                correction = 0.5 * (m - m0)
            else:
                r1 = (lam[i - 2] - lam[i - 1]) / h
                d1 = (ms[-2] - m0) / r1
                b = np.array([1 * z * phi(2, z), 2 * z * phi(3, z)]) / b_h
                rho = np.linalg.solve(np.array([[1.0, 1.0], [r1, 1.0]]), b)
                correction = rho[0] * d1 + rho[1] * (m - m0)
            x = base - (1 - sig[i]) * b_h * correction
        ms.append(m)
        order = min(2, n - i, i + 1)
        last_x = x
        h, z, b_h = coefficients(i, i + 1)
        x_next = sig[i + 1] / sig[i] * x - (1 - sig[i + 1]) * np.expm1(z) * m
        if order == 2:
            r1 = (lam[i - 1] - lam[i]) / h
            x_next = x_next - (1 - sig[i + 1]) * b_h * 0.5 * (ms[-2] - m) / r1
        x, prev_order = x_next, order
        out.append(x)
    return out


@pytest.mark.parametrize("steps", [50, 7])
def test_unipc_trajectory_matches_reference(steps):
    s = schedulers.make_scheduler("unipc")
    s.set_timesteps(steps)
    sigmas, ts = reference_grid(steps)
    x0 = np.random.default_rng(0).standard_normal((1, 4, 3, 5)).astype(np.float32)
    expected = reference_flow_unipc(x0.astype(np.float64), sigmas, ts)
    x = torch.from_numpy(x0)
    for i, t in enumerate(s.timesteps):
        v = toy_velocity_torch(x, int(t))
        x = s.step(v, t, x, return_dict=False)[0]
        np.testing.assert_allclose(x.numpy(), expected[i], rtol=2e-4, atol=2e-5, err_msg=f"step {i}")
    # sanity: the solver actually moved the sample a lot (the check above is not trivially satisfied)
    assert np.abs(expected[-1] - x0).mean() > 0.1


def test_euler_trajectory_matches_reference():
    e = schedulers.make_scheduler("euler")
    e.set_timesteps(20)
    sigmas, ts = reference_grid(20)
    x_ref = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float64)
    x = torch.from_numpy(x_ref.astype(np.float32))
    for i, t in enumerate(e.timesteps):
        x = e.step(toy_velocity_torch(x, int(t)), t, x, return_dict=False)[0]
        x_ref = x_ref + (float(sigmas[i + 1]) - float(sigmas[i])) * toy_velocity_np(x_ref, int(ts[i]))
    np.testing.assert_allclose(x.numpy(), x_ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- serialisation
def test_scheduler_save_and_load(tmp_path):
    for name, cls in (
        ("unipc", schedulers.HuMoUniPCMultistepScheduler),
        ("euler", schedulers.HuMoFlowMatchEulerScheduler),
    ):
        s = schedulers.make_scheduler(name, shift=5.0)
        s.save_pretrained(tmp_path / name)
        loaded = cls.from_pretrained(tmp_path / name)
        assert type(loaded) is cls
        strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
        assert strip(loaded.config) == strip(s.config)
        loaded.set_timesteps(50)
        assert [int(t) for t in loaded.timesteps] == OFFICIAL_50


class SchedulerOnlyPipeline(DiffusionPipeline):
    def __init__(self, scheduler):
        super().__init__()
        self.register_modules(scheduler=scheduler)


def test_scheduler_round_trips_as_pipeline_component(tmp_path):
    pipe = SchedulerOnlyPipeline(scheduler=schedulers.make_scheduler("unipc", shift=3.0))
    pipe.save_pretrained(tmp_path / "pipe")
    index = (tmp_path / "pipe" / "model_index.json").read_text()
    assert '"engine.schedulers"' in index and "HuMoUniPCMultistepScheduler" in index
    loaded = SchedulerOnlyPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(loaded.scheduler, schedulers.HuMoUniPCMultistepScheduler)
    assert loaded.scheduler.config.flow_shift == 3.0
    loaded.scheduler.set_timesteps(50)
    assert loaded.scheduler.timesteps.tolist() == reference_grid(50, shift=3.0)[1].tolist()
