"""HuMoPipeline on tiny components (CPU): modes, conditioning per variant, guidance evaluation, I/O paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import InputError
from engine.guidance import Branch
from engine.pipeline import HuMoPipeline
from tests.media_files import write_image, write_wav  # noqa: F401 (other test modules import them from here)

H = W = 32  # latent 4x4 -> 2x2 tokens per frame
STEPS = 2


@pytest.fixture(scope="module")
def pipe_1_7b() -> HuMoPipeline:
    from engine.registry import load_pipeline

    return load_pipeline("tiny")


@pytest.fixture(scope="module")
def pipe_17b() -> HuMoPipeline:
    from engine.components import build_tiny_components

    return HuMoPipeline(**build_tiny_components(variant="17b"))


@pytest.fixture()
def inputs(tmp_path):
    return {
        "image": write_image(tmp_path / "ref.png"),
        "image2": write_image(tmp_path / "ref2.png", color=(30, 200, 60), size=(20, 50)),
        "audio": write_wav(tmp_path / "voice.wav", 0.7),  # 0.7 s -> 17 frames at 25 fps -> snapped to 17
    }


def run(pipe, **kwargs):
    kwargs.setdefault("prompt", "a person talking")
    kwargs.setdefault("height", H)
    kwargs.setdefault("width", W)
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("seed", 0)
    return pipe(**kwargs)


@pytest.mark.parametrize("variant", ["1.7b", "17b"])
@pytest.mark.parametrize("use_image,use_audio", [(True, True), (False, True), (True, False)])
def test_modes_produce_frames_from_audio_length(request, inputs, variant, use_image, use_audio):
    pipe = request.getfixturevalue("pipe_1_7b" if variant == "1.7b" else "pipe_17b")
    out = run(
        pipe,
        image=inputs["image"] if use_image else None,
        audio=inputs["audio"] if use_audio else None,
        num_frames=None if use_audio else 9,
    )
    frames = out.frames[0]
    expected = 17 if use_audio else 9  # floor(0.7 s * 25) = 17 = 4*4+1
    assert frames.shape == (expected, H, W, 3)
    assert (frames.shape[0] - 1) % 4 == 0
    assert out.mode == {(True, True): "TIA", (False, True): "TA", (True, False): "TI"}[(use_image, use_audio)]
    assert np.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1


def test_frames_snap_to_4n_plus_1(pipe_1_7b, tmp_path):
    audio = write_wav(tmp_path / "a.wav", 0.84)  # 21 frames -> 21 is already 4*5+1
    assert run(pipe_1_7b, audio=audio).num_frames == 21
    audio = write_wav(tmp_path / "b.wav", 0.96)  # 24 frames -> 21
    assert run(pipe_1_7b, audio=audio, output_type="latent").num_frames == 21
    assert run(pipe_1_7b, num_frames=12, output_type="latent").num_frames == 9


def test_several_reference_images_add_slots(pipe_1_7b, pipe_17b, inputs):
    for pipe in (pipe_1_7b, pipe_17b):
        refs = pipe.encode_image([inputs["image"], inputs["image2"]], H, W)
        assert refs.shape == (1, 16, 2, H // 8, W // 8)
        out = run(pipe, image=[inputs["image"], inputs["image2"]], audio=inputs["audio"], output_type="latent")
        assert out.frames[0].shape == (1, 16, 5, H // 8, W // 8)  # reference slots dropped
        out = run(pipe, image=[inputs["image"], inputs["image2"]], audio=inputs["audio"])
        assert out.frames[0].shape == (17, H, W, 3)


def _conditions(pipe, inputs, num_ref=1):
    torch.manual_seed(0)
    images = [inputs["image"], inputs["image2"]][:num_ref]
    ref = pipe.encode_image(images, H, W)
    f_vid = 3
    latents = torch.randn(1, 16, f_vid + num_ref, H // 8, W // 8)
    pos, neg = pipe.encode_prompt("a person", None)
    audio = torch.randn(f_vid, *pipe_audio_shape(pipe))
    audio = pipe._pad_audio(audio, f_vid, num_ref, "cpu")
    zero = pipe.zero_vae_latents(f_vid + num_ref, H, W) if pipe.variant == "17b" else None
    common = dict(prompt_embeds=pos, negative_prompt_embeds=neg, ref_latents=ref, zero_latents=zero)
    return latents, ref, zero, pos, neg, audio, common


def pipe_audio_shape(pipe):
    cfg = pipe.transformer.config
    return (cfg.audio_window, cfg.audio_bands, cfg.audio_dim)


@pytest.mark.parametrize("num_ref", [1, 2])
def test_17b_conditioning_per_branch(pipe_17b, inputs, num_ref):
    latents, ref, zero, pos, neg, audio, common = _conditions(pipe_17b, inputs, num_ref)
    f_total = latents.shape[2]
    f_vid = f_total - num_ref
    for text in ("pos", "neg"):
        for image in ("ref", "null"):
            for aud in ("on", "off"):
                c = pipe_17b.build_condition(
                    latents, Branch(text, image, aud), audio_embeds=audio, num_ref=num_ref, **common
                )
                hs = c["hidden_states"]
                assert hs.shape == (1, 36, f_total, H // 8, W // 8)
                torch.testing.assert_close(hs[:, :16], latents)  # x slots keep the free-running noise
                mask = hs[:, 16:20]
                assert (mask[:, :, :f_vid] == 0).all() and (mask[:, :, f_vid:] == 1).all()
                cond = hs[:, 20:]
                torch.testing.assert_close(cond[:, :, :f_vid], zero[:, :, :f_vid])
                expected_slot = ref if image == "ref" else zero[:, :, f_vid:f_total]
                torch.testing.assert_close(cond[:, :, f_vid:], expected_slot)
                torch.testing.assert_close(c["encoder_hidden_states"], pos if text == "pos" else neg)
                if aud == "on":
                    torch.testing.assert_close(c["audio_embeds"], audio)
                else:
                    assert (c["audio_embeds"] == 0).all() and c["audio_embeds"].shape == audio.shape
    # the reference slots always carry zero audio windows
    assert (audio[:, f_vid:] == 0).all()


def test_zero_vae_latents_are_grey_video_encodings(pipe_17b):
    z = pipe_17b.zero_vae_latents(4, H, W)
    grey = torch.zeros(1, 3, 13, H, W)
    torch.testing.assert_close(z, pipe_17b._vae_encode(grey))
    # a shorter request is served from the cached longer one (the causal VAE makes prefixes identical)
    torch.testing.assert_close(
        pipe_17b.zero_vae_latents(2, H, W), pipe_17b._vae_encode(grey[:, :, :5]), atol=1e-5, rtol=1e-5
    )


def test_1_7b_conditioning_overwrites_reference_slot(pipe_1_7b, inputs):
    latents, ref, _, pos, neg, audio, common = _conditions(pipe_1_7b, inputs)
    f_vid = latents.shape[2] - 1
    for image in ("ref", "null"):
        c = pipe_1_7b.build_condition(latents, Branch("pos", image, "on"), audio_embeds=audio, num_ref=1, **common)
        hs = c["hidden_states"]
        assert hs.shape == latents.shape
        torch.testing.assert_close(hs[:, :, :f_vid], latents[:, :, :f_vid])
        torch.testing.assert_close(hs[:, :, f_vid:], ref if image == "ref" else torch.zeros_like(ref))


def test_guidance_combination_matches_hand_computation(pipe_1_7b, inputs, monkeypatch):
    """Record every branch output of one step and recombine them with the official 1.7B TIA formula."""
    recorded = {}
    real_forward = pipe_1_7b.transformer.forward

    def spy(hidden_states, timestep, encoder_hidden_states, audio_embeds, **kw):
        out = real_forward(hidden_states, timestep, encoder_hidden_states, audio_embeds, **kw)
        recorded.setdefault("calls", []).append(
            (hidden_states.clone(), encoder_hidden_states.clone(), audio_embeds.clone(), out[0].clone())
        )
        return out

    monkeypatch.setattr(pipe_1_7b.transformer, "forward", spy)
    captured = {}

    def grab(pipe, i, t, kw):
        captured["noise"] = kw["noise_pred"].clone()
        return {}

    schedule = pipe_1_7b.default_guidance("TIA")
    run(
        pipe_1_7b,
        image=inputs["image"],
        audio=inputs["audio"],
        num_inference_steps=1,
        batch_branches=False,
        guidance=schedule,
        callback_on_step_end=grab,
        callback_on_step_end_tensor_inputs=["latents", "noise_pred"],
    )
    calls = recorded["calls"]
    assert len(calls) == 4  # 1.7B TIA: 4 passes per step
    t = int(pipe_1_7b.scheduler.timesteps[0])
    outputs = {}
    for hs, text, aud, out in calls:
        ref_slot = hs[:, :, -1]
        branch = Branch(
            "neg" if torch.equal(text, _neg(pipe_1_7b)) else "pos",
            "null" if (ref_slot == 0).all() else "ref",
            "off" if (aud == 0).all() else "on",
        )
        outputs[branch] = out
    v = {
        k: outputs[Branch(*k)]
        for k in [("pos", "ref", "on"), ("pos", "null", "on"), ("pos", "null", "off"), ("neg", "null", "off")]
    }
    s_i, s_a, s_t = 4.0, 7.5, 7.0
    hand = (
        s_i * (v[("pos", "ref", "on")] - v[("pos", "null", "on")])
        + s_a * (v[("pos", "null", "on")] - v[("pos", "null", "off")])
        + s_t * (v[("pos", "null", "off")] - v[("neg", "null", "off")])
        + v[("neg", "null", "off")]
    )
    torch.testing.assert_close(captured["noise"], hand, atol=1e-5, rtol=1e-5)  # what the pipeline stepped with
    torch.testing.assert_close(schedule.combine(t, outputs), hand, atol=1e-5, rtol=1e-5)


def _neg(pipe):
    return pipe.encode_prompt("a person talking", None)[1].to(pipe.transformer.dtype)


@pytest.mark.parametrize("variant", ["1.7b", "17b"])
def test_batched_and_sequential_branches_agree(request, inputs, variant):
    pipe = request.getfixturevalue("pipe_1_7b" if variant == "1.7b" else "pipe_17b")
    a = run(pipe, image=inputs["image"], audio=inputs["audio"], batch_branches=True, output_type="latent").frames[0]
    b = run(pipe, image=inputs["image"], audio=inputs["audio"], batch_branches=False, output_type="latent").frames[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_precomputed_embeds_latents_and_audio_give_same_result(pipe_1_7b, inputs):
    base = run(pipe_1_7b, image=inputs["image"], audio=inputs["audio"], output_type="latent", seed=3)
    pos, neg = pipe_1_7b.encode_prompt("a person talking", None)
    windows, frames = pipe_1_7b.encode_audio(inputs["audio"], None)
    latents = torch.randn(1, 16, (frames - 1) // 4 + 2, H // 8, W // 8, generator=torch.Generator().manual_seed(3))
    again = pipe_1_7b(
        prompt=None,
        prompt_embeds=pos,
        negative_prompt_embeds=neg,
        image=inputs["image"],
        audio_embeds=windows,
        latents=latents,
        height=H,
        width=W,
        num_inference_steps=STEPS,
        output_type="latent",
    )
    torch.testing.assert_close(again.frames[0], base.frames[0])
    assert again.num_frames == base.num_frames


def _real_tokens(pipe, prompt: str) -> int:
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    return len(pipe.tokenizer(prompt_clean(prompt), truncation=True, max_length=512).input_ids)  # with EOS


def _trimmed_embeds(pipe, prompt="a person talking", negative_prompt=None):
    """The pipeline's own embeddings [1, 512, D] and the same trimmed to their real tokens (§4.3)."""
    from engine.pipeline import WAN_NEGATIVE_PROMPT

    pos, neg = pipe.encode_prompt(prompt, negative_prompt)
    n_pos, n_neg = _real_tokens(pipe, prompt), _real_tokens(pipe, negative_prompt or WAN_NEGATIVE_PROMPT)
    assert n_pos != n_neg and (pos[:, n_pos:] == 0).all() and (neg[:, n_neg:] == 0).all()
    return pos, neg, pos[:, :n_pos], neg[:, :n_neg]


def _run_with_embeds(pipe, inputs, pos, neg, **kwargs):
    steps = []
    out = run(pipe, prompt=None, prompt_embeds=pos, negative_prompt_embeds=neg, image=inputs["image"],
              audio=inputs["audio"], output_type="latent", callback_on_step_end_tensor_inputs=["noise_pred"],
              callback_on_step_end=lambda p, i, t, kw: steps.append(kw["noise_pred"].clone()) or {}, **kwargs)  # fmt: skip
    return out.frames[0], torch.stack(steps)


@pytest.mark.parametrize("batch_branches", [False, True])
def test_trimmed_prompt_embeds_are_padded_to_512(pipe_1_7b, inputs, batch_branches):
    """Embeddings of the real tokens only (different lengths for prompt and negative prompt) give exactly the result
    of the pipeline's own 512-token encoding, sequential or batched."""
    pos, neg, pos_short, neg_short = _trimmed_embeds(pipe_1_7b)
    full = _run_with_embeds(pipe_1_7b, inputs, pos, neg, batch_branches=batch_branches)
    short = _run_with_embeds(pipe_1_7b, inputs, pos_short, neg_short, batch_branches=batch_branches)
    assert torch.equal(full[0], short[0]) and torch.equal(full[1], short[1])


def test_trimmed_prompt_embeds_batched_and_sequential_agree(pipe_17b, inputs):
    _, _, pos_short, neg_short = _trimmed_embeds(pipe_17b)
    a = _run_with_embeds(pipe_17b, inputs, pos_short, neg_short, batch_branches=True)
    b = _run_with_embeds(pipe_17b, inputs, pos_short, neg_short, batch_branches=False)
    torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-4)


def test_prompt_embeds_longer_than_512_are_refused(pipe_1_7b):
    pos, neg = pipe_1_7b.encode_prompt("a person talking", None)
    too_long = torch.cat([pos, pos[:, :1]], dim=1)
    for kwargs, name in (({"prompt_embeds": too_long}, "prompt_embeds"),
                         ({"prompt_embeds": pos, "negative_prompt_embeds": too_long}, "negative_prompt_embeds")):  # fmt: skip
        with pytest.raises(InputError) as err:
            run(pipe_1_7b, prompt=None, num_frames=5, **kwargs)
        assert err.value.field == name and "512" in str(err.value)


def test_same_seed_same_video_and_seed_reported(pipe_1_7b, inputs):
    a = run(pipe_1_7b, audio=inputs["audio"], seed=11, output_type="latent")
    b = run(pipe_1_7b, audio=inputs["audio"], seed=11, output_type="latent")
    c = run(pipe_1_7b, audio=inputs["audio"], seed=12, output_type="latent")
    assert a.seed == 11
    torch.testing.assert_close(a.frames[0], b.frames[0])
    assert not torch.allclose(a.frames[0], c.frames[0])
    assert isinstance(run(pipe_1_7b, seed=None, num_frames=5, output_type="latent").seed, int)


def test_pil_output(pipe_1_7b):
    out = run(pipe_1_7b, num_frames=5, output_type="pil")
    assert len(out.frames[0]) == 5 and out.frames[0][0].size == (W, H)


def test_stop_from_callback_raises(pipe_1_7b):
    from engine.pipeline import GenerationInterrupted

    def stop(pipe, i, t, kw):
        pipe._interrupt = True
        return {}

    with pytest.raises(GenerationInterrupted):
        run(pipe_1_7b, num_frames=5, num_inference_steps=3, callback_on_step_end=stop)


def test_latent_preview_is_an_image(pipe_1_7b, tmp_path, monkeypatch):
    monkeypatch.setenv("HUMO_CACHE_DIR", str(tmp_path))
    latents = torch.randn(1, 16, 3, H // 8, W // 8)
    preview = pipe_1_7b.latent_preview(latents)
    assert isinstance(preview, Image.Image) and preview.size[0] >= W // 8


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"height": 30}, "height"),
        ({"width": 0}, "width"),
        ({"num_frames": 0}, "num_frames"),
        ({"num_inference_steps": 0}, "steps"),
        ({"prompt": None}, "prompt"),
    ],
)
def test_bad_numbers_give_clear_errors(pipe_1_7b, kwargs, field):
    with pytest.raises(InputError) as err:
        run(pipe_1_7b, **kwargs)
    assert err.value.field == field
    assert len(str(err.value)) > 15


@pytest.mark.parametrize("scale", [math.nan, -1.0, math.inf])
def test_bad_guidance_scales(pipe_1_7b, scale):
    from engine import guidance

    with pytest.raises(InputError) as err:
        schedule = guidance.default_schedule("1.7b", "TA", scale_a=scale)
        run(pipe_1_7b, audio=None, guidance=schedule, num_frames=5)
    assert err.value.field == "guidance"


def test_bad_files_give_clear_errors(pipe_1_7b, tmp_path):
    text_wav = tmp_path / "notes.wav"
    text_wav.write_text("this is not audio at all")
    with pytest.raises(InputError) as err:
        run(pipe_1_7b, audio=str(text_wav))
    assert err.value.field == "audio"

    corrupt = tmp_path / "broken.wav"
    good = write_wav(tmp_path / "good.wav", 0.5)
    corrupt.write_bytes(open(good, "rb").read()[:60] + b"\x00garbage" * 10)
    with pytest.raises(InputError) as err:
        run(pipe_1_7b, audio=str(corrupt))
    assert err.value.field == "audio"

    not_image = tmp_path / "face.png"
    not_image.write_text("hello")
    with pytest.raises(InputError) as err:
        run(pipe_1_7b, image=str(not_image), num_frames=5)
    assert err.value.field == "image"


def test_euler_scheduler_runs_and_differs_from_unipc():
    from engine.registry import load_pipeline

    unipc = load_pipeline("tiny")(
        prompt="x", num_frames=5, height=H, width=W, num_inference_steps=3, seed=1, output_type="latent"
    )
    euler_pipe = load_pipeline("tiny", scheduler="euler")
    assert type(euler_pipe.scheduler).__name__ == "HuMoFlowMatchEulerScheduler"
    euler = euler_pipe(prompt="x", num_frames=5, height=H, width=W, num_inference_steps=3, seed=1, output_type="latent")
    assert torch.isfinite(euler.frames[0]).all()
    assert not torch.allclose(unipc.frames[0], euler.frames[0])
