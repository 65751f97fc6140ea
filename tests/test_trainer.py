"""The two-stage trainer on tiny configs and synthetic clips (CPU)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.errors import InputError
from training.trainer import TrainConfig, export_official, fit, make_batch, sample_sigmas, setup_trainable

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
    assert list((tmp_path / "s1" / "tensorboard").rglob("events.out.tfevents.*"))  # accelerate's tracker
    assert len((tmp_path / "s1" / "metrics.jsonl").read_text().splitlines()) == 4  # the studio's loss plot


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
    ckpt = tmp_path / "s2" / "checkpoints" / "step-4"
    state = torch.load(ckpt / "state.pt", weights_only=False)
    heads = {k: v for k, v in state["trainable"].items() if k.startswith("mask_head.")}
    # accelerate's save_state holds the optimizer, RNGs and run state; the weights are the trainable ones only
    assert {p.name for p in ckpt.iterdir()} == {
        "state.pt", "optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"
    }  # fmt: skip
    transformer_keys = [k.split(".", 1)[1] for k in state["trainable"] if k.startswith("transformer.")]
    assert transformer_keys and all(SELF_ATTN in n or any(a in n for a in AUDIO) for n in transformer_keys)
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


def test_stage_zero_trains_everything_and_never_sees_the_reference(cache):
    """Stage 0 (HuMo-nano's text-to-video base) trains every weight and its reference slot is always the null one,
    whatever drop_image says; stage 1 with the same draws does see references."""
    from engine.registry import load_pipeline
    from training.cache import load_cached

    clips, negative = load_cached(cache)
    for stage, sees_reference in ((0, False), (1, True)):
        cfg = config(cache, "unused", stage=stage, drop_image=0.0, drop_text=0.0)
        gen = torch.Generator().manual_seed(0)
        slots = [
            make_batch(clips, negative, [0, 1, 2], s, cfg, gen, "1.7b")["hidden_states"][:, :, -1] for s in range(4)
        ]
        assert all((slot != 0).any() for slot in slots) == sees_reference
        assert all((slot == 0).all() for slot in slots) != sees_reference
        model = load_pipeline("tiny").transformer
        trained = {id(p) for p in setup_trainable(model, cfg)}
        every = all(id(p) in trained for p in model.parameters())
        assert every == (stage == 0)


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
    assert [r["loss"] for r in full] == [r["loss"] for r in resumed]  # bit for bit
    # the EMA (diffusers' EMAModel, registered for checkpointing) resumed too: the same final weights
    final_a, final_b = _params(tmp_path / "a"), _params(tmp_path / "b")
    assert all(torch.equal(final_a[n], final_b[n]) for n in final_a)


def test_old_checkpoints_are_refused_with_a_message(cache, tmp_path):
    old = tmp_path / "old" / "checkpoints" / "step-2"
    old.mkdir(parents=True)
    torch.save({"trainable": {}, "step": 2}, old / "state.pt")  # the format before accelerate's save_state
    (tmp_path / "old" / "checkpoints" / "step-3.tmp").mkdir()  # a leftover of an interrupted save is ignored
    with pytest.raises(InputError, match="older trainer"):
        fit(config(cache, tmp_path / "old", stage=1), resume=True)


def test_sigmas_are_the_shifted_logit_normal():
    """diffusers' logit-normal density + the Wan shift reproduce the hand-written sampler: the same draws from the
    generator, the same sigmas (bit for bit at the default mean 0 / std 1; within float rounding otherwise, as
    torch.normal scales in double precision)."""
    for mean, std, shift, batch in ((0.0, 1.0, 5.0, 3), (0.0, 1.0, 1.0, 40), (0.4, 1.3, 3.0, 40)):
        cfg = TrainConfig(logit_mean=mean, logit_std=std, timestep_shift=shift)
        new_gen, old_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        new = sample_sigmas(batch, cfg, new_gen)
        u = torch.sigmoid(torch.randn(batch, generator=old_gen) * std + mean)
        old = shift * u / (1 + (shift - 1) * u)
        assert torch.equal(new_gen.get_state(), old_gen.get_state())
        if (mean, std) == (0.0, 1.0):
            assert torch.equal(new, old)
        else:
            torch.testing.assert_close(new, old, rtol=0, atol=1e-6)


def test_retired_config_keys_are_ignored(tmp_path):
    (tmp_path / "run.yaml").write_text("steps: 3\ndata_dir: /somewhere\n")  # written by an older studio
    assert TrainConfig.from_yaml(tmp_path / "run.yaml").steps == 3
    (tmp_path / "bad.yaml").write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="stepz"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")


def test_lora_runs_and_weights_load_in_pipeline_and_export(cache, tmp_path):
    from engine.pipeline import HuMoPipeline
    from engine.registry import load_finetune, load_pipeline

    fit(config(cache, tmp_path / "lora", stage=2, lora_rank=4, steps=3))
    final = tmp_path / "lora" / "final"
    pipe = load_finetune(final, "cpu")
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


def test_validation_videos_land_in_the_run_folder(cache, tmp_path):
    from engine import media

    run_dir = tmp_path / "data" / "runs" / "val"
    fit(config(cache, run_dir, stage=2, steps=2, validate_every=2, validation_steps=1))
    videos = sorted((run_dir / "validation").glob("*.mp4"))
    assert [v.name for v in videos] == ["step_000002.mp4"]
    settings = media.read_settings(videos[0])
    assert settings["num_inference_steps"] == 1 and settings["mode"] == "TIA" and settings["seed"] == 0
    assert settings["model_id"].endswith("+val@step2")  # the settings name the run's weights, not the base's
    assert media.read_video_frames(videos[0]).shape == (17, 64, 64, 3)

    # the studio lists them for the run's owner, served from Gradio's cache (never from the data folder)
    from studio.context import StudioContext, StudioOptions
    from studio.tab_train import run_validations

    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "data"))
    try:
        (served, caption),  = run_validations(ctx, "val")  # fmt: skip
        assert caption == "step 2" and Path(served).read_bytes() == videos[0].read_bytes()
        assert not Path(served).resolve().is_relative_to((tmp_path / "data").resolve())
        assert run_validations(ctx, "no-such-run") == [] and run_validations(ctx, "val", owner="someone-else") == []
    finally:
        ctx.store.close()


@pytest.fixture(scope="module")
def nano_cache(tmp_path_factory) -> Path:
    """Two synthetic clips encoded with the bundled HuMo-nano's own VAE and encoders."""
    from engine.registry import load_pipeline
    from training.cache import build_cache
    from training.raw import build_clips
    from training.synth import make_synth_dataset

    root = tmp_path_factory.mktemp("nano-train")
    src = make_synth_dataset(root / "src", num_clips=2, frames=17, size=(64, 64), seed=2)
    build_clips(src, root / "clips", frames=17, size=(64, 64), progress=False)
    build_cache(load_pipeline("humo-nano", device="cpu"), root / "clips", root / "cache", progress=False)
    return root / "cache"


def test_a_cache_of_other_encoders_is_refused_naming_both(cache, tmp_path):
    from training.trainer import base_record

    with pytest.raises(InputError, match=r"tiny's VAE and encoders.*starts from humo-nano"):
        base_record(config(cache, tmp_path / "x", base_model="humo-nano"))
    assert base_record(config(cache, tmp_path / "x"))["base_model"] == "tiny"


def test_a_nano_fine_tune_renders_like_nano(nano_cache, tmp_path):
    """The fine-tune records its base and loads on HuMo-nano's VAE and encoders (it used to load on the untrained
    tiny ones, picked by transformer width, and render noise while the studio said done)."""
    import numpy as np

    from engine.registry import load_finetune, load_pipeline

    fit(config(nano_cache, tmp_path / "ft", base_model="humo-nano", stage=1, steps=2, learning_rate=1e-6,
               ema_decay=0.0))  # fmt: skip
    final = tmp_path / "ft" / "final"
    assert json.loads((final / "humo_base.json").read_text())["base_model"] == "humo-nano"
    kwargs = dict(prompt="a woman talks in a garden", num_frames=9, height=64, width=64, num_inference_steps=6,
                  seed=3, output_type="np")  # fmt: skip

    def render(pipe):
        pipe.set_progress_bar_config(disable=True)
        return np.asarray(pipe(**kwargs).frames[0], dtype=np.float64)

    nano, tuned = render(load_pipeline("humo-nano", device="cpu")), render(load_finetune(final, "cpu"))
    tiny_vae = load_pipeline("tiny")
    tiny_vae.register_modules(transformer=load_finetune(final, "cpu").transformer)
    wrong = render(tiny_vae)  # what the width rule used to load

    def psnr(a, b):
        return 10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-12))

    assert psnr(tuned, nano) > 30, psnr(tuned, nano)
    assert psnr(wrong, nano) < psnr(tuned, nano) - 15, (psnr(wrong, nano), psnr(tuned, nano))


def test_a_fine_tune_refuses_a_base_whose_encoders_changed(nano_cache, tmp_path):
    from engine.registry import load_finetune

    fit(config(nano_cache, tmp_path / "ft", base_model="humo-nano", stage=1, steps=1, ema_decay=0.0))
    record = tmp_path / "ft" / "final" / "humo_base.json"
    base = json.loads(record.read_text())
    assert set(base["encoders"]) == {"vae", "text_encoder", "audio_encoder"}
    base["encoders"]["vae"] = "0" * 16  # as if assets/humo-nano had been rebuilt since the cache was made
    record.write_text(json.dumps(base))
    with pytest.raises(InputError, match=r"other vae weights than humo-nano"):
        load_finetune(record.parent, "cpu")
    record.unlink()
    with pytest.raises(InputError, match="does not record the model it was trained from"):
        load_finetune(record.parent, "cpu")
