"""A model's sampling defaults live on its loaded pipeline (engine/defaults.py): `pipe(prompt=, image=, audio=)` with
nothing else samples each registered model as its registry entry says, and every CLI verb runs on every registered
model with only its required arguments (generate and dub without --steps included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine import media, nano
from engine.cli import main
from engine.defaults import SamplingDefaults
from engine.guidance import preset_schedule
from engine.registry import MODELS, load_pipeline
from engine.schedulers import make_scheduler

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "assets/examples/nano_face.png"
SPEECH = ROOT / "assets/examples/nano_speech.wav"
REGISTERED = ["tiny", "humo-nano", "humo-nano-4step"]  # the ones that run here (the Hub models need their files)

needs_nano = pytest.mark.skipif(not nano.is_student_present(), reason="assets/humo-nano(-4step) missing")


def _short_voice(tmp_path: Path, seconds: float = 0.3) -> str:
    """The bundled voice cut short (9 frames at 25 fps): the same inputs, a quick render."""
    from engine.audio import load_audio, write_wav

    return str(write_wav(tmp_path / "voice.wav", load_audio(str(SPEECH))[: int(16000 * seconds)]))


@pytest.mark.parametrize(
    "model_id, expected",
    [
        ("tiny", SamplingDefaults(8, "official", 64, 64, "unipc", 5.0)),
        ("humo-nano", SamplingDefaults(30, "official", 64, 64, "unipc", 2.0)),
        ("humo-nano-4step", SamplingDefaults(4, "single pass", 64, 64, "euler", 2.0)),
    ],
)
def test_loaded_pipeline_carries_its_models_defaults(model_id, expected):
    if model_id != "tiny" and not nano.is_student_present():
        pytest.skip("assets/humo-nano(-4step) missing")
    pipe = load_pipeline(model_id, device="cpu")
    assert pipe.sampling_defaults == expected
    assert pipe.default_size == (expected.height, expected.width)
    config = pipe.scheduler.config  # the grid the defaults name is the one it runs (Euler calls it `shift`)
    assert config.get("flow_shift", config.get("shift")) == expected.flow_shift
    assert type(pipe.scheduler) is type(make_scheduler(expected.scheduler))
    assert pipe.default_guidance("TIA").to_dict() == preset_schedule(expected.guidance_preset, "1.7b", "TIA").to_dict()


def test_sampling_defaults_are_saved_with_the_pipeline(tmp_path):
    """They sit in the pipeline's config, so save_pretrained writes them into model_index.json (as diffusers pipelines
    keep their config arguments) and the constructor takes them back."""
    import json

    from engine.pipeline import HuMoPipeline

    pipe = load_pipeline("tiny", device="cpu")
    pipe.sampling_defaults = SamplingDefaults(6, "single pass", 32, 48, "euler", 2.0)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    rebuilt = HuMoPipeline(**pipe.components, sampling_defaults=index["sampling_defaults"])
    assert rebuilt.sampling_defaults == SamplingDefaults(6, "single pass", 32, 48, "euler", 2.0)


@needs_nano
def test_student_called_with_only_its_inputs_samples_four_single_pass_steps(tmp_path):
    """The README's "From Python" path on the 4-step student: what it leaves out is the student's own 4 steps and
    single pass, not the teacher's 4-pass official guidance (the bug of issue 28)."""
    pipe = load_pipeline("humo-nano-4step", device="cpu")
    voice = _short_voice(tmp_path)
    plain = pipe(prompt="a person talks", image=str(FACE), audio=voice, generator=torch.Generator().manual_seed(3))
    assert plain.timings["passes_per_step"] == [1, 1, 1, 1]
    explicit = pipe(prompt="a person talks", image=str(FACE), audio=voice, generator=torch.Generator().manual_seed(3),
                    height=64, width=64, num_inference_steps=4,
                    guidance=preset_schedule("single pass", "1.7b", "TIA"))  # fmt: skip
    np.testing.assert_array_equal(plain.frames[0], explicit.frames[0])
    teacher_guided = pipe(prompt="a person talks", image=str(FACE), audio=voice, num_inference_steps=4,
                          generator=torch.Generator().manual_seed(3),
                          guidance=preset_schedule("official", "1.7b", "TIA"))  # fmt: skip
    assert not np.array_equal(plain.frames[0], teacher_guided.frames[0])


@pytest.mark.parametrize("model_id", REGISTERED)
def test_generate_with_only_a_prompt_uses_the_models_defaults(model_id, tmp_path, capsys):
    if model_id != "tiny" and not nano.is_student_present():
        pytest.skip("assets/humo-nano(-4step) missing")
    out = tmp_path / "x.mp4"
    assert main(["generate", "--model", model_id, "--prompt", "a person talks", "--out", str(out)]) == 0, (
        capsys.readouterr().err
    )
    spec = MODELS[model_id]
    settings = media.read_settings(out)
    assert settings["num_inference_steps"] == spec.steps() and settings["mode"] == "T"
    assert (settings["height"], settings["width"]) == (64, 64) and settings["num_frames"] == 97
    assert settings["guidance"]["preset"] == preset_schedule(spec.guidance_preset, "1.7b", "T").preset


@pytest.mark.parametrize("model_id", REGISTERED)
def test_dub_with_only_its_required_arguments(model_id, tmp_path, capsys):
    from tests.test_dub import write_clip

    if model_id != "tiny" and not nano.is_student_present():
        pytest.skip("assets/humo-nano(-4step) missing")
    clip, voice_b, _ = write_clip(tmp_path, "src", frames=9, seed=7)
    out = tmp_path / "dubbed.mp4"
    assert main(["dub", "--model", model_id, "--video", str(clip), "--audio", str(voice_b), "--out", str(out)]) == 0, (
        capsys.readouterr().err
    )
    settings = media.read_settings(out)
    spec = MODELS[model_id]
    assert settings["kind"] == "dub" and settings["num_inference_steps"] == spec.steps()
    assert settings["guidance"]["preset"] == preset_schedule(spec.guidance_preset, "1.7b", "TIA").preset


@pytest.mark.parametrize("model_id", REGISTERED)
def test_download_info_and_verify_on_every_registered_model(model_id, tmp_path, capsys):
    """download (nothing to fetch for a bundled or built-in model), info (lists it) and verify (on its video)."""
    if model_id != "tiny" and not nano.is_student_present():
        pytest.skip("assets/humo-nano(-4step) missing")
    assert main(["download", model_id]) == 0
    assert f"{model_id}: all components present" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert any(line.split()[:2] == [model_id, "present"] for line in capsys.readouterr().out.splitlines())
    out = tmp_path / "v.mp4"
    main(["generate", "--model", model_id, "--prompt", "a person talks", "--frames", "5", "--out", str(out)])
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert "verdict: AI-generated" in capsys.readouterr().out


def test_vae_tiling_is_turned_off_again_for_the_next_job():
    """`vae_tiling=True` tiles that call's decode only; a memory mode's tiling (enabled on the VAE) stays on."""
    pipe = load_pipeline("tiny", device="cpu")
    kw = dict(prompt="a person talks", num_frames=5, height=32, width=32, num_inference_steps=1, seed=1)
    pipe(**kw, vae_tiling=True)
    assert pipe.vae.use_tiling is False
    pipe.vae.enable_tiling()  # what engine.memory's "+vae_tiling" does
    pipe(**kw, vae_tiling=True)
    assert pipe.vae.use_tiling is True
