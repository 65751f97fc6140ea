"""The continuation objective (training/continuation.py) and the clean motion hold it trains for (CPU, tiny model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import InputError
from training import continuation
from training.trainer import TrainConfig, compute_loss, fit, make_batch

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
M = 2  # motion latent frames (5 pixel frames)


@pytest.fixture(scope="module")
def tiny():
    from engine.registry import load_pipeline

    return load_pipeline("tiny")


@pytest.fixture(scope="module")
def cache(tiny, tmp_path_factory) -> Path:
    """Three synthetic-world clips of 13 frames (4 latent frames) at 32x32, encoded with the tiny model's encoders."""
    from training.cache import _atomic_save, encode_example, frames_to_tensor, write_index
    from training.nano import latent_face_mask, sample_world

    root = tmp_path_factory.mktemp("continuation") / "cache"
    root.mkdir()
    world = sample_world(3, frames=13, size=(32, 32), seed=5)
    _, negative = tiny.encode_prompt("", None)
    _atomic_save({"negative_prompt_embeds": negative[0].float()}, root / "negative.safetensors")
    for ex in world:
        tensors = encode_example(tiny, frames_to_tensor(ex.video), ex.reference, ex.caption, ex.waveform,
                                 face_mask=latent_face_mask(ex.boxes, (32, 32)))  # fmt: skip
        _atomic_save(tensors, root / f"{ex.name}.safetensors")
    write_index(root, {"clips": [ex.name for ex in world], "failed": {}, "model_id": "tiny", "source": str(root)})
    return root


def _config(cache: Path, run_dir: Path | str = "unused", **kw) -> TrainConfig:
    base = dict(cache_dir=str(cache), run_dir=str(run_dir), base_model="tiny", stage=2, objective="continuation",
                motion_latent_frames=M, motion_prob=1.0, focus_by_predicting=False, steps=2, batch_size=2,
                learning_rate=1e-3, checkpoint_every=0, seed=0)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _batch(cache, config, seed=0):
    from training.cache import load_cached

    clips, negative = load_cached(cache)
    gen = torch.Generator().manual_seed(seed)
    return clips, make_batch(clips, negative, [0, 1], 0, config, gen, "1.7b")


def test_loss_ignores_the_motion_frames_and_counts_the_rest(tiny, cache):
    config = _config(cache)
    _, batch = _batch(cache, config)
    transformer = tiny.transformer.eval()
    with torch.no_grad():
        loss, _ = compute_loss(transformer, None, batch, config)
        moved_motion = {**batch, "target": batch["target"].clone()}
        moved_motion["target"][:, :, :M] += 5.0  # what the model is given is never a target
        same, _ = compute_loss(transformer, None, moved_motion, config)
        moved_later = {**batch, "target": batch["target"].clone()}
        moved_later["target"][:, :, M] += 5.0
        other, _ = compute_loss(transformer, None, moved_later, config)
    assert torch.equal(loss, same)
    assert abs(other.item() - loss.item()) > 1.0
    # a sample without motion frames (motion_prob 0) is the plain objective: every frame counts
    _, plain = _batch(cache, replace(config, motion_prob=0.0))
    assert torch.equal(plain["loss_weight"], torch.ones_like(plain["loss_weight"]))
    with torch.no_grad():
        plain_loss, _ = compute_loss(transformer, None, plain, config)
        plain["target"][:, :, :M] += 5.0
        moved, _ = compute_loss(transformer, None, plain, config)
    assert abs(moved.item() - plain_loss.item()) > 1.0


def test_motion_frames_are_held_clean_as_the_pipeline_holds_them(tiny, cache):
    """Training: the clean hold puts the clip's own latents in the motion frames of x_t at any noise level, the rest
    noised as before. Inference: pipe(motion_frames=..., motion_hold="clean") holds the motion frames' VAE latents
    (a clip's first 5 frames encoded alone are the first 2 latent frames of the clip: the causal VAE) at every step."""
    from training.nano import sample_world

    config = _config(cache)
    clips, batch = _batch(cache, config)
    x0 = torch.stack([clips[i]["latents"] for i in (0, 1)])
    held = batch["hidden_states"][:, :, : x0.shape[2]]
    assert torch.allclose(held[:, :, :M], x0[:, :, :M])
    assert (held[:, :, M:] - x0[:, :, M:]).abs().mean() > 0.05  # the rest is noised
    # the same draws with motion_prob 0: identical except the motion frames (one generator, draws after the plain ones)
    _, plain = _batch(cache, replace(config, motion_prob=0.0))
    assert torch.equal(plain["hidden_states"][:, :, M:], batch["hidden_states"][:, :, M:])
    assert not torch.allclose(plain["hidden_states"][:, :, :M], x0[:, :, :M])
    # the "noised" hold is the plain x_t (inference's training-free hold noises them with the same starting noise)
    _, noised = _batch(cache, replace(config, motion_hold="noised"))
    assert torch.equal(noised["hidden_states"], plain["hidden_states"])

    ex = sample_world(1, frames=13, size=(32, 32), seed=6)[0]
    motion = ex.video[:5]
    from engine.known_latents import video_tensor

    with torch.no_grad():
        whole = tiny._vae_encode(video_tensor(ex.video, 13, 32, 32))
        alone = tiny._vae_encode(video_tensor(motion, 5, 32, 32))
    assert torch.allclose(whole[:, :, :M], alone, atol=1e-4)  # training's x0[:, :, :2] is what inference encodes
    seen = []

    def keep(_pipe, step, _t, kwargs):
        seen.append(kwargs["latents"][:, :, :M].clone())
        return {}

    out = tiny(ex.caption, image=ex.reference, audio=ex.waveform, num_frames=13, height=32, width=32,
               num_inference_steps=3, seed=0, motion_frames=motion, motion_hold="clean", output_type="latent",
               callback_on_step_end=keep)  # fmt: skip
    assert len(seen) == 3 and all(torch.allclose(s, alone) for s in seen)
    assert torch.allclose(out.frames[0][:, :, :M], alone)
    noised = []
    tiny(ex.caption, image=ex.reference, audio=ex.waveform, num_frames=13, height=32, width=32, num_inference_steps=3,
         seed=0, motion_frames=motion, output_type="latent",
         callback_on_step_end=lambda p, s, t, k: noised.append(k["latents"][:, :, :M].clone()) or {})  # fmt: skip
    assert not torch.allclose(noised[0], alone, atol=1e-2)  # the default hold noises them to the step's level
    with pytest.raises(InputError, match="motion_hold"):
        tiny(ex.caption, num_frames=13, height=32, width=32, motion_frames=motion, motion_hold="frozen")


def test_a_tiny_continuation_fit_runs(cache, tmp_path):
    summary = fit(_config(cache, tmp_path / "run", motion_prob=0.5))
    assert summary["step"] == 2 and np.isfinite(summary["last"]["fm_loss"])
    assert (tmp_path / "run" / "final" / "config.json").exists()


@pytest.mark.parametrize("name", ["continuation.yaml", "continuation_17b.yaml", "continuation_nano.yaml"])
def test_continuation_configs_parse_and_validate(name):
    config = TrainConfig.from_yaml(CONFIGS / name)
    continuation.check_config(config)
    assert config.objective == "continuation" and config.motion_latent_frames == 2
    assert config.motion_hold == "clean" and 0 < config.motion_prob < 1 and config.stage == 2
    assert not config.focus_by_predicting


def test_bad_continuation_settings_are_refused(cache):
    for change, field in [
        (dict(objective="continue"), "objective"),
        (dict(motion_latent_frames=0), "motion_latent_frames"),
        (dict(motion_prob=1.5), "motion_prob"),
        (dict(motion_hold="frozen"), "motion_hold"),
        (dict(stage="distill"), "stage"),
    ]:
        with pytest.raises(InputError) as err:
            continuation.check_config(_config(cache, **change))
        assert err.value.field == field
    with pytest.raises(InputError, match="fewer than"):
        _batch(cache, _config(cache, motion_latent_frames=4))
