"""A folder is a model (engine.registry.folder_spec): a trainer's final/, a distilled student folder and a
diffusers-format transformer folder load with `load_pipeline(path)` and `--model path`, on their base model's VAE,
encoders and sampling defaults; a folder that is not a model gets one message saying what was expected; the mp4
records a named id, never the server path. And every door renders the same frames from the same inputs: the Python
API with only the inputs and a seed, `python -m engine generate --model x`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import generate, media, nano
from engine.cli import main
from engine.errors import InputError
from engine.registry import BASE_FILE, encoder_fingerprints, get_spec, load_pipeline

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "assets/examples/nano_face.png"
SPEECH = ROOT / "assets/examples/nano_speech.wav"
PROMPT = "a person talks"


def make_final(run_dir: Path, base: str = "tiny") -> Path:
    """A fine-tune folder as the trainer's `save_final` writes it: the transformer in diffusers format beside its base
    record (base id + encoder fingerprints), with weights that differ from the base's."""
    pipe = load_pipeline(base, device="cpu")
    transformer = pipe.transformer
    with torch.no_grad():
        for param in transformer.proj_out.parameters():
            param.mul_(1.5)
    final = run_dir / "final"
    transformer.save_pretrained(final)
    (final / BASE_FILE).write_text(json.dumps({"base_model": base, "encoders": encoder_fingerprints(pipe)}))
    return final


@pytest.fixture(scope="module")
def final(tmp_path_factory) -> Path:
    return make_final(tmp_path_factory.mktemp("runs") / "my-run")


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> str:
    from engine.audio import load_audio, write_wav

    folder = tmp_path_factory.mktemp("voice")
    return str(write_wav(folder / "voice.wav", load_audio(str(SPEECH))[: int(16000 * 0.3)]))  # 9 frames


def test_trainer_final_folder_is_a_model_on_its_base(final):
    pipe = load_pipeline(str(final), device="cpu")
    base = load_pipeline("tiny", device="cpu")
    assert pipe.sampling_defaults == base.sampling_defaults  # the base's steps, size, guidance and grid
    assert not torch.equal(pipe.transformer.proj_out.weight, base.transformer.proj_out.weight)
    assert get_spec(str(final)).base == "tiny"


def test_diffusers_transformer_folder_finds_its_base_by_config(final, tmp_path):
    bare = tmp_path / "converted"
    shutil.copytree(final, bare)
    (bare / BASE_FILE).unlink()  # what `python -m engine convert` writes: no base record
    spec = get_spec(str(bare))
    assert spec.base == "tiny" and "HuMo transformer" in spec.description
    pipe = load_pipeline(str(bare), device="cpu")
    assert torch.equal(
        pipe.transformer.proj_out.weight, load_pipeline(str(final), device="cpu").transformer.proj_out.weight
    )


@pytest.mark.skipif(not nano.is_student_present(), reason="assets/humo-nano-4step missing")
def test_student_folder_samples_with_its_own_defaults(tmp_path, voice):
    folder = tmp_path / "student"
    shutil.copytree(nano.student_dir(), folder)
    pipe = load_pipeline(str(folder), device="cpu")
    registered = load_pipeline("humo-nano-4step", device="cpu")
    assert pipe.sampling_defaults == registered.sampling_defaults  # 4 steps, Euler, single pass, shift 2
    inputs = {"prompt": PROMPT, "image": str(FACE), "audio": voice}
    a = pipe(**inputs, generator=torch.Generator().manual_seed(1)).frames[0]
    b = registered(**inputs, generator=torch.Generator().manual_seed(1)).frames[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["empty folder", "folder of images", "text file"])
def test_what_is_not_a_model_gets_one_message(kind, tmp_path):
    target = tmp_path / "thing"
    if kind == "text file":
        target = tmp_path / "notes.txt"
        target.write_text("hello")
    else:
        target.mkdir()
        if kind == "folder of images":
            shutil.copy(FACE, target / "face.png")
    with pytest.raises(InputError, match="is not a model: expected a fine-tune folder"):
        load_pipeline(str(target), device="cpu")


def test_cli_renders_a_fine_tune_folder_and_records_no_server_path(final, tmp_path, voice):
    out = tmp_path / "ft.mp4"
    assert main(["generate", "--model", str(final), "--prompt", PROMPT, "--image", str(FACE), "--audio", voice,
                 "--seed", "3", "--out", str(out)]) == 0  # fmt: skip
    settings = media.read_settings(out)
    assert settings["model_id"] == "my-run/final" and str(final.parent) not in json.dumps(settings)
    assert settings["num_inference_steps"] == 8 and settings["untrained_demo_model"] is False


# ---------------------------------------------------------------------------------------------- one render, every door
def _cli_frames(model: str, voice: str, tmp_path: Path, monkeypatch) -> np.ndarray:
    """The frames `python -m engine generate --model X` hands to the mp4 writer (before the watermark and H.264)."""
    seen = {}
    real = generate.write_generated

    def capture(frames, record, *args, **kwargs):
        seen["frames"] = np.array(frames)
        return real(frames, record, *args, **kwargs)

    monkeypatch.setattr(generate, "write_generated", capture)
    out = tmp_path / f"{Path(model).name}.mp4"
    assert main(["generate", "--model", model, "--prompt", PROMPT, "--image", str(FACE), "--audio", voice,
                 "--seed", "11", "--out", str(out)]) == 0  # fmt: skip
    return seen["frames"]


@pytest.mark.parametrize("model", ["tiny", "humo-nano", "humo-nano-4step", "final"])
def test_python_api_with_only_inputs_renders_what_the_cli_renders(model, final, voice, tmp_path, monkeypatch):
    if model.startswith("humo-nano") and not nano.is_student_present():
        pytest.skip("assets/humo-nano(-4step) missing")
    model = str(final) if model == "final" else model
    pipe = load_pipeline(model, device="cpu")
    api = pipe(prompt=PROMPT, image=str(FACE), audio=voice, seed=11).frames[0]
    np.testing.assert_array_equal(media.to_uint8(api), _cli_frames(model, voice, tmp_path, monkeypatch))


# ---------------------------------------------------------------------------------------------- the studio's doors
@pytest.fixture()
def studio(tmp_path, final):
    """A studio whose data folder holds a finished run (its final/ is the `run:my-run` model)."""
    from studio.context import StudioContext, StudioOptions
    from studio.models import runs_dir

    ctx = StudioContext.create(StudioOptions(data_dir=tmp_path / "data", model="tiny"))
    shutil.copytree(final, runs_dir(ctx.store.data_dir) / "my-run" / "final")
    yield ctx
    ctx.store.close()


@pytest.mark.parametrize(
    "model, expected",
    [
        ("tiny", (8, "official", 64, 64)),
        ("humo-nano", (30, "official", 64, 64)),
        ("humo-nano-4step", (4, "single pass", 64, 64)),
        ("run:my-run", (8, "official", 64, 64)),  # a fine-tune of tiny: its base's
    ],
)
def test_picking_a_model_puts_its_own_defaults_in_the_controls(model, expected, studio):
    from studio.models import model_choices
    from studio.tab_generate import model_defaults

    if model.startswith("humo-nano") and not nano.is_student_present():
        pytest.skip("assets/humo-nano(-4step) missing")
    assert model in model_choices(studio)
    steps, preset, scale_t, scale_i, scale_a, resolution, height, width = model_defaults(studio, model, str(FACE),
                                                                                         None, str(SPEECH))  # fmt: skip
    assert (steps, preset, height, width) == expected
    assert resolution == "64×64 (HuMo-nano, tiny)"
    official = {"scale_t": 7.0, "scale_i": 4.0, "scale_a": 7.5}  # 1.7B's (tiny and HuMo-nano sample as 1.7B)
    assert (scale_t, scale_i, scale_a) == tuple(preset_scales_of(preset, official))


def preset_scales_of(preset: str, official: dict) -> list:
    from engine.guidance import DEFAULT_SCALES, preset_schedule

    scales = {**DEFAULT_SCALES["1.7b"], **preset_schedule(preset, "1.7b", "TIA").scales}
    assert preset != "official" or scales == official
    return [scales["scale_t"], scales["scale_i"], scales["scale_a"]]


@pytest.mark.parametrize("model", ["tiny", "humo-nano", "humo-nano-4step", "run:my-run"])
def test_studio_default_controls_render_what_the_python_api_renders(model, studio, voice, monkeypatch):
    """The Generate tab's make_request with the controls a picked model puts in (and the form's other defaults),
    run as a studio job, hands the mp4 writer the frames `pipe(prompt=, image=, audio=, seed=)` gives."""
    from studio.jobs import run_job
    from studio.models import model_choices
    from studio.tab_generate import make_request, model_defaults

    if model.startswith("humo-nano") and not nano.is_student_present():
        pytest.skip("assets/humo-nano(-4step) missing")
    model_choices(studio)  # the studio's start-up scan names the run
    steps, preset, scale_t, scale_i, scale_a, resolution, height, width = model_defaults(studio, model, str(FACE),
                                                                                         None, voice)  # fmt: skip
    request, names = make_request(studio, PROMPT, str(FACE), voice, "", model, resolution, height, width, 0, steps,
                                  11, preset, scale_t, scale_i, scale_a, 980)  # fmt: skip
    seen = {}
    real = generate.write_generated

    def capture(frames, *args, **kwargs):
        seen["frames"] = np.array(frames)
        return real(frames, *args, **kwargs)

    monkeypatch.setattr(generate, "write_generated", capture)
    assert run_job(studio, request, model, names=names).status == "done"
    api = studio.pipeline(model)(prompt=PROMPT, image=str(FACE), audio=voice, seed=11).frames[0]
    np.testing.assert_array_equal(seen["frames"], media.to_uint8(api))
    row = studio.store.list_generations(page=1, page_size=1)[0][0]
    assert row.model_id == model  # a named id: no server path in the gallery
