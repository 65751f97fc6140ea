"""The two-stage trainer on tiny configs and synthetic clips (CPU)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.trainer import TrainConfig, export_official, fit, make_batch, setup_trainable

SELF_ATTN = ".attn1."
AUDIO = ("audio_proj.", ".audio_attn.", ".norm_audio.")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    from engine.registry import load_pipeline
    from training.cache import build_cache
    from training.raw import build_clips
    from training.synth import make_synth_dataset

    root = tmp_path_factory.mktemp("train")
    src = make_synth_dataset(root / "src", num_clips=3, frames=17, size=(64, 64), seed=1)
    build_clips(src, root / "clips", frames=17, size=(64, 64), progress=False)
    index = build_cache(load_pipeline("tiny"), root / "clips", root / "cache", progress=False)
    assert len(index["clips"]) == 3 and not index["failed"]
    return root / "cache"


def config(cache: Path, run_dir: Path, **kw) -> TrainConfig:
    base = dict(
        cache_dir=str(cache),
        run_dir=str(run_dir),
        steps=4,
        batch_size=2,
        learning_rate=1e-3,
        checkpoint_every=0,
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_cache_contents(cache):
    from training.cache import load_cached

    clips, negative = load_cached(cache)
    clip = clips[0]
    assert clip["latents"].shape == (16, 5, 8, 8)  # 17 frames -> 5 latent frames; 64 px -> 8
    assert clip["ref_latents"].shape == (16, 1, 8, 8)
    assert clip["prompt_embeds"].shape[0] == 512 and negative.shape == clip["prompt_embeds"].shape
    assert clip["audio_embeds"].shape[:3] == (5, 8, 5)
    assert clip["face_mask"].shape == (5, 8, 8) and clip["face_mask"].max() > 0.5  # a face is there
    assert clip["has_audio"] == 1


def _params(run_dir):
    from engine.models import HuMoTransformer3DModel

    return dict(HuMoTransformer3DModel.from_pretrained(Path(run_dir) / "final").named_parameters())


def _base():
    from engine.registry import load_pipeline

    return dict(load_pipeline("tiny").transformer.named_parameters())


def test_stage1_changes_only_self_attention(cache, tmp_path):
    fit(config(cache, tmp_path / "s1", stage=1))
    base, trained = _base(), _params(tmp_path / "s1")
    changed = {n for n in base if not torch.equal(base[n], trained[n])}
    assert changed and all(SELF_ATTN in n for n in changed)
    assert {n for n in base if SELF_ATTN in n and n.endswith("weight") and "norm" not in n} <= changed


def test_stage2_trains_audio_modules_and_mask_head(cache, tmp_path):
    cfg = config(
        cache, tmp_path / "s2", stage=2, steps=4, checkpoint_every=4, task_start=1.0, task_end=1.0, drop_audio=0.0
    )
    fit(cfg)
    base, trained = _base(), _params(tmp_path / "s2")
    changed = {n for n in base if not torch.equal(base[n], trained[n])}
    assert any("audio_proj." in n for n in changed) and any(".audio_attn." in n for n in changed)
    assert all(SELF_ATTN in n or any(a in n for a in AUDIO) for n in changed)
    assert not any(".attn2." in n or ".ffn." in n for n in changed)  # text cross-attention and FFN stay frozen
    state = torch.load(tmp_path / "s2" / "checkpoints" / "step-4" / "state.pt", weights_only=False)
    heads = {k: v for k, v in state["trainable"].items() if k.startswith("mask_head.")}
    torch.manual_seed(0)
    from training.mask_head import FaceMaskHead

    assert heads  # the head is a training-side module, saved in checkpoints, not in the model
    assert "mask_head" not in json.dumps(list(trained))
    assert FaceMaskHead(32, 2).heads[0][1].weight.shape == heads["mask_head.heads.0.1.weight"].shape


def test_task_mix_follows_the_schedule(cache):
    from training.cache import load_cached
    from training.schedule import audio_task_probability

    clips, negative = load_cached(cache)
    cfg = config(cache, "unused", stage=2, steps=1000, batch_size=1, drop_text=0, drop_image=0, drop_audio=0)
    gen = torch.Generator().manual_seed(0)
    for step, expected in ((0, 0.2), (999, 0.5)):
        assert audio_task_probability(step, 1000) == pytest.approx(expected)
        hits = sum(bool(make_batch(clips, negative, [0], step, cfg, gen, "1.7b")["audio_task"][0]) for _ in range(1500))
        # binomial: sd = sqrt(p(1-p)/n) <= 0.013; 4 sd tolerance
        assert abs(hits / 1500 - expected) < 0.052
    assert (
        audio_task_probability(500, 1000, shape="step") == 0.5
        and audio_task_probability(400, 1000, shape="step") == 0.2
    )
    stage1 = replace(cfg, stage=1)
    assert not make_batch(clips, negative, [0, 1], 999, stage1, gen, "1.7b")["audio_task"].any()


def test_nulled_audio_and_dropout_reach_the_inputs(cache):
    from training.cache import load_cached

    clips, negative = load_cached(cache)
    gen = torch.Generator().manual_seed(0)
    cfg = config(cache, "unused", stage=2, task_start=0.0, task_end=0.0, drop_text=1.0, drop_image=1.0)
    batch = make_batch(clips, negative, [0, 1], 0, cfg, gen, "1.7b")
    assert (batch["audio_embeds"] == 0).all()  # not an audio task -> null audio
    assert torch.equal(batch["encoder_hidden_states"][0], negative)  # text dropped -> the negative prompt
    assert (batch["hidden_states"][:, :, -1] == 0).all()  # image dropped -> zero reference slot (1.7B)


def test_loss_goes_down(cache, tmp_path):
    fit(
        config(
            cache,
            tmp_path / "fit",
            stage=1,
            steps=60,
            batch_size=3,
            train_all=True,
            learning_rate=2e-3,
            timestep_shift=1.0,
        )
    )
    losses = [json.loads(line)["loss"] for line in (tmp_path / "fit" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(losses[:15]) / 15, sum(losses[-15:]) / 15
    print(f"loss first 15 steps {first:.4f}, last 15 steps {last:.4f}")
    assert last < 0.9 * first


def test_resume_gives_the_same_next_loss(cache, tmp_path):
    cfg = config(cache, tmp_path / "a", stage=2, steps=6, checkpoint_every=3, ema_decay=0.9)
    fit(cfg)
    full = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    cfg_b = replace(cfg, run_dir=str(tmp_path / "b"))
    fit(cfg_b, max_steps=3)
    summary = fit(cfg_b, resume=True)
    resumed = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert summary["step"] == 6 and [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full, resumed):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), (a, b)


def test_lora_runs_and_weights_load_in_pipeline_and_export(cache, tmp_path):
    from engine.pipeline import HuMoPipeline
    from engine.registry import load_pipeline
    from studio.context import _load_checkpoint

    fit(config(cache, tmp_path / "lora", stage=2, lora_rank=4, steps=3))
    final = tmp_path / "lora" / "final"
    pipe = _load_checkpoint(str(final), "cpu")
    assert isinstance(pipe, HuMoPipeline)
    out = pipe(
        prompt="a person talks", num_frames=5, height=32, width=32, num_inference_steps=1, seed=0, output_type="latent"
    )
    assert out.frames[0].shape == (1, 16, 2, 4, 4)
    base = load_pipeline("tiny").transformer
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), pipe.transformer.parameters()))
    exported = export_official(final, tmp_path / "official.safetensors")
    from safetensors.torch import load_file

    keys = set(load_file(str(exported)))
    assert "blocks.0.audio_cross_attn_wrapper.audio_cross_attn.q.weight" in keys and "head.head.weight" in keys
    assert not any("lora" in k for k in keys)


def test_trainable_sets(cache):
    from engine.registry import load_pipeline

    model = load_pipeline("tiny").transformer
    names = lambda ps: {n for n, p in model.named_parameters() if any(p is q for q in ps)}  # noqa: E731
    s1 = names(setup_trainable(model, config(cache, "x", stage=1)))
    assert s1 and all(SELF_ATTN in n for n in s1)
    s2 = names(setup_trainable(model, config(cache, "x", stage=2)))
    assert s1 < s2 and all(SELF_ATTN in n or any(a in n for a in AUDIO) for n in s2)
    everything = names(setup_trainable(model, config(cache, "x", train_all=True)))
    assert everything == {n for n, _ in model.named_parameters()}


def test_validation_videos_land_in_the_gallery(cache, tmp_path):
    from studio.store import Store

    fit(
        config(
            cache,
            tmp_path / "val",
            stage=2,
            steps=2,
            validate_every=2,
            validation_steps=1,
            data_dir=str(tmp_path / "data"),
        )
    )
    with Store.open(tmp_path / "data") as store:
        rows, total = store.list_generations()
        assert total == 1 and rows[0].status == "done" and "[validation val step 2]" in rows[0].prompt
        assert store.abs_path(rows[0].video_path).exists()
