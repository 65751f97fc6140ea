"""HuMo-nano: the build recipe end to end (a seconds-long version), its loader and registry entry, and the bundled
model's acceptance check: on held-out people, scenes and voices it beats the untrained model on every score."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import media, nano, registry
from engine.audio import load_audio
from engine.cli import main as cli_main
from training import analysis
from training import nano as nano_train
from training.__main__ import main as training_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_nano(tmp_path_factory):
    root = tmp_path_factory.mktemp("nano")
    info = nano_train.build_nano(root / "out", root / "work", nano_train.NanoBudget.quick(), log=lambda *_: None)
    return root, info


def test_quick_build_writes_a_loadable_model(quick_nano):
    root, info = quick_nano
    out = root / "out"
    assert nano.is_present(out)
    assert set(info["heldout_scores"]) == {"identity", "text", "sync", "abs_lag", "stability"}
    assert nano.info(out)["size"] == [32, 32] and nano.default_size(out) == (32, 32)
    pipe = nano.load_nano_pipeline(root=out)
    assert pipe.variant == "1.7b" and pipe.transformer.config.num_layers == 8
    # the saved VAE carries the latent statistics of its world, not Wan's
    assert pipe.vae.config.latents_mean[:2] != [-0.7571, -0.7089] and len(pipe.vae.config.latents_std) == 16
    example = nano_train.heldout_world(nano_train.NanoBudget.quick())[0]
    video = nano_train.generate(pipe, example, steps=2)
    assert video.shape == example.video.shape and video.dtype == np.uint8


def test_decoder_phase_keeps_the_encoder_and_so_the_latent_cache():
    budget = nano_train.NanoBudget.quick()
    world = nano_train.sample_world(2, frames=budget.frames, size=(32, 32), seed=5)
    vae = nano_train.train_vae(world, budget, log=lambda *_: None, phase=1)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    assert budget.vae_phases[2][-1] == "decoder"
    vae = nano_train.train_vae(world, budget, log=lambda *_: None, vae=vae, phase=3)
    after = vae.state_dict()
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)


def test_audio_features_are_tied_to_the_encoder_that_made_them(quick_nano):
    from engine.components import load_whisper_encoder

    root, _ = quick_nano
    work = root / "work"
    tag = nano_train.audio_fingerprint(load_whisper_encoder(work / "audio_encoder"))
    assert json.loads((work / "cache" / "index.json").read_text())["audio_encoder"] == tag
    # stage 2 reads audio features: its run is named after the encoder, so a new encoder trains it anew
    runs = sorted(p.name for p in (work / "runs").iterdir())
    assert f"nano-s2-a{tag}-2" in runs and "nano-s1-2" in runs
    # a cache made with other audio features is rebuilt, not reused
    index = json.loads((work / "cache" / "index.json").read_text())
    (work / "cache" / "index.json").write_text(json.dumps({**index, "audio_encoder": "stale"}))
    build = nano_train.build_base(work, nano_train.NanoBudget.quick(), log=lambda *_: None)
    assert build.audio_tag == tag
    assert json.loads((work / "cache" / "index.json").read_text())["audio_encoder"] == tag


def test_audio_pretraining_makes_the_encoder_hear_loudness():
    budget = replace(nano_train.NanoBudget.quick(), audio_steps=40)
    world = nano_train.sample_world(4, frames=budget.frames, size=(32, 32), seed=3)
    _, r2_short = nano_train.train_audio_encoder(world, replace(budget, audio_steps=1), log=lambda *_: None)
    _, r2 = nano_train.train_audio_encoder(world, budget, log=lambda *_: None)
    assert r2 > 0.5 and r2 > r2_short + 0.3


def test_nano_is_the_default_when_present(quick_nano, tmp_path, monkeypatch):
    root, _ = quick_nano
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HUMO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HUMO_NANO_DIR", str(root / "out"))
    assert registry.best_available_model() == "humo-nano"
    pipe = registry.load_pipeline("humo-nano", device="cpu")
    assert pipe.model_id == "humo-nano" and pipe.default_size == (32, 32)

    from studio.app import NANO_BANNER, build_app
    from studio.context import StudioContext, StudioOptions

    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "data"))
    assert ctx.default_model == "humo-nano" and ctx.is_nano_model and not ctx.is_demo_model
    texts = [c.get("props", {}).get("value") for c in build_app(ctx).get_config_file()["components"]]
    assert NANO_BANNER in texts
    ctx.store.close()


def test_cli_builds_with_one_command(tmp_path):
    code = training_main(["nano", "--quick", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert code == 0 and nano.is_present(tmp_path / "out")


def test_ablation_table_has_every_row(quick_nano, capsys):
    root, _ = quick_nano
    rows = nano_train.run_ablations(root / "work", nano_train.NanoBudget.quick(), factor=1.0, log=lambda *_: None)
    names = [r["variant"] for r in rows]
    assert names[:2] == ["untrained (random DiT)", "base only (stage 0, T2V)"]
    assert all(name in names for name in nano_train.ABLATIONS)
    assert any("time-adaptive" in n for n in names) and any("static" in n for n in names)
    table = (root / "work" / "ablations.md").read_text()
    assert table.count("\n|") == len(rows) + 2  # header, rule and one line per row


def test_time_adaptive_and_static_guidance_differ_only_early():
    schedules = nano_train.guidance_variants(switch_timestep=900)
    adaptive, static = schedules["time-adaptive CFG"], schedules["static CFG"]
    assert adaptive.phase_for(950).name == "text-dominant" and static.phase_for(950).name == "main"
    assert adaptive.phase_for(500).weights == static.phase_for(500).weights


# ---------------------------------------------------------------------------------------------- the bundled model
bundled = pytest.mark.skipif(not nano.is_present(), reason="assets/humo-nano missing (python -m training nano)")


def untrained_twin(trained):
    """The bundled pipeline with a random DiT: same VAE and encoders, so score differences are the trained DiT's."""
    parts = {k: getattr(trained, k) for k in ("tokenizer", "text_encoder", "audio_encoder", "feature_extractor")}
    return nano_train.make_pipeline(trained.vae, nano_train.new_transformer(1).eval(), parts)


@pytest.fixture(scope="module")
def heldout_scores():
    """Scores of the bundled nano and of the untrained model on the 8 held-out clips (references, prompts and audio
    from a seed the training world never used); same VAE and encoders for both, so the difference is the trained DiT.
    All 8, not a few: one clip's scores swing by ~0.1 (a sync of 0.42 becomes 0.36 when the voice is written as a
    16-bit wav), which is as large as the margins."""
    torch.manual_seed(0)
    budget = nano_train.NanoBudget(**nano.info()["budget"])
    examples = nano_train.heldout_world(budget)
    trained = registry.load_pipeline("humo-nano", device="cpu")
    untrained = untrained_twin(trained)
    good = nano_train.evaluate(trained, examples, steps=20)
    bad = nano_train.evaluate(untrained, examples, steps=20)
    print(f"nano {good}\nuntrained {bad}")
    return good, bad


# Margins, against what the nano VAE alone allows (ground-truth clips round-tripped through it, no diffusion):
# text 0.48 and identity 0.20 there, vs ~0.14 and ~0.01 for the untrained DiT, whose random colours match some
# captions; +0.1 text and +0.05 identity are about a third and a quarter of that headroom. Sync: +0.1 over the
# untrained model, whose random mouths score ~0.2-0.3 at their best lag (mismatched ground-truth audio: ~0.35,
# round-trip ~0.5).
@bundled
def test_bundled_nano_follows_the_prompt(heldout_scores):
    good, bad = heldout_scores
    assert good["text"] > bad["text"] + 0.1


@bundled
def test_bundled_nano_follows_the_reference_identity(heldout_scores):
    good, bad = heldout_scores
    assert good["identity"] > bad["identity"] + 0.05


@bundled
def test_bundled_nano_beats_the_untrained_model_on_sync(heldout_scores):
    good, bad = heldout_scores
    # the lag at that best correlation (the small Sync-D) is not asserted: on these 8 clips it is no better than the
    # untrained model's (mean |lag| 2.4 frames for both; README, Known limits)
    assert good["sync"] > bad["sync"] + 0.1


@bundled
def test_bundled_nano_moves_the_mouth_with_the_voice():
    """Only the audio changes (same seed, reference and prompt): the video changes, most of all around the mouth."""
    budget = nano_train.NanoBudget(**{**nano.info()["budget"], "heldout": 2})
    first, second = nano_train.heldout_world(budget)
    pipe = registry.load_pipeline("humo-nano", device="cpu")
    own = nano_train.generate(pipe, first, steps=10)
    swapped = nano_train.generate(pipe, replace(first, waveform=second.waveform), steps=10)
    diff = np.abs(own.astype(np.float32) - swapped.astype(np.float32)).mean(axis=(0, 3))  # [H, W]
    x0, y0, x1, y1 = np.nanmedian(analysis.locate_faces(own), axis=0)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    yy, xx = np.mgrid[: diff.shape[0], : diff.shape[1]]
    mouth = (yy > cy + 0.2 * ry) & (yy < cy + 0.9 * ry) & (np.abs(xx - cx) < 0.4 * rx)
    print(f"mean change: mouth {diff[mouth].mean():.1f}, elsewhere {diff[~mouth].mean():.1f}")
    assert diff[mouth].mean() > 1.5 * diff[~mouth].mean() and diff[mouth].mean() > 5.0


@bundled
def test_faces_are_found_in_what_the_nano_vae_gives_back():
    """The scores' face boxes on ground-truth clips blurred by the bundled VAE (what the DiT can at best produce)."""
    budget = nano_train.NanoBudget(**{**nano.info()["budget"], "heldout": 4})
    vae = registry.load_pipeline("humo-nano", device="cpu").vae
    errors = []
    for clip in nano_train.heldout_world(budget):
        with torch.no_grad():
            x = nano_train.video_tensor(clip.video)
            frames = vae.decode(vae.encode(x).latent_dist.mode()).sample[0]
        blurred = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
        boxes = analysis.locate_faces(blurred)
        centre = lambda b: np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)  # noqa: E731
        error = np.linalg.norm(centre(boxes) - centre(clip.boxes), axis=1) / (clip.boxes[:, 3] - clip.boxes[:, 1])
        errors.append(float(np.nanmedian(error)))
    print("median centre error / face height per clip:", [round(e, 3) for e in errors])
    assert np.mean(errors) < 0.12 and max(errors) < 0.25


@bundled
def test_bundled_example_is_recognisable(tmp_path, monkeypatch):
    """The studio's one-click example (the "nano" case of assets/examples/cases.json) through the CLI on the default
    model, scored on the mp4 it writes: the prompt's scene and the reference's colours clearly above what the untrained
    DiT makes of the same inputs (same VAE and encoders), and a mouth that follows the voice better than its."""
    monkeypatch.chdir(ROOT)
    case = json.loads((ROOT / "assets/examples/cases.json").read_text())["nano"]
    image, audio, prompt = case["img_paths"][0], case["audio_path"], case["prompt"]
    out = tmp_path / "example.mp4"
    code = cli_main(["generate", "--image", image, "--audio", audio, "--prompt", prompt, "--seed", "0",
                     "--steps", "30", "--out", str(out)])  # fmt: skip
    assert code == 0 and media.read_settings(out)["model_id"] == "humo-nano"
    reference = np.asarray(Image.open(image).convert("RGB"))
    waveform = load_audio(audio)

    def scores(frames):
        return analysis.score_video(frames, reference, prompt, waveform, analysis.locate_faces(frames))

    trained = scores(media.read_video_frames(out))
    pipe = untrained_twin(registry.load_pipeline("humo-nano", device="cpu"))
    example = nano_train.WorldExample("x", None, None, prompt, np.zeros((49, 64, 64, 3), np.uint8), waveform,
                                      np.zeros((49, 4)), reference)  # fmt: skip
    untrained = scores(nano_train.generate(pipe, example, steps=30))
    print(f"example: nano {trained}\nuntrained {untrained}")
    assert trained["text"] > 0.5 and trained["text"] > untrained["text"] + 0.3
    assert trained["identity"] > 0.1 and trained["identity"] > untrained["identity"] + 0.05
    # One clip's sync is noisy (writing the voice as 16-bit wav moves it from 0.42 to 0.36): the held-out test above
    # carries the sync margin; here the mouth only has to beat the untrained one, near lag 0.
    assert trained["sync"] > untrained["sync"] and abs(trained["sync_lag"]) <= 2
